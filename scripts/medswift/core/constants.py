"""Names and values several layers share, each defined once."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository: scripts/medswift/core -> root
DEFAULT_MODEL = ROOT / "weights" / "tiny-qwen3-vl"  # built by scripts/build_tiny_model.py
RESULTS = ROOT / "results"
DATA = ROOT / "data"

NOTICE = "For research only, not for diagnosis."

# Files an image folder may hold that the decoders read (DICOM with or without its suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")
SPLITS = ("train", "val", "test")
LANGUAGES = ("zh", "en")
BACKENDS = ("transformers", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

# ms-swift's problem types for --task_type seq_cls
MULTI_LABEL = "multi_label_classification"
SINGLE_LABEL = "single_label_classification"
