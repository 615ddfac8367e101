#!/usr/bin/env python
"""Random-weight stand-ins of the field metrics' published models, laid out as --metrics_dir expects.

For tests and benches only: the numbers they give mean nothing clinically, but every file has the
published format and (for CheXbert) the published shape, so the loaders, the strict checkpoint
load and the cross-checks against the reference packages run for real without the weights
(docs/metrics.md)::

    python scripts/build_metric_weights.py --output_dir /tmp/metrics [--only chexbert,bertscore] [--seed 0]

* ``chexbert.pth`` + ``bert-base-uncased/``: bert-base-uncased's exact configuration (12 layers,
  hidden 768, vocabulary 30,522), random-initialised, with CheXbert's 13 four-way heads and one
  two-way head, saved as CheXbert is (``{"model_state_dict": {"module.<name>": tensor}}``). The
  vocabulary is a WordPiece vocabulary trained with the ``tokenizers`` library on the bundled
  OpenI reports, placed among bert-base-uncased's special tokens at their real ids ([PAD] 0,
  [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, [unused*] fillers) and padded with [unused*] to 30,522.

Research only, not diagnosis: these weights label nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REPORTS = REPO_ROOT / "data" / "openi" / "openi-en.json"
BERT_VOCAB_SIZE = 30522
BERT_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
FIRST_WORD_ID = 999  # bert-base-uncased's first ordinary token ("!") sits at 999


def reports() -> list[str]:
    return [a["caption"] for a in json.loads(REPORTS.read_text(encoding="utf-8"))["annotations"]]


def bert_vocab(texts: list[str], learned: int = 6000) -> list[str]:
    """30,522 entries: bert-base-uncased's special ids, then WordPiece pieces learned from ``texts``."""
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(texts, vocab_size=learned, special_tokens=list(BERT_SPECIAL.values()),
                                show_progress=False)
    pieces = [tok for tok, _ in sorted(trainer.get_vocab().items(), key=lambda kv: kv[1])
              if tok not in BERT_SPECIAL.values()]
    vocab, unused = [], 0
    for i in range(BERT_VOCAB_SIZE):
        if i in BERT_SPECIAL:
            vocab.append(BERT_SPECIAL[i])
        elif FIRST_WORD_ID <= i < FIRST_WORD_ID + len(pieces):
            vocab.append(pieces[i - FIRST_WORD_ID])
        else:
            vocab.append(f"[unused{unused}]")
            unused += 1
    return vocab


def write_bert_base(folder: Path) -> None:
    """bert-base-uncased's configuration and a tokenizer over the reports' vocabulary (no weights:
    CheXbert's checkpoint carries BERT's)."""
    from transformers import BertConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig()  # bert-base-uncased: 30522 x 768, 12 layers, 12 heads, 3072, 512 positions
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(bert_vocab(reports())) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")


def write_chexbert(root: Path, seed: int, head_scale: float = 40.0) -> None:
    """``chexbert.pth`` of CheXbert's real shape, random. The heads are scaled up so that the random
    labeller's classes vary between reports (with BERT's 0.02 init they would barely move)."""
    import torch
    from transformers import BertConfig

    from medswift.eval.field.chexbert import build_labeller

    write_bert_base(root / "bert-base-uncased")
    torch.manual_seed(seed)
    model = build_labeller(BertConfig.from_pretrained(root / "bert-base-uncased"))
    with torch.no_grad():
        for head in model.linear_heads:
            head.weight.mul_(head_scale)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 0, "model_state_dict": state}, root / "chexbert.pth")


def write_distilroberta(root: Path, seed: int) -> None:
    """``distilroberta-base/``: RoBERTa's format (byte-level BPE vocab.json + merges.txt, trained on the
    reports) with distilroberta-base's 6 layers but a small width; random weights."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = root / "distilroberta-base"
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(reports(), vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    bpe.save_model(str(folder))
    RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=bpe.get_vocab_size(), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    RobertaModel(config).save_pretrained(folder)


BUILDERS = {"chexbert": write_chexbert, "bertscore": write_distilroberta}


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--only", default=",".join(BUILDERS), help=f"comma-separated, of {', '.join(BUILDERS)}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        print(f"error: --only {','.join(unknown)}: not one of {', '.join(BUILDERS)}", file=sys.stderr)
        return 2
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        BUILDERS[name](root, args.seed)
    print(f"random-weight metric models ({', '.join(names)}) in {root}; they label nothing (tests only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
