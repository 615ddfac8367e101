"""RadGraph F1 through the ``radgraph`` package (0.1.18, MIT): ``F1RadGraph(reward_level="partial",
model_type="radgraph-xl")``, the figure ReXrank reports as RadGraph F1 and feeds to RadCliQ-v1.

The package is used as published; ``F1RadGraph`` scores every pair. Three things around it:

* **Where the model is.** The package only takes ``model_cache_dir`` and reads
  ``<model_cache_dir>/radgraph-xl/{config.json, vocabulary/, weights.th}`` (downloading and
  unpacking ``radgraph-xl.tar.gz`` from ``StanfordAIMI/RRG_scorers`` when that folder is empty).
  Here the folder, or the archive unpacked into a temporary folder, is staged under a temporary
  ``model_cache_dir``; nothing is ever downloaded (weights.go_offline()).
* **The encoder's configuration and tokenizer.** ``config.json`` names the encoder by its hub id
  (``microsoft/BiomedVLP-CXR-BERT-general`` for RadGraph-XL); its weights are in ``weights.th``, but
  the package reads its configuration and tokenizer through ``AutoConfig``/``AutoTokenizer`` by
  that name. The staged ``config.json`` names the local folder instead: ``DIR/<last part of the
  hub id>/`` or the Hugging Face cache's snapshot. Nothing else in it changes.
* **transformers 5.** The package's AllenNLP tokenizer wrapper calls ``tokenizer.encode_plus``,
  which transformers 5 removed (its ``__call__`` takes the same arguments and returns the same
  ids); its indexer calls ``tokenizer.build_inputs_with_special_tokens``, also removed (for the
  BERT encoders of RadGraph and RadGraph-XL it gave ``[CLS] ids [SEP]``); and it passes
  ``add_special_tokens=False`` to ``AutoTokenizer.from_pretrained``, which transformers 5 reads as
  a call of its ``add_special_tokens`` method. ``compatible()`` wraps the package's
  ``cached_transformers.get_tokenizer`` (every tokenizer it uses comes from there) to drop that
  argument and give the tokenizer the two methods back; RadEval 2.x vendors radgraph 0.1.18 with
  the same three changes.

Research only, not diagnosis.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from medswift.core.errors import UsageError
from medswift.eval.field import weights

MODEL_TYPE = "radgraph-xl"
LEVEL = "partial"  # entities, and whether each has a relation (ReXrank; RadCliQ-v1's radgraph column)
ENCODER_KEYS = (("dataset_reader", "token_indexers", "bert", "model_name"),
                ("model", "embedder", "token_embedders", "bert", "model_name"))


def compatible() -> None:
    """The two transformers-5 gaps of radgraph 0.1.18's tokenizer wrapper (module docstring); idempotent."""
    from radgraph.allennlp.common import cached_transformers

    if getattr(cached_transformers.get_tokenizer, "medswift_compatible", False):
        return
    original = cached_transformers.get_tokenizer

    def get_tokenizer(model_name: str, **kwargs):
        kwargs.pop("add_special_tokens", None)
        tokenizer = original(model_name, **kwargs)
        if not hasattr(tokenizer, "encode_plus"):
            tokenizer.encode_plus = tokenizer.__call__
        if not hasattr(tokenizer, "build_inputs_with_special_tokens"):
            cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
            tokenizer.build_inputs_with_special_tokens = lambda ids, pair=None: (
                [cls, *ids, sep] if pair is None else [cls, *ids, sep, *pair, sep])
        return tokenizer

    get_tokenizer.medswift_compatible = True
    cached_transformers.get_tokenizer = get_tokenizer


def encoder_name(config: dict) -> str:
    names = set()
    for keys in ENCODER_KEYS:
        node = config
        for key in keys:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, str):
            names.add(node)
    if len(names) != 1:
        raise UsageError(f"{MODEL_TYPE}/config.json names no single encoder (model_name): not a RadGraph model")
    return names.pop()


def read_config(model: Path) -> dict:
    """The model's config.json, from its folder or from inside its .tar.gz (without unpacking the rest)."""
    try:
        if model.is_dir():
            return json.loads((model / "config.json").read_text(encoding="utf-8"))
        with tarfile.open(model, "r:gz") as tar:
            for member in tar:
                if member.isfile() and Path(member.name).name == "config.json" and len(Path(member.name).parts) <= 2:
                    return json.loads(tar.extractfile(member).read().decode("utf-8"))
    except (OSError, ValueError, tarfile.TarError, EOFError) as exc:
        raise UsageError(f"{model}: no readable config.json ({type(exc).__name__}): not a RadGraph model") from None
    raise UsageError(f"{model} holds no config.json: not a RadGraph archive")


def unpack(archive: Path, into: Path) -> Path:
    """The archive's model folder (config.json at its top, or in its one sub-folder)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"{archive} is not a readable RadGraph archive ({type(exc).__name__})") from None
    if (into / "config.json").is_file():
        return into
    subs = [p for p in into.iterdir() if (p / "config.json").is_file()]
    if len(subs) != 1:
        raise UsageError(f"{archive} holds no config.json: not a RadGraph archive")
    return subs[0]


def stage(model: Path, root: Path | None, into: Path) -> Path:
    """A model_cache_dir for the package: ``into/radgraph-xl/`` with the model's vocabulary/ and
    weights.th, and its config.json naming the encoder's local folder. Returns ``into``."""
    source = unpack(model, into / "unpacked") if model.is_file() else model
    for name in ("config.json", "weights.th", "vocabulary"):
        if not (source / name).exists():
            raise weights.missing(MODEL_TYPE, root, f"/{name}")
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{source / 'config.json'} is not JSON: not a RadGraph model") from None
    folder = str(weights.encoder_folder(root, encoder_name(config)))
    for keys in ENCODER_KEYS:
        node = config
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = folder
    target = into / MODEL_TYPE
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (target / "weights.th").symlink_to((source / "weights.th").resolve())
    (target / "vocabulary").symlink_to((source / "vocabulary").resolve(), target_is_directory=True)
    return into


def set_f1(reference: set, hypothesis: set) -> float:
    tp = len(reference & hypothesis)
    precision = tp / len(hypothesis) if hypothesis else 0.0
    recall = tp / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def entities_and_relations(annotation: dict) -> tuple[set, set]:
    """(entities as (tokens, label), relations as (source, target, type)) of one report's annotation."""
    entities = annotation.get("entities", {}) or {}
    named = {key: (tuple(e["tokens"]), e["label"]) for key, e in entities.items()}
    relations = {(named[key], named[target], kind) for key, e in entities.items()
                 for kind, target in e.get("relations", []) if target in named}
    return set(named.values()), relations


def entity_relation_f1(hypothesis: dict, reference: dict) -> float:
    """The mean of entity F1 and relation F1 (CXR-Report-Metric's radgraph_combined). The package has
    no function for it; RadEval's RadCliQv1/radcliq.py writes the same sets and F1 by hand."""
    hyp_entities, hyp_relations = entities_and_relations(hypothesis)
    ref_entities, ref_relations = entities_and_relations(reference)
    return (set_f1(ref_entities, hyp_entities) + set_f1(ref_relations, hyp_relations)) / 2


class RadGraphF1:
    """Load once; ``f1(refs, preds)`` -> per-pair RadGraph F1 (``F1RadGraph``, partial level)."""

    def __init__(self, model: Path, root: Path | None, device: str | None = None):
        weights.go_offline()
        import torch
        from radgraph import F1RadGraph

        compatible()
        self._tmp = tempfile.TemporaryDirectory(prefix="medswift-radgraph-")
        try:
            cache_dir = stage(Path(model), root, Path(self._tmp.name))
            use_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints its device
                self.scorer = F1RadGraph(reward_level=LEVEL, model_type=MODEL_TYPE, model_cache_dir=str(cache_dir),
                                         cuda=0 if use_gpu else -1)
        except RuntimeError as exc:  # load_state_dict(strict=True) on a file of another shape
            self.close()
            raise UsageError(f"{model}: weights.th does not fit its config.json "
                             f"({str(exc).splitlines()[0][:200]})") from None
        except BaseException:
            self.close()
            raise

    def f1(self, refs: list[str], preds: list[str]) -> np.ndarray:
        """Per pair, as ``F1RadGraph.forward(refs=..., hyps=...)`` returns it (0 for an empty side)."""
        return self.scores(refs, preds)[0]

    def scores(self, refs: list[str], preds: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: (RadGraph F1 at LEVEL, RadCliQ-v1's radgraph column), from one annotation pass.
        The second is CXR-Report-Metric's ``radgraph_combined`` as RadEval's CompositeMetric computes
        it: the mean of entity F1 and relation F1 over the two reports' annotations (0 for an empty side)."""
        import torch

        if not refs:
            return np.zeros(0), np.zeros(0)
        with torch.inference_mode():
            _, per_pair, hyp_annotations, ref_annotations = self.scorer(refs=list(refs), hyps=list(preds))
        combined, annotated = [], iter(zip(hyp_annotations, ref_annotations))
        for ref, pred in zip(refs, preds):  # the package leaves pairs with an empty side out of its annotations
            combined.append(entity_relation_f1(*next(annotated)) if ref and pred else 0.0)
        return np.asarray(per_pair, dtype=np.float64), np.asarray(combined, dtype=np.float64)

    def close(self) -> None:
        shutil.rmtree(self._tmp.name, ignore_errors=True)
