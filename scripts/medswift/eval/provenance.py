"""Where a report card's numbers come from: the predictions file and its sha256, the model,
adapter, backend and generation settings the prediction rows name, the dataset file they came
from and, when the converter's ``summary.json`` sits beside that file, what the converter says
about it; then what scored them: the toolkit version, the metric packages' versions (and Java's,
which runs pycocoevalcap's PTB tokenizer and METEOR), the date, the row counts and the protocol.

Nothing here may stop a report card: a missing dataset file, a missing, unreadable, huge or
odd summary, a package without metadata each become a sentence or "n/a" in the card, never an
exception.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path

from medswift.core.constants import ROOT

ROW_KEYS = ("model", "adapter", "backend", "generation")
# Read with .get(): converters gain these keys over time; a missing one shows as "n/a".
SUMMARY_KEYS = ("format", "task", "split", "unit", "section", "read", "written", "records_per_split")
SUMMARY_MAX_BYTES = 1 << 20
MIXED = "mixed"
# The packages whose code produces the numbers (jieba: Chinese words; scikit-learn: finding F1).
METRIC_PACKAGES = ("pycocoevalcap", "numpy", "scikit-learn", "jieba")


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def agreed(rows: list[dict], key: str):
    """The rows' common value of ``key``; ``"mixed"`` when they disagree (None when none has it)."""
    values = {_canonical(r.get(key)): r.get(key) for r in rows}
    return next(iter(values.values())) if len(values) == 1 else MIXED


def read_summary(dataset: Path) -> tuple[dict | None, str]:
    """(the converter summary beside ``dataset`` or None, a sentence saying what was found)."""
    path = dataset.parent / "summary.json"
    try:
        if not path.is_file():
            return None, f"no summary.json beside the dataset file ({path})"
        if path.stat().st_size > SUMMARY_MAX_BYTES:
            return None, f"{path} is larger than 1 MB; not read"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} could not be read ({type(exc).__name__})"
    if not isinstance(data, dict):
        return None, f"{path} is not a JSON object"
    return data, f"converter summary: {path}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def toolkit_version() -> str:
    """This checkout's version.py (an installed copy of another checkout may differ), else the
    installed package's metadata."""
    try:
        found = re.search(r"__version__\s*=\s*[\"']([^\"']+)", (ROOT / "version.py").read_text(encoding="utf-8"))
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        return metadata.version("medswift-vl")
    except metadata.PackageNotFoundError:
        return "unknown"


def package_versions(names=METRIC_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def java_version() -> str | None:
    """``java -version``'s first line (it writes to stderr); None without Java."""
    try:
        proc = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[0].strip() if lines else None


def scoring(predictions: Path, controls: int, java: bool) -> dict:
    """The predictions file's identity and what scores it; ``java`` when English is scored."""
    return {"predictions_file": str(predictions), "predictions_sha256": file_sha256(predictions),
            "predictions_bytes": predictions.stat().st_size, "controls": controls,
            "toolkit": {"name": "MedSwift-VL", "version": toolkit_version()},
            "packages": package_versions(), "java": java_version() if java else None,
            "evaluated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def protocol_text(proto: dict) -> str:
    if proto["name"] != "r2gen":
        return "default (PTB tokens for English; characters and jieba words for Chinese)"
    cut = proto["reference_max_tokens"]
    return (f"r2gen ({proto['dataset_style']} cleaning, "
            + (f"references cut to {cut} tokens)" if cut else "references not cut)"))


def collect(scored: list[dict], problems: list[str]) -> dict:
    out = {key: agreed(scored, key) for key in ROW_KEYS}
    datasets = sorted({r["dataset"] for r in scored if isinstance(r.get("dataset"), str) and r["dataset"]})
    unnamed = sum(1 for r in scored if not (isinstance(r.get("dataset"), str) and r["dataset"]))
    out.update(rows_scored=len(scored), problems=len(problems), summary=None)
    if not datasets:
        out.update(dataset=None, dataset_note="the prediction rows name no dataset file")
    elif len(datasets) > 1 or unnamed:
        out.update(dataset=MIXED, datasets=datasets[:20],
                   dataset_note=f"rows come from {len(datasets)} dataset files"
                                + (f" and {unnamed} rows name none" if unnamed else "") + "; no single summary")
    else:
        dataset = Path(datasets[0])
        summary, note = read_summary(dataset)
        if not dataset.is_file():
            note = f"dataset file not found here; {note}"
        out.update(dataset=str(dataset), dataset_note=note,
                   summary=None if summary is None else {k: summary.get(k) for k in SUMMARY_KEYS})
    return out


def show(value, limit: int = 200) -> str:
    """One table cell: n/a for missing, compact JSON for structures, no newlines or pipes."""
    if value is None:
        return "n/a"
    text = value if isinstance(value, str) else _canonical(value)
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def markdown(prov: dict) -> list[str]:
    lines = ["| | |", "|---|---|", f"| predictions file | {show(prov['predictions_file'])} |",
             f"| predictions sha256 | {prov['predictions_sha256']} ({prov['predictions_bytes']} bytes) |"]
    lines += [f"| {key} | {show(prov[key])} |" for key in ROW_KEYS]
    lines.append(f"| dataset file | {show(prov['dataset'])} |")
    summary = prov["summary"] or {}
    lines += [f"| dataset {key} | {show(summary.get(key))} |" for key in SUMMARY_KEYS]
    lines.append(f"| rows scored / control rows / lines not scored | {prov['rows_scored']} / {prov['controls']} / "
                 f"{prov['problems']} |")
    lines.append(f"| protocol | {show(prov['protocol'])} |")
    lines.append(f"| toolkit | {prov['toolkit']['name']} {prov['toolkit']['version']} |")
    lines.append("| metric packages | " + ", ".join(f"{k} {v or 'not installed'}" for k, v in prov["packages"].items())
                 + " |")
    lines.append(f"| java (PTB tokenizer, METEOR) | {show(prov['java'])} |")
    lines.append(f"| evaluated at (UTC) | {prov['evaluated_at']} |")
    lines += ["", f"Dataset: {show(prov['dataset_note'], 400)}."]
    return lines
