"""Checked records into train/val/test: by group (study, patient, lesion) so that a group never
straddles two splits, seeded and deterministic, or the dataset's own official split."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from medswift.core.errors import UsageError
from medswift.data.pipeline.checks import Validated, kept_records, validate_records
from medswift.data.pipeline.records import Candidate


@dataclass
class Conversion:
    """What ``check_and_split`` decided: the kept candidates, the images each will read, the split
    of each group (or each record's own, official split), and the checks behind them."""
    kept: list[Candidate]
    images: dict[str, list[str]]  # record id -> the image paths the model should read
    split_of: dict[str, str]  # group -> "train" | "val" | "test"
    validated: Validated
    official: bool = False  # each record keeps the dataset's own split

    def split(self, cand: Candidate) -> str:
        return cand.split if self.official else self.split_of[cand.group]


def check_and_split(candidates: list[Candidate], index: dict[str, Path], out_dir: Path, args, *,
                    images_dirs: list[Path], fixed: dict[str, str] | None = None,
                    official: bool = False) -> Conversion:
    """Decode and check every candidate's images (8-bit copies into ``out_dir/images``), keep the
    first valid record of each id, and split: with ``official`` every record keeps its own
    ``split``; else ``fixed`` groups keep the split given (an official test set) and the other
    groups are split with --val_ratio/--test_ratio and --seed."""
    validated = validate_records(candidates, index, out_dir / "images", images_dirs=images_dirs,
                                 allow_outside=args.allow_outside_images, workers=args.workers,
                                 progress=not args.quiet, cache_dir=out_dir)
    kept = kept_records(candidates, validated)
    if official:
        return Conversion(kept, validated.good, {c.group: c.split for c in kept}, validated, official=True)
    fixed = fixed or {}
    free = [c.group for c in kept if c.group not in fixed]
    test_ratio = 0.0 if "test" in fixed.values() else args.test_ratio  # an official test set is the test set
    split_of = split_groups(free, args.val_ratio, test_ratio, args.seed)
    split_of.update({g: s for g, s in fixed.items() if any(c.group == g for c in kept)})
    return Conversion(kept, validated.good, split_of, validated)


def split_groups(groups: list[str], val_ratio: float, test_ratio: float, seed: int) -> dict[str, str]:
    """Assign each group (study, patient, lesion) to train/val/test. Deterministic for a set and seed.

    Every split with a non-zero ratio gets at least one group when there are at least
    three, so a tiny sample still has something to validate on.
    """
    ordered = sorted(set(groups))
    random.Random(seed).shuffle(ordered)
    n = len(ordered)

    def count(ratio: float) -> int:
        k = round(ratio * n)
        return max(k, 1) if ratio > 0 and n >= 3 else k

    n_test, n_val = count(test_ratio), count(val_ratio)
    if n_test + n_val >= n and n > 0:
        raise UsageError(f"val/test ratios leave no training group out of {n}")
    return {g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(ordered)}


def check_ratios(val_ratio: float, test_ratio: float) -> None:
    for name, value in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if not 0 <= value < 1:
            raise UsageError(f"--{name} must be in [0, 1), got {value}")
