#!/usr/bin/env python
"""Random-weight stand-ins of the field metrics' published models, laid out as --metrics_dir expects.

For tests and benches only: the numbers they give mean nothing clinically, but every file has the
published format and (for CheXbert) the published shape, so the loaders, the strict checkpoint
load and the cross-checks against the reference packages run for real without the weights
(docs/metrics.md)::

    python scripts/build_metric_weights.py --output_dir /tmp/metrics [--only chexbert,bertscore,radgraph,ratescore,green] [--seed 0]

* ``chexbert.pth`` + ``bert-base-uncased/``: bert-base-uncased's exact configuration (12 layers,
  hidden 768, vocabulary 30,522), random-initialised, with CheXbert's 13 four-way heads and one
  two-way head, saved as CheXbert is (``{"model_state_dict": {"module.<name>": tensor}}``). The
  vocabulary is a WordPiece vocabulary trained with the ``tokenizers`` library on the bundled
  OpenI reports, placed among bert-base-uncased's special tokens at their real ids ([PAD] 0,
  [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, [unused*] fillers) and padded with [unused*] to 30,522.
* ``distilroberta-base/``: RoBERTa's format, 6 layers, small width.
* ``radgraph-xl/`` + ``BiomedVLP-CXR-BERT-general/``: radgraph-xl.tar.gz's layout (config.json, vocabulary/,
  weights.th of the radgraph package's own DyGIE model) over a 2-layer BERT of width 32, and that
  encoder's configuration and tokenizer under the name RadGraph-XL's config.json gives it.
* ``RaTE-NER-Deberta/`` + ``BioLORD-2023-C/``: a DeBERTa-v2 token classifier with RaTE-NER's eleven
  labels (SentencePiece tokenizer) and an MPNet encoder (WordPiece tokenizer), 2 layers of width 32.
* ``GREEN-RadLlama2-7b/``: a ``LlamaForCausalLM`` (2 layers, width 64) and a Llama 2-kind tokenizer
  (byte-fallback BPE with Llama 2's special and byte ids) learned from the reports and GREEN's prompt.

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


RADGRAPH_ENCODER = "microsoft/BiomedVLP-CXR-BERT-general"  # what RadGraph-XL's config.json names
RADGRAPH_ENTITIES = ("Anatomy::definitely present", "Anatomy::definitely absent", "Observation::definitely present",
                     "Observation::definitely absent", "Observation::uncertain")
RADGRAPH_RELATIONS = ("modify", "located_at", "suggestive_of")


def radgraph_config(encoder: str) -> dict:
    """DyGIE++'s configuration as radgraph 0.1.18 reads it (config.json of radgraph-xl.tar.gz), small."""
    bert = {"type": "pretrained_transformer_mismatched", "model_name": encoder, "max_length": 512}
    return {"dataset_reader": {"type": "dygie", "max_span_width": 6, "token_indexers": {"bert": bert}},
            "model": {"type": "dygie", "embedder": {"token_embedders": {"bert": dict(bert)}},
                      "feature_size": 8, "max_span_width": 6, "target_task": "relation",
                      "feedforward_params": {"num_layers": 1, "hidden_dims": 16, "dropout": 0.4},
                      "loss_weights": {"ner": 1.0, "relation": 1.0, "coref": 0.0, "events": 0.0},
                      "initializer": {}, "module_initializer": {},
                      "modules": {"ner": {}, "relation": {"spans_per_word": 0.5},
                                  "coref": {"spans_per_word": 0.3, "max_antecedents": 10, "coref_prop": 0},
                                  "events": {"trigger_spans_per_word": 0.3, "argument_spans_per_word": 0.8,
                                             "loss_weights": {"trigger": 1.0, "arguments": 1.0}}}}}


def write_radgraph(root: Path, seed: int, scale: float = 8.0, shift: float = 0.5) -> None:
    """``radgraph-xl/`` as radgraph-xl.tar.gz unpacks (config.json, vocabulary/, weights.th), built with
    the package's own DyGIE model over a 2-layer BERT of width 32, random; and the encoder's
    configuration and tokenizer as ``BiomedVLP-CXR-BERT-general/`` (the name config.json gives).
    The scorers are scaled up and their last biases shifted down so that the random model finds some
    spans, not all, as entities and relations, differently in each report."""
    import torch
    from transformers import BertConfig

    encoder = root / RADGRAPH_ENCODER.split("/")[-1]
    encoder.mkdir(parents=True, exist_ok=True)
    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(encoder)
    (encoder / "vocab.txt").write_text("\n".join(bert_vocab(reports())) + "\n", encoding="utf-8")
    (encoder / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    folder = root / "radgraph-xl"
    folder.mkdir(parents=True, exist_ok=True)
    config = radgraph_config(RADGRAPH_ENCODER)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(seed)
    model = dygie_model(config, encoder, folder / "vocabulary")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "_relation_scorers" in name or "_mention_pruners" in name:
                param.mul_(scale)
            if name.endswith(("_ner_scorers.radgraph-xl__ner_labels.1._module.bias",
                              "_relation_scorers.radgraph-xl__relation_labels.bias")):
                param.sub_(shift)
    torch.save(model.state_dict(), folder / "weights.th")


def dygie_model(config: dict, encoder: Path, vocabulary: Path):
    """radgraph 0.1.18's model exactly as ``RadGraph.__init__`` builds it, over the local encoder."""
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    from medswift.eval.field.radgraph import compatible

    compatible()  # radgraph 0.1.18 on transformers 5 (medswift/eval/field/radgraph.py)
    vocab = Vocabulary(non_padded_namespaces=["*labels", "*tags"])
    for kind, labels in (("ner_labels", RADGRAPH_ENTITIES), ("relation_labels", RADGRAPH_RELATIONS)):
        vocab.add_token_to_namespace("", f"radgraph-xl__{kind}")  # the null label is index 0
        for label in labels:
            vocab.add_token_to_namespace(label, f"radgraph-xl__{kind}")
    vocab.save_to_files(str(vocabulary))
    (vocabulary / ".lock").unlink(missing_ok=True)  # the writer's lock file, not part of the archive
    vocab = Vocabulary.from_files(str(vocabulary))
    embedder = text_field_embedders.BasicTextFieldEmbedder(
        {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(encoder), max_length=512)})
    params = {k: v for k, v in config["model"].items() if k not in ("type", "embedder", "initializer",
                                                                        "module_initializer")}
    return dygie.DyGIE(vocab=vocab, embedder=embedder, **json.loads(json.dumps(params))).eval()


def llama_tokenizer(texts: list[str], learned: int = 1200):
    """A tokenizer of Llama 2's kind (transformers' LlamaTokenizer: SentencePiece-style BPE with "▁" for
    spaces and byte fallback, so any text round-trips), with Llama 2's ids (<unk> 0, <s> 1, </s> 2, the
    256 byte tokens <0x00>..<0xFF> at 3..258), its pieces and merges learned from ``texts``."""
    from tokenizers import SentencePieceBPETokenizer
    from transformers import LlamaTokenizer

    bpe = SentencePieceBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=learned, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    model = json.loads(bpe._tokenizer.to_str())["model"]  # the trained vocabulary and merges (no public getter)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False)


def write_green(root: Path, seed: int) -> None:
    """``GREEN-RadLlama2-7b/``: a ``LlamaForCausalLM`` as GREEN-RadLlama2-7b is, but 2 layers of width 64,
    random; and a Llama 2-kind tokenizer learned from the reports and GREEN's prompt (llama_tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medswift.eval.field.green import make_prompt

    folder = root / "GREEN-RadLlama2-7b"
    folder.mkdir(parents=True, exist_ok=True)
    texts = reports()
    tokenizer = llama_tokenizer(texts + [make_prompt(texts[0], texts[1]), "<|user|>\n<|assistant|>\n"])
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)


RATE_LABELS = ("B-ABNORMALITY", "I-ABNORMALITY", "B-NON-ABNORMALITY", "I-NON-ABNORMALITY", "B-DISEASE", "I-DISEASE",
               "B-NON-DISEASE", "I-NON-DISEASE", "B-ANATOMY", "I-ANATOMY", "O")  # RaTE-NER's label set


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}


def write_rate_ner(root: Path, seed: int, head_scale: float = 30.0, shape: dict = TINY) -> None:
    """``RaTE-NER-Deberta/``: a DeBERTa-v2 token classifier with RaTE-NER's labels in its config, over a
    SentencePiece vocabulary (DeBERTa-v3's tokenizer format) trained on the reports; 2 layers of width 32
    (``shape=BASE``: deberta-v3-base's shape and 128,100-entry embedding table, for the bench), random,
    the head scaled up so that the random tagger's labels vary within a sentence."""
    import io

    import sentencepiece as spm
    import torch
    from transformers import DebertaV2Config, DebertaV2ForTokenClassification, DebertaV2Tokenizer

    folder = root / "RaTE-NER-Deberta"
    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(reports()), model_writer=model_bytes, vocab_size=2000,
                                   model_type="unigram", pad_id=0, unk_id=3, bos_id=1, eos_id=2, pad_piece="[PAD]",
                                   bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]",
                                   user_defined_symbols=["[MASK]"], minloglevel=2)
    (folder / "spm.model").write_bytes(model_bytes.getvalue())
    tokenizer = DebertaV2Tokenizer.from_pretrained(folder)  # reads spm.model, as from the published folder
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=len(tokenizer) if shape is TINY else 128100, **shape,
                             max_position_embeddings=512, relative_attention=True, position_buckets=256,
                             pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
                             share_att_key=True, max_relative_positions=-1, type_vocab_size=0,
                             pad_token_id=0, id2label=dict(enumerate(RATE_LABELS)),
                             label2id={label: i for i, label in enumerate(RATE_LABELS)})
    model = DebertaV2ForTokenClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(head_scale)
    model.save_pretrained(folder)


def write_biolord(root: Path, seed: int, shape: dict = TINY) -> None:
    """``BioLORD-2023-C/``: MPNet's format (what BioLORD-2023-C is: a sentence encoder fine-tuned from
    all-mpnet-base-v2), a WordPiece vocabulary trained on the reports, 2 layers of width 32 (``shape=BASE``:
    mpnet-base's shape and 30,527-entry table, for the bench), random."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    folder = root / "BioLORD-2023-C"
    folder.mkdir(parents=True, exist_ok=True)
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(reports(), vocab_size=2000, special_tokens=["<s>", "<pad>", "</s>", "[UNK]", "<mask>"],
                                show_progress=False)
    trainer.save_model(str(folder))
    tokenizer = MPNetTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = MPNetConfig(vocab_size=trainer.get_vocab_size() if shape is TINY else 30527, **shape,
                         max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    MPNetModel(config).save_pretrained(folder)


def write_ratescore(root: Path, seed: int, shape: dict = TINY) -> None:
    write_rate_ner(root, seed, shape=shape)
    write_biolord(root, seed, shape=shape)


BUILDERS = {"chexbert": write_chexbert, "bertscore": write_distilroberta, "radgraph": write_radgraph,
            "ratescore": write_ratescore, "green": write_green}


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
