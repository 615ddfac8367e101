"""Names and values several layers share, each defined once.

The run defaults (model, image budget, answer length, loopback hosts) are also the shell
launchers': tools/swift/common.sh reads them with one ``python -m medswift.core.constants``
(see ``shell_defaults``).
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository: scripts/medswift/core -> root

# ---------------------------------------------------------------- run defaults (also the launchers')
DEFAULT_MODEL = ROOT / "weights" / "tiny-qwen3-vl"  # built by scripts/build_tiny_model.py
# Qwen3-VL: pixels = tokens x 32 x 32; 1024 tokens ~ 1.05 MP, the reference's MAX_PIXELS=1003520
IMAGE_BUDGET = 1024
MAX_NEW_TOKENS = 512
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})  # hosts that need no API key or login
RESULTS = ROOT / "results"
DATA = ROOT / "data"

NOTICE = "For research only, not for diagnosis."

# Files an image folder may hold that the decoders read (DICOM with or without its suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
SPLITS = ("train", "val", "test")
LANGUAGES = ("zh", "en")
BACKENDS = ("transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")

# ms-swift's problem types for --task_type seq_cls
MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"


def shell_defaults() -> str:
    """The run defaults for tools/swift/common.sh, one tab-separated line in the order it reads them:
    DEFAULT_MODEL, DEFAULT_MAX_NEW_TOKENS, LOOPBACK_HOSTS (space-separated). The image budget is not
    among them: medswift.core.models decides it and the launchers receive the final value."""
    return "\t".join(map(str, (DEFAULT_MODEL, MAX_NEW_TOKENS, " ".join(sorted(LOOPBACK)))))


if __name__ == "__main__":
    print(shell_defaults())
