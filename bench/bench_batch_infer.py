"""Batched inference against the reference system's one-request-per-image loop.

Usage:
    python bench/bench_batch_infer.py [--images 33] [--batch_size 16] [--max_new_tokens 64]

Same engine, model, images, prompt and greedy settings, measured side by side in one
run: (a) the reference loop, one ``engine.infer([request])`` per image; (b) one
``engine.infer(requests)`` with ``max_batch_size`` = --batch_size, as
scripts/batch_infer.py does. Prints images/s of both and the ratio (target on the
tiny model, 2 CPU cores: at least 3x). Point --model_path/--adapter_path at real
weights to measure those instead.
"""
from __future__ import annotations

import sys
import time

from medswift.core.cli import command_parser
from medswift.core import models as eng
from medswift.core import prompts
from medswift.core.constants import ROOT
from medswift.core.images import open_checked


def main(argv=None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--model_path")
    p.add_argument("--adapter_path")
    p.add_argument("--images", type=int, default=33)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--image_max_token_num", type=int, default=256)
    args = p.parse_args(argv)

    choice = eng.resolve(args.model_path, args.adapter_path, image_tokens=args.image_max_token_num)
    bundled = sorted((ROOT / "data" / "openi" / "images").glob("*.png"))
    images = [open_checked(bundled[i % len(bundled)]).image for i in range(args.images)]
    from swift.infer_engine import InferRequest

    prompt = prompts.template("en", 0)
    requests = [InferRequest(messages=[{"role": "user", "content": f"<image>{prompt}"}], images=[im])
                for im in images]
    engine = eng.load_engine(choice, max_batch_size=args.batch_size)
    config = eng.request_config(args.max_new_tokens, 0.0)
    engine.infer(requests[:2], request_config=config, use_tqdm=False)  # warm-up, not timed

    t0 = time.perf_counter()
    loop_out = [engine.infer([r], request_config=config, use_tqdm=False)[0] for r in requests]
    loop_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch_out = engine.infer(requests, request_config=config, use_tqdm=False)
    batch_s = time.perf_counter() - t0

    tokens = lambda outs: sum(o.usage.completion_tokens for o in outs)  # noqa: E731
    n = len(requests)
    print(f"model {choice.model}{' + ' + str(choice.adapter) if choice.adapter else ''}; {n} images, "
          f"greedy, max_new_tokens {args.max_new_tokens}")
    print(f"reference loop (1 request per call): {loop_s:6.1f} s  {n / loop_s:6.2f} images/s  "
          f"{tokens(loop_out)} tokens")
    print(f"batched (max_batch_size {args.batch_size}):      {batch_s:6.1f} s  {n / batch_s:6.2f} images/s  "
          f"{tokens(batch_out)} tokens")
    ratio = loop_s / batch_s
    print(f"ratio batched / loop: {ratio:.2f}x (target >= 3x on the tiny model, 2 CPU cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
