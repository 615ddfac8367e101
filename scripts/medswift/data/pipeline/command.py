"""A converter's command line: the flags every converter has, and ``main``: parse, convert,
write summary.json, print the summary and the training command; a user mistake or an output
the system refuses is one ``error:`` line (exit 2).

The pipeline a converter runs: records (its reader) -> checks -> splits -> outputs.
For research only, not for diagnosis.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import LANGUAGES, NOTICE
from medswift.core.errors import run_cli
from medswift.core.files import write_json
from medswift.data.pipeline.last_conversion import REPORT_LAUNCHERS, remember_conversion, training_commands
from medswift.data.pipeline.output_files import summary_line
from medswift.data.pipeline.splits import check_ratios


def converter_parser(doc: str):
    """The argument parser of a converter (see medswift.core.cli)."""
    return command_parser(doc)


def add_common_args(p, output_dir: str, val_ratio: float, test_ratio: float, lang: str = "en") -> None:
    """Flags every converter has: output folder (default data/<output_dir>), language, split, seed,
    workers, strictness."""
    from medswift.core.constants import DATA

    p.add_argument("--output_dir", default=str(DATA / output_dir))
    p.add_argument("--lang", choices=LANGUAGES, default=lang, help="language of prompts and answers")
    p.add_argument("--val_ratio", type=float, default=val_ratio)
    p.add_argument("--test_ratio", type=float, default=test_ratio)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=default_workers(), help="processes that decode images")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any record is skipped")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow_outside_images", action="store_true",
                   help="accept image paths that resolve outside --images_dir (symlinks, ../, absolute paths)")


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def converter_entry(build_parser, convert, outputs: str, launchers: tuple[str, ...] = REPORT_LAUNCHERS):
    """A reader's ``main(argv=None) -> int``: the shared flow of ``converter_main``."""
    def main(argv: list[str] | None = None) -> int:
        return converter_main(build_parser(), convert, argv, outputs, launchers)
    return main


def converter_main(parser, convert, argv: list[str] | None, outputs: str,
                   launchers: tuple[str, ...] = REPORT_LAUNCHERS) -> int:
    """The converters' ``main``: parse, convert, report; user mistakes are one ``error:`` line (exit 2).

    ``outputs`` names what was written, with ``{out}`` standing for --output_dir; ``launchers``
    the training launchers its output feeds (the converter prints their exact command lines).
    """
    args = parser.parse_args(argv)
    out = Path(args.output_dir)

    def convert_and_record() -> int:
        check_ratios(args.val_ratio, args.test_ratio)
        summary = convert(args)
        write_json(out / "summary.json", summary)
        return finish(summary, out, args.strict, outputs.format(out=out), launchers)

    return run_cli(convert_and_record)


def finish(summary: dict, out_dir: Path, strict: bool, outputs: str,
           launchers: tuple[str, ...] = REPORT_LAUNCHERS) -> int:
    """Print the summary (summary.json is written by converter_main) and decide the exit code."""
    print(summary_line(summary))
    print(f"wrote {outputs}; skips listed in {out_dir / 'skipped.tsv'}")
    if summary.get("stale_copies_removed"):
        print(f"removed {summary['stale_copies_removed']} 8-bit copies an earlier run left in {out_dir / 'images'}")
    if summary["written"]:
        commands = training_commands(out_dir, launchers)
        print(f"train on it: {commands[0]}")
        for other in commands[1:]:
            print(f"         or: {other}")
        remember_conversion(out_dir, training_commands(out_dir, launchers, relative=False), summary)
    print(NOTICE)
    if summary["written"] == 0:
        print("error: no record was written; see skipped.tsv for the reasons", file=sys.stderr)
        return 1
    if strict and summary["skipped"]:
        print(f"error: --strict and {summary['skipped']} records were skipped", file=sys.stderr)
        return 1
    return 0
