"""The one place that decides what to load: base model, LoRA adapter, backend; and the engine.

Python entry points (batch inference, the demo, the classifier, the benchmarks) call
``resolve``; the shell launchers ask the same function through
``python -m medswift.core.models`` (see ``main``), so "which checkpoint, on which base"
is decided once. Paths are checked here, before any heavy import, with one-line errors.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from medswift.core.constants import BACKENDS, DEFAULT_MODEL, IMAGE_BUDGET
from medswift.core.errors import UsageError, run_cli


@dataclass
class ModelChoice:
    model: Path
    adapter: Path | None
    model_type: str
    backend: str
    model_source: str = "default"  # "user" (given), "adapter" (the checkpoint's args.json) or "default"
    trained_image_budget: int | None = None  # the IMAGE_MAX_TOKEN_NUM the adapter was trained with, when recorded
    image_budget: int = IMAGE_BUDGET  # image tokens per image this run loads the model with (see image_budget)


def trained_image_budget(adapter: Path) -> int | None:
    """The image budget a checkpoint was trained with. The launchers pass it to ``swift sft`` as
    ``--model_kwargs`` so that args.json records it; ms-swift 4.6 writes model_kwargs there but
    does not reload them, so without this every later ``--adapters CKPT`` would silently run at
    ms-swift's default budget (16,384 tokens) instead."""
    try:
        args = json.loads((adapter / "args.json").read_text(encoding="utf-8"))
        kwargs = args.get("model_kwargs") or {}
        if kwargs.get("IMAGE_MAX_TOKEN_NUM"):
            return int(kwargs["IMAGE_MAX_TOKEN_NUM"])
        if kwargs.get("MAX_PIXELS"):
            return max(1, int(kwargs["MAX_PIXELS"]) // (32 * 32))
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return None


def _lora_input_widths(adapter: Path) -> set[int]:
    """The input width of every language-model q_proj LoRA A matrix, read from the safetensors
    header alone (a few KB; no tensor is loaded)."""
    import struct

    path = adapter / "adapter_model.safetensors"
    try:
        with path.open("rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(min(size, 64 << 20)))
    except (OSError, ValueError, struct.error):
        return set()
    return {v["shape"][-1] for k, v in header.items() if isinstance(v, dict) and "language_model" in k
            and "q_proj.lora_A" in k and len(v.get("shape") or []) == 2}


def check_adapter_base(adapter: Path, model: Path) -> None:
    """A LoRA checkpoint trained on another base stops here, in one line, instead of as a shape
    mismatch after the model has loaded: its language-model LoRA matrices must be as wide as
    this model's hidden size (an 8B adapter on a 2B base, or the tiny model's on 8B)."""
    try:
        config = json.loads((model / "config.json").read_text(encoding="utf-8"))
        peft = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(peft, dict) and peft.get("peft_type") not in (None, "LORA"):
        raise UsageError(f"not a LoRA checkpoint (peft_type {peft.get('peft_type')}): {adapter}")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    hidden = text.get("hidden_size") if isinstance(text, dict) else None
    widths = _lora_input_widths(adapter)
    if isinstance(hidden, int) and widths and widths != {hidden}:
        trained_on = ""
        try:
            trained_on = f" (trained on {json.loads((adapter / 'args.json').read_text(encoding='utf-8'))['model']})"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise UsageError(f"{adapter} is not a LoRA checkpoint of {model}: its LoRA layers are "
                         f"{'/'.join(map(str, sorted(widths)))} wide, the model's hidden size is {hidden}{trained_on}")


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-<step>`` under ``output_dir`` (ms-swift writes
    ``v<N>-<time>/checkpoint-<step>``), by modification time; merged models are not adapters."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [p for pattern in ("checkpoint-*", "*/checkpoint-*", "*/*/checkpoint-*") for p in output_dir.glob(pattern)
             if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return max(found, key=lambda p: (p.stat().st_mtime, str(p)), default=None)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:  # find_spec imports nothing
        raise UsageError("backend vllm asked for but vllm is not installed (pip install vllm, needs CUDA); "
                         "use the transformers backend")


PATCH_PIXELS = 32 * 32  # Qwen3-VL: one image token per 32 x 32 pixels


def _positive_int(name: str, value) -> int:
    if not str(value).isdigit() or int(value) < 1:
        raise UsageError(f"{name} must be a positive integer, got '{value}'")
    return int(value)


def image_budget(given: int | None, trained: int | None) -> int:
    """The image budget of a run, decided here and nowhere else (the launchers receive it from
    ``main``): given (``--image_max_token_num``), else $IMAGE_MAX_TOKEN_NUM, else $MAX_PIXELS / 1024
    (the reference's knob; set with IMAGE_MAX_TOKEN_NUM, the two must agree), else the budget the
    adapter was trained with, else the default."""
    tokens = os.environ.get("IMAGE_MAX_TOKEN_NUM") or None
    if tokens is not None:
        tokens = _positive_int("IMAGE_MAX_TOKEN_NUM", tokens)
    from_pixels = None
    if os.environ.get("MAX_PIXELS"):
        pixels = _positive_int("MAX_PIXELS", os.environ["MAX_PIXELS"])
        from_pixels = pixels // PATCH_PIXELS
        if from_pixels < 1:
            raise UsageError(f"MAX_PIXELS={pixels} is below one 32 x 32 patch")
        if tokens is not None and tokens != from_pixels:
            raise UsageError(f"MAX_PIXELS={pixels} means IMAGE_MAX_TOKEN_NUM={from_pixels}, but "
                             f"IMAGE_MAX_TOKEN_NUM={tokens} is set too; set one")
    return _positive_int("IMAGE_MAX_TOKEN_NUM", given or tokens or from_pixels or trained or IMAGE_BUDGET)


def add_image_budget_arg(parser) -> None:
    """``--image_max_token_num``, the same for every tool that loads a model."""
    parser.add_argument("--image_max_token_num", type=int,
                        help=f"image budget in tokens (default: env IMAGE_MAX_TOKEN_NUM, else the adapter's "
                             f"training budget, else {IMAGE_BUDGET})")


def resolve(model_path: str | Path | None = None, adapter_path: str | Path | None = None,
            backend: str = "transformers", *, output_dir: str | Path | None = None,
            no_adapter: bool = False, elsewhere: bool = False, image_tokens: int | None = None) -> ModelChoice:
    """Decide and check what to load.

    * ``no_adapter``: the model alone (``model_path``, else the embedded default).
    * else the adapter is ``adapter_path``, or the newest checkpoint under ``output_dir`` when
      one is given (the launchers' default), or none (a base model alone);
    * the base model is ``model_path`` when given, else the one the adapter was trained on
      (its ``args.json``), else the embedded default.
    * ``elsewhere``: the command is for another machine (a dry run): a model or adapter path that
      does not exist here is taken as given, with its model type unknown.
    * ``image_tokens``: the image budget (see ``image_budget``), kept on the choice for ``load_engine``.
    """
    check_backend(backend)
    adapter = None
    if not no_adapter:
        if adapter_path:
            adapter = Path(adapter_path)
        elif output_dir is not None:
            adapter = newest_checkpoint(Path(output_dir))
            if adapter is None:
                raise UsageError(f"no adapter given and no checkpoint-* under {output_dir} (train first, or set "
                                 "ADAPTER / --adapter_path to a checkpoint-N folder)")
        if adapter is not None and not (elsewhere and not adapter.exists()):
            if not adapter.is_dir():
                raise UsageError(f"adapter not found: {adapter}")
            if not (adapter / "adapter_config.json").is_file():
                raise UsageError(f"not a LoRA checkpoint (no adapter_config.json): {adapter}")
    if model_path:
        model, source = Path(model_path), "user"
    elif adapter is not None and (adapter / "args.json").is_file():
        try:
            model, source = Path(json.loads((adapter / "args.json").read_text(encoding="utf-8"))["model"]), "adapter"
        except (ValueError, KeyError, TypeError, OSError):
            raise UsageError(f"{adapter / 'args.json'} names no base model; give the model path") from None
    else:
        model, source = DEFAULT_MODEL, "default"
    trained = trained_image_budget(adapter) if adapter is not None and adapter.is_dir() else None
    budget = image_budget(image_tokens, trained)
    if elsewhere and not model.exists():
        return ModelChoice(model=model, adapter=adapter, model_type="", backend=backend, model_source=source,
                           trained_image_budget=trained, image_budget=budget)
    if not (model / "config.json").is_file():
        hint = " (build the default: python scripts/build_tiny_model.py)" if model == DEFAULT_MODEL else ""
        raise UsageError(f"model not found (no config.json): {model}{hint}")
    try:
        model_type = json.loads((model / "config.json").read_text(encoding="utf-8")).get("model_type", "")
    except (ValueError, OSError, AttributeError):
        raise UsageError(f"cannot read model_type from {model / 'config.json'}") from None
    if adapter is not None and adapter.is_dir():
        check_adapter_base(adapter, model)
    return ModelChoice(model=model, adapter=adapter, model_type=model_type or "", backend=backend,
                       model_source=source, trained_image_budget=trained, image_budget=budget)


def load_engine(choice: ModelChoice, max_batch_size: int = 16, dtype: str = "auto", *, device_map: str | None = None,
                tensor_parallel_size: int = 1, distributed: bool = False, **task):
    """An ms-swift engine for ``choice``; heavy imports happen here, not at module import.

    ``device_map``: transformers, where the weights go (a rank's own GPU); None: ms-swift's default.
    ``tensor_parallel_size``, ``distributed`` (a rank under torchrun): vLLM, as ``swift infer`` sets
    them (vLLM joins torchrun's processes through its external launcher).
    ``task``: ``task_type="seq_cls", num_labels=..., problem_type=...`` for a classification head.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The one place the budget reaches ms-swift: Qwen3-VL's processor reads it from the environment at load.
    os.environ["IMAGE_MAX_TOKEN_NUM"] = str(choice.image_budget)
    import torch

    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    torch_dtype = getattr(torch, dtype)
    adapters = [str(choice.adapter)] if choice.adapter else None
    if choice.backend == "vllm":
        from swift.infer_engine import VllmEngine

        lora_rank = json.loads((choice.adapter / "adapter_config.json").read_text())["r"] if adapters else 16
        launcher = {"distributed_executor_backend": "external_launcher"} if distributed else {}
        return VllmEngine(str(choice.model), model_type=choice.model_type or None, torch_dtype=torch_dtype,
                          adapters=adapters, max_num_seqs=max_batch_size, enable_lora=bool(adapters),
                          max_lora_rank=max(16, lora_rank), tensor_parallel_size=tensor_parallel_size, **launcher,
                          **task)
    from swift.infer_engine import TransformersEngine

    return TransformersEngine(str(choice.model), model_type=choice.model_type or None, torch_dtype=torch_dtype,
                              adapters=adapters, max_batch_size=max_batch_size, device_map=device_map, **task)


def request_config(max_new_tokens: int, temperature: float, top_p: float | None = None,
                   repetition_penalty: float | None = None, stream: bool = False, seed: int | None = None):
    from swift.infer_engine import RequestConfig

    return RequestConfig(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         repetition_penalty=repetition_penalty, stream=stream, seed=seed)


def main(argv: list[str] | None = None) -> int:
    """For the shell launchers: print the resolved choice as shell assignments (``MODEL=...
    ADAPTER=... MODEL_TYPE=... MODEL_SOURCE=... TRAINED_IMAGE_BUDGET=... IMAGE_MAX_TOKEN_NUM=...``,
    the last the run's final image budget) for ``eval``, or one error line."""
    p = argparse.ArgumentParser(prog="python -m medswift.core.models", description=main.__doc__)
    p.add_argument("--model")
    p.add_argument("--adapter")
    p.add_argument("--output_dir", help="look for the newest checkpoint here when --adapter is not given")
    p.add_argument("--no_adapter", action="store_true")
    p.add_argument("--backend", default="transformers")
    p.add_argument("--elsewhere", action="store_true", help="for another machine: missing paths are taken as given")
    args = p.parse_args(argv)

    def body() -> int:
        choice = resolve(args.model or None, args.adapter or None, args.backend, output_dir=args.output_dir,
                         no_adapter=args.no_adapter, elsewhere=args.elsewhere)
        values = {"MODEL": choice.model, "ADAPTER": choice.adapter or "", "MODEL_TYPE": choice.model_type,
                  "MODEL_SOURCE": choice.model_source, "TRAINED_IMAGE_BUDGET": choice.trained_image_budget or "",
                  "IMAGE_MAX_TOKEN_NUM": choice.image_budget}
        trained = choice.trained_image_budget
        chosen = os.environ.get("IMAGE_MAX_TOKEN_NUM") or os.environ.get("MAX_PIXELS")
        if not trained and not chosen and choice.adapter is not None and not choice.adapter.exists():
            print(f"[medswift] IMAGE_MAX_TOKEN_NUM: the adapter is not on this machine, so its trained image budget "
                  f"is unknown; using the default {choice.image_budget} (set IMAGE_MAX_TOKEN_NUM to the adapter's)",
                  file=sys.stderr)
        if trained and trained != choice.image_budget:
            print(f"[medswift] IMAGE_MAX_TOKEN_NUM={choice.image_budget}, but the adapter was trained with {trained}",
                  file=sys.stderr)
        print(" ".join(f"{k}={shlex.quote(str(v))}" for k, v in values.items()))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
