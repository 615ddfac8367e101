"""A task whose answer is visible in the image, built deterministically from the bundled X-rays.

Usage:
    python -m medswift.data.converters.synthetic --output_dir results/rl_demo/data
    python -m medswift.data.converters.synthetic --output_dir /tmp/task --train 1000 --test 400 --image_size 64 --seed 0

Each image is a random crop of one bundled OpenI X-ray (data/openi/images), with brightness and
contrast jitter; half of them get a synthetic "effusion": a bright, blurred ellipse over the
lower zone of the left or the right lung field. The answer says whether it is there:
"There is pleural effusion." or "There is no pleural effusion." Both sentences are written with
report-vocabulary tokens the embedded default can produce, and the toolkit's clinical reward
(medswift_findings) scores the right one 1 and the wrong one 0, so the task measures whether a
model reads the image through the same reward GRPO optimises. Held-out images are never training
images: with ``--held_out_bases N`` (default 2) they come from N base X-rays the training images
never use, spread evenly over the sorted names, counted from the last (with the bundled eight, one
frontal and one lateral view; the last two by name are both lateral, which would test
frontal-trained models on laterals only); with 0 they are new crops, jitter and opacities of every
base, drawn from their own random stream (tools/rl_demo.sh's default).

Written into ``--output_dir``: ``train.jsonl``, ``val.jsonl`` and ``test.jsonl`` (ms-swift records,
as the converters write them), ``images/`` and ``summary.json``. The same arguments give the
same files, byte for byte. Synthetic images for a software demonstration: research only, not
for diagnosis.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from medswift.core.cli import command_parser
from medswift.core.constants import DATA, NOTICE
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import write_json, write_jsonl
from medswift.data.pipeline.output_files import sample

PROMPT = "Is there a pleural effusion on this chest X-ray? Answer in one sentence."
ANSWERS = {True: "There is pleural effusion.", False: "There is no pleural effusion."}
BASE_IMAGES = DATA / "openi" / "images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def base_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"base image folder not found: {folder}")
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise UsageError(f"no .png/.jpg X-ray in {folder}")
    return found


def held_out(bases: list[Path], n: int) -> list[Path]:
    """``n`` bases spread evenly over the sorted list, counted from its last (8 bases, 2 held out:
    the 4th and the 8th), so held-out views are not all of one kind when the names group them."""
    stride = len(bases) // n
    return sorted(bases[len(bases) - 1 - i * stride] for i in range(n))


def _load_gray(path: Path) -> "np.ndarray":
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise UsageError(f"cannot read base image {path.name}: {exc}") from None


def _crop(gray: "np.ndarray", rng: np.random.Generator, size: int) -> "np.ndarray":
    """A random square crop of 80-100% of the shorter side, resized to ``size``."""
    from PIL import Image

    h, w = gray.shape
    side = int(min(h, w) * rng.uniform(0.8, 1.0))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = Image.fromarray((gray[top:top + side, left:left + side] * 255).astype(np.uint8))
    return np.asarray(patch.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


def _effusion(size: int, rng: np.random.Generator) -> "np.ndarray":
    """Opacity mask in [0, 1]: a blurred ellipse over the lower zone of one lung field."""
    from PIL import Image, ImageDraw, ImageFilter

    side = rng.integers(0, 2)  # 0: the image's left half, 1: its right half
    cx = size * (0.3 if side == 0 else 0.7) + rng.normal(0, size * 0.03)
    cy = size * rng.uniform(0.5, 0.62)
    rx, ry = size * rng.uniform(0.18, 0.25), size * rng.uniform(0.14, 0.2)
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(radius=size * 0.03))
    return np.asarray(mask, dtype=np.float32) / 255.0


def make_image(gray: "np.ndarray", rng: np.random.Generator, size: int, with_effusion: bool) -> "np.ndarray":
    img = _crop(gray, rng, size)
    img = np.clip((img - img.mean()) * rng.uniform(0.85, 1.15) + img.mean() + rng.normal(0, 0.04), 0, 1)
    if with_effusion:
        alpha = _effusion(size, rng) * rng.uniform(0.9, 1.0)
        img = img * (1 - alpha) + alpha * rng.uniform(0.92, 1.0)
    return (img * 255).round().astype(np.uint8)


def build(output_dir: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int,
          bases_dir: Path = BASE_IMAGES, held_out_bases: int = 2) -> dict:
    """Write the task; returns its summary. Labels alternate within each split (exactly
    balanced: chance is 50%), base images cycle through the split's own bases."""
    from PIL import Image

    bases = base_images(bases_dir)
    if not 0 <= held_out_bases < len(bases):
        raise UsageError(f"--held_out_bases must be 0..{len(bases) - 1} with {len(bases)} base images, got {held_out_bases}")
    for name, n in (("--train", n_train), ("--test", n_test)):
        if n < 2:
            raise UsageError(f"{name} must be 2 or more (both answers), got {n}")
    if n_val < 0 or not 32 <= size <= 1024:
        raise UsageError(f"--val must be 0 or more and --image_size 32..1024, got {n_val} and {size}")
    kept_back = held_out(bases, held_out_bases) if held_out_bases else []
    train_bases = [b for b in bases if b not in kept_back]
    test_bases = kept_back or bases  # none kept back: new images of every base (own random stream)
    grays = {p: _load_gray(p) for p in bases}
    images = output_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n, pool in (("train", n_train, train_bases), ("val", n_val, test_bases), ("test", n_test, test_bases)):
        # one generator per split, seeded from (seed, split): adding test images never changes training ones
        rng = np.random.default_rng([seed, int(hashlib.sha256(split.encode()).hexdigest()[:8], 16)])
        rows = []
        for i in range(n):
            present = i % 2 == 0
            base = pool[i // 2 % len(pool)]
            path = images / f"{split}-{i:04d}.png"
            Image.fromarray(make_image(grays[base], rng, size, present)).convert("RGB").save(path)
            rows.append(sample(f"synth-{split}-{i:04d}", [str(path.resolve())], PROMPT, ANSWERS[present]))
        write_jsonl(output_dir / f"{split}.jsonl", rows)
        counts[split] = n
    summary = {"task": "synthetic pleural effusion (present / absent)", "records_per_split": counts,
               "image_size": size, "seed": seed, "answers": list(ANSWERS.values()), "chance": 0.5,
               "train_bases": [p.name for p in train_bases],
               "held_out_bases": [p.name for p in kept_back],
               "lang": "en", "notice": NOTICE + " Synthetic opacities on real X-rays, for a software demonstration."}
    write_json(output_dir / "summary.json", summary)
    return summary


def build_parser():
    p = command_parser(__doc__)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--train", type=int, default=1000, help="training images")
    p.add_argument("--val", type=int, default=0, help="validation images (held-out bases)")
    p.add_argument("--test", type=int, default=400, help="held-out test images")
    p.add_argument("--image_size", type=int, default=64, help="pixels a side (32 x 32 pixels per image token)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bases_dir", default=str(BASE_IMAGES), help="X-rays the images are cut from")
    p.add_argument("--held_out_bases", type=int, default=2,
                   help="base X-rays kept for val/test only; 0: val/test are new images of the same X-rays")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        s = build(Path(args.output_dir), args.train, args.val, args.test, args.image_size, args.seed,
                  Path(args.bases_dir), args.held_out_bases)
        held = ", ".join(s["held_out_bases"]) or "none (new images of the same X-rays)"
        print(f"synthetic task: {s['records_per_split']} records, {s['image_size']} px, held-out bases "
              f"{held} -> {args.output_dir}. {NOTICE}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
