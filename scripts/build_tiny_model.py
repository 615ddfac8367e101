#!/usr/bin/env python
"""Build a tiny random-weight Qwen3-VL model (with its own tokenizer and processor) for CPU testing.

The result loads like a real Qwen3-VL checkpoint, so ms-swift can fine-tune, infer and merge it
without downloading anything:

    python scripts/build_tiny_model.py [--output_dir weights/tiny-qwen3-vl] [--force]
    swift sft --model weights/tiny-qwen3-vl --model_type qwen3_vl --check_model false ...

Weights are random (seeded, so identical on every build); outputs are meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO_ROOT / "weights" / "tiny-qwen3-vl"
REPORT_FILES = [REPO_ROOT / "data" / "openi" / "openi-en.json", REPO_ROOT / "data" / "openi" / "openi-zh.json"]

BUILDER_VERSION = 2
SEED = 42
MARKER = "tiny_model_build.json"
BPE_VOCAB_SIZE = 4000

# ms-swift's Qwen templates and the Qwen3-VL model hard-code these ids, so the tokenizer must
# place each special token exactly here (the learned vocabulary is padded up to the first one).
SPECIAL_TOKENS = [
    "<|endoftext|>",  # 151643
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",  # 151668
]
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 151936  # embedding rows, as in the real model (a little larger than the tokenizer)
# Tokens that are ordinary text in Qwen's tokenizer (not "special", so they are not stripped on decode).
NON_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
               "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
               "<|file_sep|>"}
IDS = {tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}

# Same split rule as Qwen2/Qwen3's tokenizer, so Chinese and English text is cut the same way.
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML like Qwen3-VL's own template (no tools/thinking); images become
# <|vision_start|><|image_pad|><|vision_end|>, which the processor expands per image.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' or 'video' in item -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

README = """# tiny-qwen3-vl (random weights, testing only)

Built by `scripts/build_tiny_model.py` (builder version {version}, seed {seed}).

A Qwen3-VL-shaped model with **random weights**: 2 text layers (hidden 64), 2 vision layers,
and a small byte-level BPE tokenizer trained on the bundled OpenI reports, with Qwen's special
tokens at their real ids. It exists only so the toolkit can run end to end on CPU without
downloads. Its outputs are meaningless; never use it for evaluation or real inference.
"""


def is_complete(out_dir: Path) -> bool:
    needed = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", MARKER]
    if not all((out_dir / name).is_file() for name in needed):
        return False
    # transformers 5 writes processor_config.json; older versions preprocessor_config.json
    if not any((out_dir / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")):
        return False
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("builder_version") == BUILDER_VERSION and marker.get("seed") == SEED


def load_reports() -> list[str]:
    texts = []
    for path in REPORT_FILES:
        data = json.loads(path.read_text(encoding="utf-8"))
        texts.extend(a["caption"] for a in data["annotations"] if a.get("caption"))
    return texts


def build_tokenizer(texts: list[str]):
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizer
    # The full byte alphabet keeps every input encodable (no unknown tokens), like Qwen's tokenizer.
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)

    learned = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(learned["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    # Fillers live in the BPE vocab (not as added tokens, which would make loading slow); no merge
    # produces them, so they never appear when encoding.
    vocab.update({f"<|filler_{i}|>": i for i in range(len(vocab), FIRST_SPECIAL_ID)})
    if len(vocab) != FIRST_SPECIAL_ID:
        raise RuntimeError("a filler name collided with a learned token")

    # eos starts as <|endoftext|> because the constructor adds its special tokens first, and
    # <|endoftext|> must be the first added token to land on 151643.
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                               eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                               model_max_length=262144, errors="replace", clean_up_tokenization_spaces=False)
    # Added one at a time, in id order, so each lands on its fixed id (checked below).
    for tok in SPECIAL_TOKENS:
        if tok not in tokenizer.get_vocab():
            tokenizer.add_tokens([tok], special_tokens=tok not in NON_SPECIAL)
    tokenizer.eos_token = "<|im_end|>"  # chat turns end here, as in Qwen3-VL-Instruct
    tokenizer.chat_template = CHAT_TEMPLATE
    check_token_ids(tokenizer)
    return tokenizer


def check_token_ids(tokenizer) -> None:
    wrong = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS
             if tokenizer.convert_tokens_to_ids(tok) != IDS[tok]}
    if wrong:
        raise RuntimeError(f"special tokens at wrong ids: {wrong}")
    if tokenizer.eos_token_id != IDS["<|im_end|>"] or tokenizer.pad_token_id != IDS["<|endoftext|>"]:
        raise RuntimeError(f"eos/pad ids are {tokenizer.eos_token_id}/{tokenizer.pad_token_id}")


def build_model():
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    config = Qwen3VLConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            # mrope_section halves head_dim across (time, height, width): 2 + 3 + 3 = 16 / 2
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                "mrope_section": [2, 3, 3], "mrope_interleaved": True},
            "bos_token_id": IDS["<|endoftext|>"],
            "eos_token_id": IDS["<|im_end|>"],
            "pad_token_id": IDS["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 4,
            "out_hidden_size": 64,  # must equal the text hidden size
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "deepstack_visual_indexes": [0],
            "num_position_embeddings": 2304,
            "hidden_act": "gelu_pytorch_tanh",
        },
        image_token_id=IDS["<|image_pad|>"],
        video_token_id=IDS["<|video_pad|>"],
        vision_start_token_id=IDS["<|vision_start|>"],
        vision_end_token_id=IDS["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(SEED)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config.update(bos_token_id=IDS["<|endoftext|>"], eos_token_id=IDS["<|im_end|>"],
                                   pad_token_id=IDS["<|endoftext|>"], do_sample=False)
    return model


def silence_unused_rows(model, n_learned: int) -> None:
    """Zero the (tied) embedding rows of filler ids and of ids past the tokenizer.

    Their logits are then 0 instead of random, so after a little training the model
    writes learned report tokens rather than ``<|filler_N|>`` strings. Special tokens
    keep their random rows: the chat template and image markers need them.
    """
    import torch

    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[n_learned:FIRST_SPECIAL_ID].zero_()
        emb[FIRST_SPECIAL_ID + len(SPECIAL_TOKENS):].zero_()


def build_processor(tokenizer):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    # Qwen3-VL's own preprocessing: 16-px patches merged 2x2, pixel values scaled to [-1, 1].
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        size={"shortest_edge": 65536, "longest_edge": 16777216})
    video_processor = Qwen3VLVideoProcessor(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
                            chat_template=CHAT_TEMPLATE)


def verify_saved(out_dir: Path) -> None:
    """Reload the way ms-swift does, so a broken build fails here rather than mid-training."""
    from transformers import AutoProcessor, AutoTokenizer

    check_token_ids(AutoTokenizer.from_pretrained(out_dir))
    processor = AutoProcessor.from_pretrained(out_dir)
    check_token_ids(processor.tokenizer)
    if processor.image_token_id != IDS["<|image_pad|>"] or processor.image_processor.patch_size != 16:
        raise RuntimeError("processor reloaded with the wrong image token or patch size")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "心脏大小正常 heart"}]}],
        add_generation_prompt=True, tokenize=False)
    if "<|vision_start|><|image_pad|><|vision_end|>" not in text or not text.endswith("<|im_start|>assistant\n"):
        raise RuntimeError(f"unexpected chat template output: {text!r}")


def remove_stale_builds(out_dir: Path) -> None:
    """Delete temp folders left by killed builds (their pid is in the name), not ones still running."""
    prefix = f".{out_dir.name}.tmp-"
    for path in out_dir.parent.glob(prefix + "*"):
        pid = path.name[len(prefix):].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, OSError):
            pass  # not ours to judge, or the process is alive


def build(out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out_dir)
    # Build next to the target and rename at the end, so an interrupted build leaves no half model.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))
    try:
        tokenizer = build_tokenizer(load_reports())
        model = build_model()
        first_filler = min(i for tok, i in tokenizer.get_vocab().items() if tok.startswith("<|filler_"))
        silence_unused_rows(model, n_learned=first_filler)
        model.save_pretrained(tmp_dir, safe_serialization=True)
        processor = build_processor(tokenizer)
        processor.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)  # also carries the chat template for text-only users
        verify_saved(tmp_dir)
        (tmp_dir / "README.md").write_text(README.format(version=BUILDER_VERSION, seed=SEED), encoding="utf-8")
        # Written last: its presence means everything before it succeeded.
        (tmp_dir / MARKER).write_text(json.dumps({
            "builder_version": BUILDER_VERSION, "seed": SEED,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }, indent=2) + "\n")

        # mkdtemp makes the folder owner-only; give it normal permissions before publishing it
        umask = os.umask(0)
        os.umask(umask)
        tmp_dir.chmod(0o777 & ~umask)
        for f in tmp_dir.iterdir():
            f.chmod(0o666 & ~umask)

        old_dir = None
        if out_dir.exists():
            old_dir = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old_dir)
        tmp_dir.rename(out_dir)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write the model (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete model is already there")
    args = parser.parse_args(argv)
    out_dir = args.output_dir.expanduser().resolve()

    if is_complete(out_dir) and not args.force:
        print(f"tiny model already exists at {out_dir} (use --force to rebuild)")
        return 0
    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: {out_dir} exists and is not a directory", file=sys.stderr)
        return 1

    start = time.time()
    build(out_dir)
    params = json.loads((out_dir / MARKER).read_text())["num_parameters"]
    size_mb = sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file()) / 2**20
    print(f"built tiny Qwen3-VL at {out_dir}: {params / 1e6:.2f}M parameters, {size_mb:.1f} MiB "
          f"({time.time() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
