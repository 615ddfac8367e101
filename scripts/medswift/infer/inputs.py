"""What to run inference on: dataset records, image files or a folder sample, plus controls.

Shared by batch inference, the server client and the classifier, so every entry point reads
a converter JSONL, resolves resume keys and builds requests the same way. A record may hold
several images (the views of a study): the request carries one ``<image>`` tag per image.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from pathlib import Path

from medswift.core import prompts
from medswift.core.constants import IMAGE_SUFFIXES, LANGUAGES, MAX_NEW_TOKENS
from medswift.core.errors import UsageError
from medswift.core.files import read_jsonl, read_text_utf8
from medswift.core.images import ImageRejected, open_checked

CONTROLS = ("blank", "noise")
IMAGE_TAG = "<image>"


@dataclass
class Item:
    key: str  # unique per output line: resume skips keys already written
    images: list[str]  # paths as given (several: the views of one study), or ["<blank>"] for controls
    prompt: str  # without <image> tags
    reference: str | None = None
    record_id: str | None = None
    control: str | None = None
    system: str | None = None  # the record's own system prompt (the converter's --system)
    row: dict = field(default_factory=dict)  # the dataset record (the classifier reads its label)
    dataset: str | None = None  # the converter JSONL it came from (its summary.json is the provenance)
    prior_given: bool = False  # the last image is a prior study's view (converter --priors, --prior_image)
    prior_study_id: str | None = None  # the converter's prior_study_id, when the record has one

    @property
    def image(self) -> str:
        return self.images[0]


def canonical(path: str) -> str:
    """The resume key of an image file: its resolved absolute path, so a run with relative paths
    and a resume with absolute ones (or through a symlinked folder) agree on what is done."""
    return str(Path(path).expanduser().resolve())


def _image_path(value) -> str | None:
    value = value.get("path") if isinstance(value, dict) else value  # ms-swift also accepts {"path": ...}
    return value if isinstance(value, str) and value else None


def item_from_record(row, where: str, prompt_override: str | None) -> Item:
    """One converter record (``{"messages": [...], "images": [...], "id": ...}``) as an Item."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        raise UsageError(f"{where} is not a converter record (messages + images)")
    messages = [m for m in row["messages"] if isinstance(m, dict)]
    user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    reference = next((m.get("content") for m in reversed(messages) if m.get("role") == "assistant"), None)
    system = next((m.get("content") for m in messages if m.get("role") == "system"), None)
    images = [_image_path(v) for v in row.get("images") or []] if isinstance(row.get("images"), list) else [None]
    if not isinstance(user, str) or not images or None in images:
        raise UsageError(f"{where} is not a converter record (a user message and image paths as text)")
    tags = user.count(IMAGE_TAG)
    if tags not in (0, len(images)):
        raise UsageError(f"{where}: the prompt has {tags} <image> tags for {len(images)} images")
    rid = row.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise UsageError(f"{where}: 'id' must be a string or a number")
    rid = str(rid) if rid is not None else None
    prior = row.get("prior_study_id")
    if prior is not None and prompt_override:
        raise UsageError(f"{where} has a prior study whose report is in its prompt; --prompt/--template would "
                         "drop it (leave them out for a --priors dataset)")
    prompt = prompt_override or user.replace(IMAGE_TAG, "").strip()
    return Item(key=rid or "|".join(canonical(p) for p in images), images=images, prompt=prompt,
                reference=reference if isinstance(reference, str) else None, record_id=rid,
                system=system if isinstance(system, str) else None, row=row,
                prior_given=prior is not None, prior_study_id=str(prior) if prior is not None else None)


def items_from_dataset(path: Path, prompt_override: str | None) -> list[Item]:
    """Converter JSONL: the user turn is the prompt, the assistant turn the reference."""
    if not path.is_file():
        raise UsageError(f"dataset not found: {path}")
    rows, problems = read_jsonl(path, "dataset")
    if problems:
        raise UsageError(f"{path} {problems[0]} (a converter JSONL is expected)")
    items = [item_from_record(row, f"{path}:{n}", prompt_override) for n, row in rows]
    for it in items:
        it.dataset = str(path.resolve())
    if not items:
        raise UsageError(f"dataset is empty: {path}")
    return items


def items_from_files(paths: list[str], prompt: str) -> list[Item]:
    return [Item(key=canonical(p), images=[p], prompt=prompt) for p in paths]


def sample_folder(folder: Path, num_samples: int | None, seed: int) -> list[str]:
    if not folder.is_dir():
        raise UsageError(f"images folder not found: {folder}")
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if num_samples and num_samples < len(files):
        files = sorted(random.Random(seed).sample(files, num_samples))
    return files


def control_items(items: list[Item]) -> list[Item]:
    """One blank and one noise control per distinct prompt and number of views."""
    out = []
    for prompt, views in sorted({(it.prompt, len(it.images)) for it in items if it.control is None}):
        for kind in CONTROLS:
            tag = kind if views == 1 else f"{kind}x{views}"
            out.append(Item(key=f"<{tag}>::{prompt}", images=[f"<{kind}>"] * views, prompt=prompt, control=kind))
    return out


def control_image(kind: str, seed: int):
    import numpy as np
    from PIL import Image

    size = (512, 512)
    if kind == "blank":
        return Image.new("RGB", size, (0, 0, 0))
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8), mode="RGB")


def load_images(item: Item, seed: int, multi_frame: str = "first") -> tuple[list, list[str]]:
    """``(images, warnings)`` of one item; raises ImageRejected naming the view that failed."""
    if item.control:
        return [control_image(item.control, seed)] * len(item.images), []
    images, warnings = [], []
    for path in item.images:
        try:
            checked = open_checked(path, multi_frame=multi_frame)
        except ImageRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence: one odd file must not end a night's run
            raise ImageRejected("unreadable image", type(exc).__name__) from None
        images.append(checked.image)
        warnings += checked.warnings
    return images, warnings


def request_messages(item: Item, system: str | None) -> list[dict]:
    """Chat messages for one item: the run's --system, else the record's own, then the prompt
    with one <image> tag per view."""
    system = system or item.system
    return ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": IMAGE_TAG * len(item.images) + item.prompt}]


def add_input_args(p: argparse.ArgumentParser) -> None:
    """Inputs, prompt and generation flags; shared by batch inference and the server client."""
    src = p.add_argument_group("inputs (one of)")
    src.add_argument("--dataset", help="converter JSONL: prompts and reference reports come from it")
    src.add_argument("--test_images", nargs="+", help="image files (PNG, JPEG, DICOM...)")
    src.add_argument("--images_dir", help="folder of images; see --num_samples")
    p.add_argument("--num_samples", type=int, help="with --images_dir: a seeded random sample of this size")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--prompt", help="free-text prompt for every image")
    p.add_argument("--template", type=int, help="prompt template id 0-11 in --lang (default 0)")
    p.add_argument("--lang", choices=LANGUAGES, default="zh")
    p.add_argument("--system", help="optional system prompt (default: the dataset record's own, if any)")
    p.add_argument("--prior_image", help="with --test_images/--images_dir: the prior study's frontal view, sent "
                                         "after each image (a --dataset converted with --priors carries its own)")
    p.add_argument("--prior_report_file", help="with --prior_image: a UTF-8 text file holding the prior study's "
                                               "report (a file, so the report never shows in the process list)")
    p.add_argument("--prior_days", type=int, help="with --prior_image: days between the prior and the current study")
    p.add_argument("--max_new_tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top_p", type=float)
    p.add_argument("--repetition_penalty", type=float)
    p.add_argument("--multi_frame", choices=("first", "refuse"), default="first",
                   help="multi-frame DICOM: take the first frame or refuse the file")
    p.add_argument("--hide_reasoning", action="store_true",
                   help="Thinking models: keep only the report in 'response' (the reasoning stays in 'reasoning')")
    p.add_argument("--ablation", action="store_true", help="also run blank and noise images with each prompt")


MAX_PRIOR_REPORT_CHARS = 20_000  # a report is 1-3 K characters; more is not a report


def prior_inputs(args) -> tuple[str, str] | None:
    """``(prior image path, prior report text)`` from --prior_image/--prior_report_file, checked; None
    when no prior was given."""
    image, report_file = getattr(args, "prior_image", None), getattr(args, "prior_report_file", None)
    if (report_file or getattr(args, "prior_days", None) is not None) and not image:
        raise UsageError("--prior_report_file and --prior_days describe a prior study: give its --prior_image too")
    if not image:
        return None
    if args.dataset:
        raise UsageError("--prior_image applies to --test_images/--images_dir; a --dataset record carries its own "
                         "prior (convert it with --priors)")
    if not Path(image).is_file():
        raise UsageError(f"--prior_image not found: {image}")
    if args.prior_days is not None and args.prior_days < 0:
        raise UsageError("--prior_days must be 0 or more")
    report = read_text_utf8(Path(report_file), "--prior_report_file").strip() if report_file else ""
    if len(report) > MAX_PRIOR_REPORT_CHARS:
        raise UsageError(f"--prior_report_file holds {len(report):,} characters; a report has at most "
                         f"{MAX_PRIOR_REPORT_CHARS:,}")
    return image, report


def with_prior(items: list[Item], args, image: str, report: str) -> None:
    """Each item gets the prior's view as its last image and the prior-aware prompt (the chosen
    template's prior-aware variant, or --prompt followed by the marked prior report)."""
    sections = prompts.marked_sections(args.lang, {"report": report}, None)
    for it in items:
        it.images = [*it.images, image]
        if args.prompt:
            it.prompt = f"{args.prompt}\n\n{sections}" if sections else args.prompt
        else:
            it.prompt = prompts.longitudinal_prompt(args.lang, args.template or 0, 1, None, prior={"report": report},
                                                    days=args.prior_days)
        it.prior_given = True


def check_generation_args(args) -> None:
    if args.max_new_tokens < 1:
        raise UsageError("--max_new_tokens must be at least 1")
    if not 0 <= args.temperature <= 2:
        raise UsageError("--temperature must be within 0..2")


def collect_items(args) -> list[Item]:
    chosen = [name for name in ("dataset", "test_images", "images_dir") if getattr(args, name)]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --dataset, --test_images, --images_dir")
    if args.prompt and args.template is not None:
        raise UsageError("give --prompt or --template, not both")
    try:
        prompt = prompts.template(args.lang, args.template) if args.template is not None else args.prompt
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    prior = prior_inputs(args)
    if args.dataset:
        items = items_from_dataset(Path(args.dataset), prompt)
    else:
        files = args.test_images if args.test_images else sample_folder(Path(args.images_dir), args.num_samples,
                                                                          args.seed)
        items = items_from_files(files, prompt or prompts.template(args.lang, 0))
        if prior:
            with_prior(items, args, *prior)
    seen: set[str] = set()
    for it in items:
        if it.key in seen:
            raise UsageError(f"the same input appears more than once: {it.key}")
        seen.add(it.key)
    if args.ablation:
        items += control_items(items)
    return items
