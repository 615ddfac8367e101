"""Load a Qwen3-VL model (+ optional LoRA adapter) into an ms-swift inference engine.

Shared by batch inference, the demo and the benchmarks, so every entry point checks
paths the same way and fails with one line before the heavy imports.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "weights" / "tiny-qwen3-vl"
BACKENDS = ("transformers", "vllm")


class EngineError(ValueError):
    """A user mistake in model/adapter/backend choice: shown as one line."""


@dataclass
class ModelChoice:
    model: Path
    adapter: Path | None
    model_type: str
    backend: str


def resolve(model_path: str | None, adapter_path: str | None, backend: str = "transformers") -> ModelChoice:
    """Check paths and backend; the base model defaults to the one in the adapter's args.json."""
    if backend not in BACKENDS:
        raise EngineError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EngineError("backend vllm asked for but vllm is not installed (pip install vllm, needs CUDA); "
                          "use --backend transformers")
    adapter = None
    if adapter_path:
        adapter = Path(adapter_path)
        if not adapter.is_dir():
            raise EngineError(f"adapter not found: {adapter}")
        if not (adapter / "adapter_config.json").is_file():
            raise EngineError(f"not a LoRA checkpoint (no adapter_config.json): {adapter}")
    if model_path:
        model = Path(model_path)
    elif adapter is not None and (adapter / "args.json").is_file():
        model = Path(json.loads((adapter / "args.json").read_text())["model"])
    else:
        model = DEFAULT_MODEL
    if not (model / "config.json").is_file():
        hint = " (build the default: python scripts/build_tiny_model.py)" if model == DEFAULT_MODEL else ""
        raise EngineError(f"model not found (no config.json): {model}{hint}")
    model_type = json.loads((model / "config.json").read_text()).get("model_type", "")
    return ModelChoice(model=model, adapter=adapter, model_type=model_type, backend=backend)


def set_image_budget(max_tokens: int | None) -> int:
    """Qwen3-VL reads its image budget from the environment: set it before ms-swift loads."""
    value = int(max_tokens or os.environ.get("IMAGE_MAX_TOKEN_NUM") or 1024)
    os.environ["IMAGE_MAX_TOKEN_NUM"] = str(value)
    return value


def load_engine(choice: ModelChoice, max_batch_size: int = 16, dtype: str = "auto", **task):
    """An ms-swift engine for ``choice``; heavy imports happen here, not at module import.

    ``task``: ``task_type="seq_cls", num_labels=..., problem_type=...`` for a classification head.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    torch_dtype = getattr(torch, dtype)
    adapters = [str(choice.adapter)] if choice.adapter else None
    if choice.backend == "vllm":
        from swift.infer_engine import VllmEngine

        lora_rank = json.loads((choice.adapter / "adapter_config.json").read_text())["r"] if adapters else 16
        return VllmEngine(str(choice.model), model_type=choice.model_type or None, torch_dtype=torch_dtype,
                          adapters=adapters, max_num_seqs=max_batch_size, enable_lora=bool(adapters),
                          max_lora_rank=max(16, lora_rank), **task)
    from swift.infer_engine import TransformersEngine

    return TransformersEngine(str(choice.model), model_type=choice.model_type or None, torch_dtype=torch_dtype,
                              adapters=adapters, max_batch_size=max_batch_size, **task)


def request_config(max_new_tokens: int, temperature: float, top_p: float | None = None,
                   repetition_penalty: float | None = None, stream: bool = False, seed: int | None = None):
    from swift.infer_engine import RequestConfig

    return RequestConfig(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         repetition_penalty=repetition_penalty, stream=stream, seed=seed)
