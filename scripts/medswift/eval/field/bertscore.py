"""BERTScore as ReXrank (CXR-Report-Metric's ``add_bertscore_col``) configures it, through the
``bert-score`` package: distilroberta-base, layer 5 (bert-score's default for that model), F1,
rescaled with bert-score's own English baseline for distilroberta-base (shipped inside the
package, ``bert_score/rescale_baseline/en/distilroberta-base.tsv``), IDF off, runs of spaces
collapsed first. The model comes from a local folder; the package never downloads anything here.
Research only, not diagnosis.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medswift.eval.field import weights

LAYER = 5  # bert_score.utils.model2layers["distilroberta-base"]
MAX_TOKENS = 512


def baseline_file() -> Path:
    import bert_score

    return Path(bert_score.__file__).parent / "rescale_baseline" / "en" / "distilroberta-base.tsv"


class BertScore:
    def __init__(self, folder: Path, device: str | None = None, batch_size: int = 64):
        weights.go_offline()
        import torch
        from bert_score import BERTScorer

        self.scorer = BERTScorer(model_type=str(folder), num_layers=LAYER, batch_size=batch_size, lang="en",
                                 rescale_with_baseline=True, baseline_path=str(baseline_file()), idf=False,
                                 device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # transformers 5 dropped the built-in table that gave distilroberta-base's tokenizer its
        # 512-token limit; unset, bert-score's encode(max_length=model_max_length, truncation=True)
        # overflows. 512 is what the table said (and the model's 514 positions less two).
        tokenizer = self.scorer._tokenizer  # bert-score exposes no public handle
        if tokenizer.model_max_length > MAX_TOKENS:
            tokenizer.model_max_length = MAX_TOKENS
        # bert-score encodes an empty sentence with build_inputs_with_special_tokens([]), gone from
        # transformers 5's tokenizers; RoBERTa's did [CLS] ids [SEP], so an empty report is
        # "<s></s>" and scores as bert-score has always scored it (raw 0, then rescaled).
        if not hasattr(tokenizer, "build_inputs_with_special_tokens"):
            tokenizer.build_inputs_with_special_tokens = lambda ids: [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]

    def f1(self, refs: list[str], preds: list[str]) -> np.ndarray:
        if not refs:
            return np.zeros(0)
        squeeze = lambda texts: [re.sub(r" +", " ", t) for t in texts]  # noqa: E731  (as ReXrank does)
        _, _, f1 = self.scorer.score(squeeze(preds), squeeze(refs), verbose=False)
        return f1.numpy().astype(np.float64)
