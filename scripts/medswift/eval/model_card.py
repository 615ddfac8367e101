"""Model cards (README.md) for LoRA checkpoints and merged models, instead of PEFT's template.

Usage (the launchers call it through medswift.posttrain.card, which adds a GRPO/DPO checkpoint's
post-training section and curves; by hand after moving a checkpoint):
    python -m medswift.posttrain.card results/lora/v0-.../checkpoint-573
    python -m medswift.posttrain.card weights/xray-merged --merged_from results/lora/v0-.../checkpoint-573
    python -m medswift.posttrain.card --run results/grpo/v0-...

The card says what a reader of a shared adapter needs: that it is for research, not diagnosis;
the base model; the data (the converter's summary.json beside the training file: format, split,
unit, section, counts) and its licence where the format's is known; the training settings from
ms-swift's args.json (the image budget included, with what plain ``swift infer`` needs); and the
headline metrics of every report card found under the checkpoint (``eval_*/metrics.json``).
"""
from __future__ import annotations

import json
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import write_atomic
from medswift.eval.provenance import read_summary

# What is known of each format's licence; anything else: "see the dataset's own licence".
LICENCES = {
    "openi": "OpenI reports (Indiana University / U.S. National Library of Medicine); the Chinese translation "
             "published by the XrayGLM project is CC BY-NC-SA 4.0, for academic use only: a derivative must keep "
             "that licence and that restriction.",
    "iu_xray": "IU-Xray / OpenI as published by the U.S. National Library of Medicine: check its terms of use.",
    "mimic_cxr": "MIMIC-CXR / MIMIC-CXR-JPG: PhysioNet Credentialed Health Data License 1.5.0. A model trained on "
                 "it may only be shared with credentialed users under the same licence.",
}
HEADLINE = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def _converted_source(train: Path) -> Path:
    """The converter JSONL behind a GRPO view (medswift.posttrain.datasets writes ``<view>.source.json``)."""
    try:
        return Path(json.loads(train.with_suffix(".source.json").read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return train


def data_section(args: dict) -> list[str]:
    train = _first(args.get("dataset"))
    lines = ["## Data", ""]
    if not train:
        return lines + ["Not recorded in args.json.", ""]
    summary, _ = read_summary(_converted_source(Path(str(train))))
    lines.append(f"- training file: `{train}`" + (f"; validation: `{_first(args.get('val_dataset'))}`"
                                                    if args.get("val_dataset") else ""))
    if not summary:
        return lines + ["- no converter summary.json beside it: format and licence unknown", ""]
    fmt = summary.get("format") or summary.get("task") or "n/a"
    lines += [f"- format `{fmt}`, unit `{summary.get('unit', 'n/a')}`, split `{summary.get('split', 'n/a')}`, "
              f"section `{summary.get('section') or 'n/a'}`",
              f"- records per split: {summary.get('records_per_split', 'n/a')} (read {summary.get('read', 'n/a')}, "
              f"skipped {summary.get('skipped', 'n/a')})",
              f"- licence: {LICENCES.get(fmt, 'see the dataset' + chr(39) + 's own licence before sharing this model.')}",
              ""]
    return lines


def lora_shape(args: dict, checkpoint: Path | None) -> str:
    """Rank / alpha of the adapter as saved (adapter_config.json): a GRPO/DPO run continues the SFT
    adapter, so its args.json holds ms-swift's defaults (8 / 32), not the adapter's shape."""
    try:
        config = json.loads((checkpoint / "adapter_config.json").read_text(encoding="utf-8")) if checkpoint else {}
    except (OSError, ValueError):
        config = {}
    if isinstance(config, dict) and config.get("r") is not None:
        return f"{config.get('r')} / {config.get('lora_alpha')}"
    return f"{args.get('lora_rank')} / {args.get('lora_alpha')}"


def training_section(args: dict, checkpoint: Path | None = None) -> list[str]:
    budget = (args.get("model_kwargs") or {}).get("IMAGE_MAX_TOKEN_NUM")
    rows = [("tuner", args.get("tuner_type")), ("LoRA rank / alpha", lora_shape(args, checkpoint)),
            ("target modules", args.get("target_modules")), ("ViT / aligner frozen",
                                                             f"{args.get('freeze_vit')} / {args.get('freeze_aligner')}"),
            ("learning rate", args.get("learning_rate")), ("epochs / max steps",
                                                           f"{args.get('num_train_epochs')} / {args.get('max_steps')}"),
            ("batch", f"{args.get('per_device_train_batch_size')} per device x {args.get('gradient_accumulation_steps')} "
                      "accumulation"), ("max length", args.get("max_length")), ("dtype", args.get("torch_dtype")),
            ("image budget (IMAGE_MAX_TOKEN_NUM)", budget or "not recorded (ms-swift's default)"),
            ("seed", args.get("seed")), ("ms-swift", args.get("swift_version"))]
    lines = ["## Training", "", "| setting | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    if budget:
        lines += ["", f"Inference must use the same image budget. The toolkit's launchers, `scripts/batch_infer.py`, "
                      f"the demo and the server read it from this checkpoint's args.json; plain ms-swift does not "
                      f"(it would use 16,384 tokens), so give it: `IMAGE_MAX_TOKEN_NUM={budget} swift infer "
                      f"--adapters <this folder>`."]
    return lines + [""]


def curve_line(checkpoint: Path) -> str:
    """Training loss and token accuracy at the first and last logged step up to this checkpoint,
    from ms-swift's logging.jsonl in the run folder (the curves themselves: images/ beside it)."""
    def step_of(row: dict) -> int | None:  # ms-swift logs "12/40"
        done = str(row.get("global_step/max_steps", "")).split("/")[0]
        return int(done) if done.isdigit() else None

    rows = []
    try:
        for line in (checkpoint.parent / "logging.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if isinstance(row, dict) and isinstance(row.get("loss"), (int, float)):
                rows.append(row)
    except (OSError, ValueError):
        return ""
    step = checkpoint.name.split("-", 1)[-1]
    if step.isdigit():  # a checkpoint's curve ends at its own step, not at the run's last
        rows = [r for r in rows if step_of(r) is not None and step_of(r) <= int(step)] or rows
    if not rows:
        return ""
    first, last = rows[0], rows[-1]
    acc = (f"; token accuracy {first['token_acc']:.3f} -> {last['token_acc']:.3f}"
           if isinstance(first.get("token_acc"), (int, float)) and isinstance(last.get("token_acc"), (int, float))
           else "")
    return (f"training loss {first['loss']:.3f} -> {last['loss']:.3f} over {len(rows)} logged steps{acc} "
            f"(curves: {checkpoint.parent / 'images'})")


def metrics_section(folder: Path) -> list[str]:
    cards = sorted(folder.glob("eval_*/metrics.json"))
    if not cards:
        return ["## Evaluation", "", "No report card yet: `bash tools/evaluate_checkpoint.sh` writes one into "
                "`eval_<split>/`.", ""]
    lines = ["## Evaluation (report cards under this folder)", "",
             "| report card | records | " + " | ".join(HEADLINE) + " | finding F1 micro (rule-based) |",
             "| --- | --- | " + " | ".join("---" for _ in HEADLINE) + " | --- |"]
    for path in cards:
        m = _json(path)
        text = m.get("text") or {}
        scheme = m.get("primary_tokenisation") if m.get("primary_tokenisation") in text else next(iter(text), None)
        values = text.get(scheme, {}) if scheme else {}
        cells = [f"{values[k]:.3f}" if isinstance(values.get(k), (int, float)) else "n/a" for k in HEADLINE]
        f1 = (m.get("findings") or {}).get("micro_f1")
        f1_cell = f"{f1:.3f}" if isinstance(f1, (int, float)) else "n/a"
        lines.append(f"| `{path.parent.name}/report.md` | {m.get('n', 'n/a')} | " + " | ".join(cells) + f" | {f1_cell} |")
    for path in cards:  # box cards (scripts/convert_grounding.py data): their own headline
        m = _json(path)
        if m.get("task") == "grounding":
            lines.append(f"\nBox card `{path.parent.name}/report.md`: mAP@0.5 {m.get('map50')}, mAP@[.5:.95] "
                         f"{m.get('map')}, mean IoU {m.get('mean_iou')}, not box JSON {m.get('invalid_share')}.")
    blind = [p.parent.name for p in cards if (_json(p).get("ablation") or {}).get("reads_the_image") is False]
    if blind:
        lines += ["", f"**Warning:** in {', '.join(blind)} the model's reports barely depend on the image "
                      "(see the report card's ablation)."]
    return lines + [""]


def write_card(folder: Path, merged_from: Path | None = None, stage_sections: tuple = ()) -> Path:
    """The card of a checkpoint or merged model; ``stage_sections`` are functions (args, checkpoint)
    -> lines for the stages after supervised training (medswift.posttrain.card.section)."""
    folder = Path(folder)
    source = merged_from or folder
    args = _json(source / "args.json")
    if not args:
        raise UsageError(f"{source / 'args.json'} not found or unreadable: is it an ms-swift checkpoint?")
    kind = "merged model (base + LoRA adapter in one folder)" if merged_from else "LoRA adapter"
    lines = [f"# MedSwift-VL {kind}: {folder.name}", "",
             f"> **{NOTICE}** This model writes text about medical images. It is not a medical device and its "
             "output is not a clinical opinion; a radiologist must read every image.", "",
             f"- base model: `{args.get('model')}` (`{args.get('model_type', 'n/a')}`)",
             f"- trained with MedSwift-VL's launchers around ms-swift; run folder `{args.get('output_dir')}`"]
    if merged_from:
        lines.append(f"- merged from the adapter `{merged_from}`")
    if curve_line(source):
        lines.append(f"- {curve_line(source)}")
    lines.append("")
    lines += data_section(args) + training_section(args, source)
    for stage_section in stage_sections:
        lines += stage_section(args, source)
    lines += metrics_section(source)
    lines += [f"_{NOTICE}_", ""]
    path = folder / "README.md"
    write_atomic(path, "\n".join(lines))
    return path


def write_run_cards(run_dir: Path, stage_sections: tuple = (), run_plots: tuple = ()) -> list[Path]:
    """A card in every checkpoint of a training run folder (ms-swift's v<N>-<time>); each of
    ``run_plots`` then draws into the run folder (a GRPO or DPO run's curves)."""
    cards = [write_card(p, stage_sections=stage_sections) for p in sorted(Path(run_dir).glob("checkpoint-*"))
             if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    for plot in run_plots:
        plot(Path(run_dir))
    return cards


def main(argv: list[str] | None = None, stage_sections: tuple = (), run_plots: tuple = (),
         prog: str = "python -m medswift.posttrain.card") -> int:
    """The model-card command; medswift.posttrain.card runs it with the post-training stage."""
    p = command_parser(__doc__, prog=prog)
    p.add_argument("folder", help="a checkpoint, a merged model, or (with --run) a training run folder")
    p.add_argument("--merged_from", help="the adapter a merged model was made from")
    p.add_argument("--run", action="store_true", help="FOLDER is a run: write a card into each checkpoint")
    args = p.parse_args(argv)

    def body() -> int:
        written = write_run_cards(Path(args.folder), stage_sections, run_plots) if args.run else \
            [write_card(Path(args.folder), Path(args.merged_from) if args.merged_from else None, stage_sections)]
        for path in written:
            print(f"model card: {path}")
        return 0

    return run_cli(body)

