"""A classification converter's outputs: the generative ``{split}.jsonl``, the ``--task_type
seq_cls`` ``cls_{split}.jsonl`` and ``labels.json`` (label order, BCE ``pos_weight``)."""
from __future__ import annotations

from pathlib import Path

from medswift.core import prompts
from medswift.core.constants import MULTI_LABEL as MULTI
from medswift.core.constants import NOTICE
from medswift.core.files import write_json
from medswift.core.labels import Task, format_answer, multi_hot
from medswift.data.pipeline.output_files import sample, write_splits
from medswift.data.pipeline.splits import Conversion


def pos_weights(task: Task, train_labels: list[list[str]]) -> list[float]:
    """negatives / positives per label on the training split (BCE ``pos_weight``); 1.0 when a
    label has no positive, so it neither explodes nor vanishes."""
    n = len(train_labels)
    out = []
    for lab in task.labels:
        pos = sum(lab in labs for labs in train_labels)
        out.append(round((n - pos) / pos, 4) if pos else 1.0)
    return out


def write_task_outputs(task: Task, conv: Conversion, out_dir: Path, lang: str, seed: int) -> dict[str, int]:
    """Write generative ``{split}.jsonl``, head ``cls_{split}.jsonl`` and ``labels.json`` for the
    kept candidates (``fields["labels"]``); returns the records per split."""
    gen: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    cls: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for rec in conv.kept:
        split, labels = conv.split(rec), rec.fields["labels"]
        prompt = prompts.pick(rec.record_id, seed, lang, task.name)
        images = conv.images[rec.record_id]
        gen[split].append(sample(rec.record_id, images, prompt, format_answer(task, labels, lang)))
        label = multi_hot(task, labels) if task.problem_type == MULTI else task.labels.index(labels[0])
        cls[split].append(sample(rec.record_id, images, prompt, label=label))
    per_split = write_splits(out_dir, gen)
    write_splits(out_dir, cls, prefix="cls_")
    train_labels = [r.fields["labels"] for r in conv.kept if conv.split(r) == "train"]
    write_json(out_dir / "labels.json", {
        "task": task.name, "problem_type": task.problem_type, "labels": list(task.labels),
        "labels_zh": [task.zh[lab] for lab in task.labels], "num_labels": len(task.labels),
        "pos_weight": pos_weights(task, train_labels) if task.problem_type == MULTI else None,
        "positives_in_train": {lab: sum(lab in labs for labs in train_labels) for lab in task.labels},
        "notice": NOTICE})
    return per_split
