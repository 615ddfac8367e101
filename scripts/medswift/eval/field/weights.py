"""Where the field metrics' weights are: a local folder laid out by the upstream names, or a
pre-filled Hugging Face cache. Nothing is ever downloaded.

``DIR`` (``--metrics_dir`` or ``MEDSWIFT_METRICS_DIR``) holds, by upstream name::

    chexbert.pth             CheXbert labeller (StanfordAIMI/RRG_scorers)
    bert-base-uncased/       its BERT config and tokenizer
    distilroberta-base/      BERTScore's model, as ReXrank configures it
    radgraph-xl/             RadGraph-XL (config.json, vocabulary/, weights.th) or radgraph-xl.tar.gz
    BiomedVLP-CXR-BERT-general/  RadGraph-XL's encoder configuration and tokenizer (its weights are in weights.th)
    RaTE-NER-Deberta/        RaTEScore's entity tagger
    BioLORD-2023-C/          RaTEScore's entity embedder
    GREEN-RadLlama2-7b/      GREEN's causal language model

A missing entry is one ``error:`` line that names it, where it is published and its licence.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medswift.core.errors import UsageError

ENV = "MEDSWIFT_METRICS_DIR"


@dataclass(frozen=True)
class Published:
    repo: str      # the Hugging Face repository that publishes it (its cache name)
    filename: str  # a file inside it ("" for a whole model folder)
    licence: str

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}" + (f" (file {self.filename})" if self.filename else "")


# Licences as the publishers' model cards state them (docs/metrics.md); "research use" ones bind the user.
PUBLISHED = {
    "chexbert.pth": Published("StanfordAIMI/RRG_scorers", "chexbert.pth",
                              "Stanford AIMI research-use terms of the CheXbert checkpoint"),
    "bert-base-uncased": Published("google-bert/bert-base-uncased", "", "Apache-2.0"),
    "distilroberta-base": Published("distilbert/distilroberta-base", "", "Apache-2.0"),
    "radgraph-xl": Published("StanfordAIMI/RRG_scorers", "radgraph-xl.tar.gz",
                             "Stanford AIMI research-use terms (RadGraph-XL)"),
    "BiomedVLP-CXR-BERT-general": Published("microsoft/BiomedVLP-CXR-BERT-general", "", "MIT"),
    "RaTE-NER-Deberta": Published("Angelakeke/RaTE-NER-Deberta", "", "as on its model card (research use)"),
    "BioLORD-2023-C": Published("FremyCompany/BioLORD-2023-C", "",
                                "as on its model card (built on UMLS/SNOMED data: their licences apply)"),
    "GREEN-RadLlama2-7b": Published("StanfordAIMI/GREEN-RadLlama2-7b", "",
                                    "as on its model card (a Llama 2 derivative: Llama 2 Community Licence)"),
}


def go_offline() -> None:
    """Whatever the environment says, no hub call leaves this process: the variables for code
    imported later, huggingface_hub's constant for code already imported."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_OFFLINE = True


def metrics_dir(flag: str | None) -> Path | None:
    """``--metrics_dir``, else ``MEDSWIFT_METRICS_DIR``, else None (only the Hugging Face cache)."""
    value = flag or os.environ.get(ENV) or None
    if value is None:
        return None
    root = Path(value).expanduser()
    where = f"set by {ENV}" if not flag else "--metrics_dir"
    if not root.exists():
        raise UsageError(f"metrics folder not found: {root} ({where})")
    if not root.is_dir():
        raise UsageError(f"metrics folder is not a folder: {root} ({where})")
    return root


def missing(name: str, root: Path | None, what: str = "") -> UsageError:
    pub = PUBLISHED[name]
    where = f"in {root}" if root else f"(no --metrics_dir or {ENV})"
    return UsageError(f"{name}{what} not found {where} nor in the Hugging Face cache: it is published at "
                      f"{pub.url}, licence: {pub.licence}; place it there (docs/metrics.md)")


def _cached(pub: Published) -> Path | None:
    """The model folder or file from a pre-filled Hugging Face cache, never from the network."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        if pub.filename:
            return Path(hf_hub_download(pub.repo, pub.filename, local_files_only=True))
        return Path(snapshot_download(pub.repo, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def model_file(root: Path | None, name: str) -> Path:
    """``DIR/name`` (a file such as chexbert.pth), else the cache's copy; else the missing line."""
    if root is not None and (root / name).is_file():
        return root / name
    found = _cached(PUBLISHED[name])
    if found is None or not found.is_file():
        raise missing(name, root)
    return found


def model_folder(root: Path | None, name: str, needs: tuple[str, ...] = ("config.json",)) -> Path:
    """``DIR/name/`` holding ``needs``, else the cache's snapshot; else the missing line (naming
    the first file the folder lacks when there is a folder)."""
    if root is not None and (root / name).is_dir():
        folder = root / name
        lacking = [n for n in needs if not (folder / n).exists()]
        if lacking:
            raise missing(name, root, f"/{lacking[0]}")
        return folder
    found = _cached(PUBLISHED[name])
    if found is None or any(not (found / n).exists() for n in needs):
        raise missing(name, root)
    return found


def radgraph_model(root: Path | None, name: str = "radgraph-xl") -> Path:
    """``DIR/radgraph-xl/`` (the unpacked archive), else ``DIR/radgraph-xl.tar.gz``, else the cache's
    archive; else the missing line."""
    if root is not None and (root / name).is_dir():
        return model_folder(root, name, ("config.json", "vocabulary", "weights.th"))
    if root is not None and (root / f"{name}.tar.gz").is_file():
        return root / f"{name}.tar.gz"
    found = _cached(PUBLISHED[name])
    if found is None or not found.is_file():
        raise missing(name, root)
    return found


def encoder_folder(root: Path | None, hub_id: str) -> Path:
    """The configuration and tokenizer a RadGraph config.json names by hub id: a local folder of
    that path, ``DIR/<last part of the id>/``, or the cache's snapshot; else the missing line."""
    if Path(hub_id).is_dir():
        return Path(hub_id)
    name = hub_id.rstrip("/").split("/")[-1]
    if name not in PUBLISHED:
        PUBLISHED[name] = Published(hub_id, "", "as on its model card")
    return model_folder(root, name, ("config.json",))
