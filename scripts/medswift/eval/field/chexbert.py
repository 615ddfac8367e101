"""CheXbert labels, CheXbert F1 (14 and 5 observations, micro and macro) and SembScore, batched.

The numbers are f1chexbert 0.0.2's (``F1CheXbert.forward``: its "rrg" label mapping, where
present (1) and uncertain (3) count positive, blank (0) and absent (2) negative, and scikit-learn's
``classification_report``). f1chexbert itself cannot run on this stack, so this module re-writes
only its broken calls (docs/metrics.md):

* ``tokenize`` calls ``BertTokenizer.encode_plus`` on word pieces, which transformers 5 removed;
  here the same ids, ``[CLS] + convert_tokens_to_ids(pieces) + [SEP]``, cut at 512 the same way;
* ``forward`` unpacks three values from scikit-learn's private ``_check_targets``, which returns
  four in scikit-learn 1.9; the F1 figures never used it, so it is not called;
* it loads ``chexbert.pth`` with ``strict=False``, which hides a wrong file; here every key must
  match (``load_state_dict(strict=True)``);
* it labels one report at a time; here length-sorted batches, each text once.

SembScore (CXR-Report-Metric's ``semb_score``) is the cosine of the two reports' CheXbert
embeddings: the last layer's [CLS] state of the same BERT, as CheXbert's ``encode.py`` returns it.
Research only, not diagnosis.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medswift.core.errors import UsageError
from medswift.eval.field import weights

# f1chexbert's target_names and target_names_5, in its order (the order of CheXbert's heads).
OBSERVATIONS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices", "No Finding")
FIVE = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
FIVE_INDEX = np.array([OBSERVATIONS.index(name) for name in FIVE])
POSITIVE_CLASSES = (1, 3)  # "rrg" mode: present and uncertain count positive
MAX_TOKENS = 512
# A checkpoint saved by an older transformers may carry this buffer; it is not a weight.
NOT_WEIGHTS = ("bert.embeddings.position_ids",)


def build_labeller(config):
    """CheXbert's ``bert_labeler`` at inference: BERT, then 13 four-way heads (blank, present,
    absent, uncertain) and one two-way head (No Finding) on the [CLS] state. The parameter names
    are CheXbert's, so its checkpoint loads strictly."""
    import torch
    from transformers import BertModel

    class Labeller(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config)
            hidden = config.hidden_size
            self.linear_heads = torch.nn.ModuleList([torch.nn.Linear(hidden, 4) for _ in range(13)]
                                                    + [torch.nn.Linear(hidden, 2)])

        def forward(self, ids, mask):
            cls = self.bert(ids, attention_mask=mask)[0][:, 0, :]
            return cls, torch.stack([head(cls).argmax(dim=1) for head in self.linear_heads], dim=1)

    return Labeller()


def clean(text: str) -> str:
    """f1chexbert's tokenize(): strip, line breaks to spaces, runs of whitespace to one."""
    return re.sub(r"\s+", " ", text.strip().replace("\n", " ")).strip()


class CheXbert:
    """Load once, label many: ``labels(texts)`` -> (n, 14) 0/1, ``embeddings(texts)`` -> (n, 768)."""

    def __init__(self, root: Path | None, device: str | None = None, batch_size: int = 32):
        weights.go_offline()
        import torch
        from transformers import BertConfig, BertTokenizer

        checkpoint = weights.model_file(root, "chexbert.pth")
        bert = weights.model_folder(root, "bert-base-uncased", ("config.json", "vocab.txt"))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        self.tokenizer = BertTokenizer.from_pretrained(str(bert), local_files_only=True)
        self.model = build_labeller(BertConfig.from_pretrained(str(bert), local_files_only=True))
        load_strictly(self.model, read_state(checkpoint), checkpoint)
        self.model.to(self.device).eval()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def token_ids(self, text: str) -> list[int]:
        tok = self.tokenizer
        pieces = tok.tokenize(clean(text))
        if not pieces:  # an empty report
            return [tok.cls_token_id, tok.sep_token_id]
        ids = [tok.cls_token_id] + tok.convert_tokens_to_ids(pieces) + [tok.sep_token_id]
        return ids if len(ids) <= MAX_TOKENS else ids[:MAX_TOKENS - 1] + [tok.sep_token_id]

    def _run(self, texts: list[str]) -> None:
        """Label and embed the texts not seen yet, longest first, in padded batches."""
        import torch

        todo = [t for t in dict.fromkeys(map(clean, texts)) if t not in self._cache]
        encoded = sorted(((self.token_ids(t), t) for t in todo), key=lambda p: -len(p[0]))
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for start in range(0, len(encoded), self.batch_size):
                chunk = encoded[start:start + self.batch_size]
                width = len(chunk[0][0])
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, (seq, _) in enumerate(chunk):
                    ids[row, :len(seq)] = torch.tensor(seq)
                    mask[row, :len(seq)] = 1
                cls, classes = self.model(ids.to(self.device), mask.to(self.device))
                for (_, text), emb, cls_row in zip(chunk, cls.float().cpu().numpy(), classes.cpu().numpy()):
                    self._cache[text] = (cls_row, emb)

    def classes(self, texts: list[str]) -> np.ndarray:
        """(n, 14) CheXbert classes: 0 blank, 1 present, 2 absent, 3 uncertain (No Finding: 0/1)."""
        self._run(texts)
        return np.array([self._cache[clean(t)][0] for t in texts], dtype=np.int64).reshape(len(texts), len(OBSERVATIONS))

    def labels(self, texts: list[str]) -> np.ndarray:
        """(n, 14) 0/1 in f1chexbert's "rrg" mode."""
        return np.isin(self.classes(texts), POSITIVE_CLASSES).astype(np.int64)

    def embeddings(self, texts: list[str]) -> np.ndarray:
        self._run(texts)
        return np.stack([self._cache[clean(t)][1] for t in texts]) if texts else np.zeros((0, 768), np.float32)


def read_state(path: Path) -> dict:
    """``model_state_dict`` of a CheXbert checkpoint without its ``module.`` (DataParallel) prefix."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises several kinds
        raise UsageError(f"{path} is not a readable CheXbert checkpoint ({type(exc).__name__})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("model_state_dict"), dict):
        raise UsageError(f"{path} has no model_state_dict: not a CheXbert checkpoint")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in saved["model_state_dict"].items()}
    return {k: v for k, v in state.items() if k not in NOT_WEIGHTS}


def load_strictly(model, state: dict, path: Path) -> None:
    """Every parameter from the file, nothing left over, every shape right; else one line."""
    expected = model.state_dict()
    lacking = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    for problem, keys in (("lacks", lacking), ("has unexpected", extra), ("has wrongly shaped", wrong)):
        if keys:
            raise UsageError(f"{path} {problem} weights ({len(keys)}: {', '.join(keys[:3])}"
                             f"{', ...' if len(keys) > 3 else ''}): not CheXbert's checkpoint over bert-base-uncased")
    model.load_state_dict(state, strict=True)


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """micro/macro F1 over 14 and over 5 observations, as f1chexbert's forward() reports them
    (``classification_report(...)["micro avg"|"macro avg"]["f1-score"]``)."""
    from sklearn.metrics import classification_report

    out = {}
    for suffix, cols, names in (("14", slice(None), OBSERVATIONS), ("5", FIVE_INDEX, FIVE)):
        report = classification_report(y_true[:, cols], y_pred[:, cols], target_names=list(names),
                                       output_dict=True, zero_division=0)
        out[f"micro_f1_{suffix}"] = float(report["micro avg"]["f1-score"])
        out[f"macro_f1_{suffix}"] = float(report["macro avg"]["f1-score"])
    return out


def counts(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per record, per observation: true positives, false positives, false negatives side by side
    (the bootstrap's per-record block)."""
    t, p = y_true.astype(bool), y_pred.astype(bool)
    return np.hstack([t & p, ~t & p, t & ~p]).astype(np.float64)


def f1_from_sums(sums: np.ndarray, n=None) -> np.ndarray:
    """(B, 4) micro/macro F1 over 14 and 5 from (B, 3 x 14) summed counts. Unlike the rule-based
    card's F1, scikit-learn's macro average counts an observation absent from both sides as 0."""
    k = len(OBSERVATIONS)
    tp, fp, fn = sums[:, :k], sums[:, k:2 * k], sums[:, 2 * k:]
    columns = []
    for cols in (slice(None), FIVE_INDEX):
        a, b, c = tp[:, cols], fp[:, cols], fn[:, cols]
        den = 2 * a.sum(1) + b.sum(1) + c.sum(1)
        columns.append(np.divide(2 * a.sum(1), den, out=np.zeros(len(a)), where=den > 0))
        per = np.divide(2 * a, 2 * a + b + c, out=np.zeros(a.shape), where=(2 * a + b + c) > 0)
        columns.append(per.mean(1))
    return np.stack(columns, axis=1)  # micro_14, macro_14, micro_5, macro_5


F1_NAMES = ["micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; 0 where an embedding is all zeros."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide((a * b).sum(1), norms, out=np.zeros(len(a)), where=norms > 0)
