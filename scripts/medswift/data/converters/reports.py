"""Convert chest X-ray reports + images into ms-swift JSONL: one converter, one reader per format.

Usage (the bundled OpenI sample; R2Gen's IU-Xray file; MIMIC-CXR-JPG with the MIMIC-CXR reports):
    python scripts/convert_xray_swift.py --input data/openi/openi-zh.json \
        --images_dir data/openi/images --output_dir data/openi_swift --lang zh
    python scripts/convert_xray_swift.py --input /data/iu_xray/annotation.json \
        --images_dir /data/iu_xray/images --output_dir data/iu_xray_swift --lang en
    python scripts/convert_xray_swift.py --input /data/mimic-cxr-jpg/2.0.0 \
        --reports_dir /data/mimic-cxr-reports --output_dir data/mimic_cxr_swift --lang en

``--input`` is read by the reader its format names (detected from the file or folder,
``--format NAME`` forces one; see ``READERS`` and the reader contract in ``medswift.data.readers.contract``). Each record becomes one sample: with
``--unit study`` (the default for readers that know studies) the views of a study are one
sample with several images, frontal first (``--max_views``, default 2), the way the literature
treats IU-Xray and MIMIC-CXR; with ``--unit image`` every image is a sample (the reference's
way, the default for its own formats). ``--split official`` keeps the dataset's own split when
it has one (the default then), ``seeded`` splits studies or patients with --val_ratio,
--test_ratio and --seed. ``--section findings|impression|both`` picks the target for readers
with report sections.

``--priors`` (readers with study dates: MIMIC-CXR; IU-Xray/OpenI have none and say so) makes
longitudinal samples: each study's prior is the latest study of the same patient from a strictly
earlier date (Libra's rule; one day's studies share one prior); the images are the current views,
then the prior's frontal view; the prior's findings and impression follow the request in a marked
section; records carry ``prior_study_id`` (null without a prior) and ``days_since_prior``.
``--context`` adds the current report's indication, technique and comparison (never its findings).
See docs/priors.md.

Outputs in ``--output_dir``: ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (ms-swift's
``{"messages": [...], "images": [...]}``, one ``<image>`` tag per view), ``skipped.tsv`` (every
record not written, with its reason), ``warnings.tsv`` (records written that deserve a look),
``summary.json`` (counts and what was chosen: format, unit, split, section) and ``images/``
(8-bit copies of images that needed normalising). Same inputs and seed give byte-identical
outputs. Images must lie inside the images folder (after following symlinks) unless
``--allow_outside_images`` is given.

For research only, not for diagnosis.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from medswift.core import prompts, thinking
from medswift.core.errors import UsageError
from medswift.core.files import json_line
from medswift.data.readers import iu_xray
from medswift.data.readers import llamafactory
from medswift.data.readers import mimic_cxr
from medswift.data.readers import openi
from medswift.data.readers import r2gen_annotation
from medswift.data.pipeline.command import add_common_args, converter_entry, converter_parser
from medswift.data.pipeline.output_files import message, prepare_output_dir, sample, summarise, write_lists, write_splits
from medswift.data.readers.contract import Reader
from medswift.data.pipeline.records import Reading
from medswift.data.pipeline.splits import check_and_split
from medswift.data.pipeline.studies import SECTIONS, Prior, choose_section, link_priors, to_units

# Format name -> reader (see medswift.data.readers.contract), tried in this order when detecting: the most
# specific layouts first, openi last (it claims any JSON file no other reader claims).
READERS: dict[str, Reader] = {reader.NAME: reader for reader in (
    mimic_cxr,
    iu_xray,
    r2gen_annotation,
    llamafactory,
    openi,
)}
OUTPUTS = "{out}/train.jsonl, {out}/val.jsonl, {out}/test.jsonl"


def pick_reader(args) -> Reader:
    path = Path(args.input)
    if args.format:
        return READERS[args.format]
    if not path.exists():
        raise UsageError(f"input file not found: {path}")
    for module in READERS.values():
        if module.detect(path):
            return module
    raise UsageError(f"{path}: no reader recognises it; give --format ({', '.join(READERS)})")


def target_text(fields: dict, reading: Reading, section: str) -> tuple[str, str | tuple[str, str] | None]:
    if reading.sections:
        return choose_section(fields, section)
    report = fields.get("report") or ""
    return report, None if report else "empty report"


def convert(args) -> dict:
    if args.max_views < 1:
        raise UsageError("--max_views must be at least 1")
    module = pick_reader(args)
    if args.views and not module.VIEWS:
        raise UsageError(f"the {module.NAME} format has no view positions; leave --views out")
    check_longitudinal(args, module)
    reading = module.read(module.Options.from_args(args))
    if not reading.candidates:
        raise UsageError(f"{args.input} holds no records")
    unit = args.unit or (reading.default_unit if reading.studies else "image")
    split = args.split or ("official" if reading.official else "seeded")
    if split == "official" and not reading.official:
        raise UsageError(f"the {module.NAME} format has no official split; use --split seeded")
    if args.section and not reading.sections:
        raise UsageError(f"the {module.NAME} format has no report sections; leave --section out")
    if args.priors and unit != "study":
        raise UsageError("--priors links studies; use --unit study (the default for this format)")
    section = args.section or "findings"
    candidates, unit_notes = to_units(reading.candidates, unit, args.max_views) if reading.studies \
        else (reading.candidates, [])
    for cand in candidates:  # the target text of each sample (a study once, not per view), or why none
        if not cand.problem:
            cand.fields["target"], problem = target_text(cand.fields, reading, section)
            if args.priors:  # a study without the chosen section may still be a prior: listed after linking
                cand.fields["target_problem"] = problem
            else:
                cand.problem = problem
    out_dir = Path(args.output_dir)
    prepare_output_dir(out_dir)
    conv = check_and_split(candidates, reading.index, out_dir, args, images_dirs=reading.images_dirs,
                           official=split == "official")
    conv.validated.warnings += [note for note in unit_notes if note[0] in conv.images]
    prior_of = attach_priors(conv) if args.priors else {}

    rows: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    template_use: Counter = Counter()
    for rec in conv.kept:  # input order, so outputs are stable and easy to diff
        prompt = rec.fields.get("prompt") if (args.keep_source_prompt or reading.own_prompts) else None
        if not prompt:
            idx = prompts.pick_index(rec.record_id, args.seed, args.lang)
            template_use[idx] += 1
            views = conv.images[rec.record_id]  # a study sample speaks of the views it shows
            positions = rec.fields.get("view_positions") if len(views) == len(rec.images) else None
            prior = prior_of.get(rec.record_id)
            prompt = prompts.longitudinal_prompt(
                args.lang, idx, len(views), positions, prior=prior and vars(prior), days=prior and prior.days,
                context=rec.fields if args.context else None)
        answer = thinking.join(rec.fields.get("reasoning"), rec.fields["target"])
        images, extra = sample_extras(rec, conv, prior_of, args.priors)
        row = sample(rec.record_id, images, prompt, answer, args.system, **extra)
        for question, reply in rec.fields.get("later_turns") or ():  # a conversation's later pairs (llamafactory)
            row["messages"] += [message("user", question), message("assistant", reply)]
        rows[conv.split(rec)].append(row)
    per_split = write_splits(out_dir, rows)
    lists = write_lists(out_dir, conv.validated)
    copy_root = (out_dir / "images").resolve()
    views = Counter(len(conv.images[r.record_id]) + (1 if prior_of.get(r.record_id) else 0) for r in conv.kept)
    return summarise(
        "report", len(candidates), per_split, conv, lists, args, "studies" if unit == "study" else "groups",
        input_records=len(reading.candidates), format=module.NAME, unit=unit, split=split, section=section if reading.sections else None,
        max_views=args.max_views if unit == "study" else 1, images_per_record=dict(sorted(views.items())),
        input=str(Path(args.input).resolve()), images_dirs=[str(d.resolve()) for d in reading.images_dirs],
        val_ratio=args.val_ratio, test_ratio=args.test_ratio, **reading.extra,
        **priors_summary(args, prior_of, conv.kept),
        normalised_copies=sum(1 for paths in conv.images.values() for v in paths if Path(v).parent == copy_root),
        templates_used={str(k): template_use[k] for k in sorted(template_use)},
        content_sha256=hashlib.sha256("".join(json_line(r) + "\n" for s in ("train", "val", "test")
                                              for r in rows[s]).encode()).hexdigest())


def check_longitudinal(args, module: Reader) -> None:
    """--priors and --context need a reader that knows study dates / report context sections."""
    if args.priors and not getattr(module, "DATES", False):
        raise UsageError(f"--priors needs study dates and the {module.NAME} format has none (IU-Xray/OpenI reports "
                         "carry no date, so no prior can be chosen); MIMIC-CXR (--format mimic_cxr) has them")
    if args.context and not getattr(module, "CONTEXT", False):
        raise UsageError(f"--context needs indication/technique/comparison sections and the {module.NAME} format "
                         "has none; MIMIC-CXR (--format mimic_cxr) has them")


def attach_priors(conv) -> dict[str, Prior | None]:
    """Link every checked study to its prior (medswift.data.pipeline.studies.link_priors), then list the
    studies kept only to serve as priors (no chosen section) as skips with their reason."""
    prior_of, notes = link_priors(conv.kept, conv.images, conv.validated.warnings, conv.split)
    conv.validated.warnings += notes
    written = []
    for rec in conv.kept:
        problem = rec.fields.get("target_problem")
        if problem:
            conv.validated.skipped.append((rec.record_id, *(problem if isinstance(problem, tuple)
                                                            else (problem, rec.image))))
        else:
            written.append(rec)
    conv.kept[:] = written
    return prior_of


def sample_extras(rec, conv, prior_of: dict, priors: bool) -> tuple[list[str], dict]:
    """A sample's images (its checked views, then its prior's frontal view) and extra fields
    (meta; with --priors, prior_study_id and days_since_prior, null when it has no prior)."""
    images, extra = list(conv.images[rec.record_id]), {"meta": rec.fields["meta"]} if rec.fields.get("meta") else {}
    if priors:
        prior = prior_of.get(rec.record_id)
        images += [prior.image] if prior else []
        extra.update(prior_study_id=prior.study if prior else None, days_since_prior=prior.days if prior else None)
    return images, extra


def priors_summary(args, prior_of: dict, written: list) -> dict:
    """summary.json's ``priors``: the rule, --context, and how many written samples have a prior."""
    if not args.priors:
        return {}
    with_prior = sum(1 for rec in written if prior_of.get(rec.record_id))
    return {"priors": {"rule": "latest study of the same patient from a strictly earlier date (Libra)",
                       "context": bool(args.context), "with_prior": with_prior,
                       "without_prior": len(written) - with_prior}}


def build_parser():
    p = converter_parser(__doc__)
    p.add_argument("--input", "--source_json", "--annotations", dest="input", required=True,
                   help="reports file or folder (its format is detected; see --format)")
    p.add_argument("--format", choices=list(READERS), help="force a reader instead of detecting the format")
    p.add_argument("--images_dir", help="folder holding the image files (the paths in the input are relative to it)")
    for module in READERS.values():  # each reader's own flags (--reports_dir, --views, --dataset_info...)
        module.add_args(p)
    p.add_argument("--unit", choices=("study", "image"),
                   help="one sample per study (its views as several images) or per image "
                        "(default: study for readers that know studies, image for the reference's formats)")
    p.add_argument("--max_views", type=int, default=2, help="--unit study: views per study, frontal first")
    p.add_argument("--split", choices=("official", "seeded"),
                   help="the dataset's own split (default when it has one) or a seeded split by study/patient")
    p.add_argument("--section", choices=SECTIONS, help="readers with report sections: the target (default findings)")
    p.add_argument("--system", default=None, help="optional system prompt for every record")
    p.add_argument("--priors", action="store_true",
                   help="longitudinal samples (readers with study dates: mimic_cxr): each study's prior study "
                        "(latest of the patient from an earlier date) adds its frontal view as the last image "
                        "and its findings/impression to the prompt; records carry prior_study_id, days_since_prior")
    p.add_argument("--context", action="store_true",
                   help="add the current report's indication, technique and comparison sections to the prompt "
                        "(never its findings)")
    p.add_argument("--keep_source_prompt", action="store_true",
                   help="use the record's own prompt (reference format) instead of the templates")
    add_common_args(p, "openi_swift", val_ratio=0.05, test_ratio=0.05, lang="zh")
    return p


main = converter_entry(build_parser, convert, OUTPUTS)
