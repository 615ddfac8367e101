"""How long the longest training sample is, in tokens: images x image budget + text.

Every image costs up to IMAGE_MAX_TOKEN_NUM tokens (Qwen3-VL: pixels / 32 / 32), so a study
of two views at 1024 each plus its report needs a MAX_LENGTH above 2,048, the launchers' old
fixed default; ms-swift meets a longer sample mid-epoch (MaxLengthError, or a silently
dropped sample). The training launchers ask this module before `swift sft` starts:
``MAX_LENGTH=auto`` (the default) becomes the longest sample, rounded up; a number too small
for the data stops with one line.

Text is counted without loading a tokenizer, as UTF-8 bytes / 2: an upper bound for Qwen's
byte-level BPE on English (about 4 bytes a token) and Chinese (about 4 bytes a token).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl

TEMPLATE_TOKENS = 64  # the chat template's own tokens: role markers, vision start/end, system prompt
FLOOR = 2048


def longest_sample(path: Path, image_tokens: int) -> tuple[int, int]:
    """(tokens of the longest record, its images), reading every line of the JSONL once."""
    rows, problems = read_jsonl(path, "training data")
    if problems:
        raise UsageError(f"{path} {problems[0]}")
    best = (0, 0)
    for _, row in rows:
        if not isinstance(row, dict):
            continue
        images = len(row.get("images") or []) if isinstance(row.get("images"), list) else 0
        text = sum(len(str(m.get("content", "")).encode("utf-8")) for m in row.get("messages") or []
                   if isinstance(m, dict))
        best = max(best, (images * image_tokens + math.ceil(text / 2) + TEMPLATE_TOKENS, images))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medswift.data.pipeline.sample_length", description=__doc__.split("\n\n")[0])
    p.add_argument("train_file")
    p.add_argument("--image_tokens", type=int, required=True, help="IMAGE_MAX_TOKEN_NUM")
    p.add_argument("--max_length", default="auto", help="'auto' or the MAX_LENGTH the user set")
    args = p.parse_args(argv)

    def body() -> int:
        need, images = longest_sample(Path(args.train_file), args.image_tokens)
        if args.max_length == "auto":
            print(max(FLOOR, math.ceil(need / 256) * 256))
            return 0
        if int(args.max_length) < need:
            raise UsageError(f"MAX_LENGTH={args.max_length} is shorter than the longest training sample, about "
                             f"{need} tokens ({images} image(s) x IMAGE_MAX_TOKEN_NUM={args.image_tokens} + text); "
                             f"set MAX_LENGTH={math.ceil(need / 256) * 256} or leave it unset (auto)")
        print(args.max_length)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
