"""Where the last conversion wrote and the exact command that trains on it, remembered so that
a launcher that finds no data can name it (tools/swift/common.sh asks ``last_conversion_hint``)."""
from __future__ import annotations

import datetime
import json
import os
import shlex
from pathlib import Path

from medswift.core.constants import RESULTS, ROOT
from medswift.core.files import write_json


# The launcher that trains on a converter's output, and where the last conversion is remembered so
# that a launcher that finds no data can name it (tests point MEDSWIFT_STATE_DIR elsewhere).
REPORT_LAUNCHERS = ("finetune_qwen3vl_lora.sh",)


CLASSIFICATION_LAUNCHERS = ("finetune_qwen3vl_cls.sh", "finetune_qwen3vl_lora.sh")


STATE_ENV = "MEDSWIFT_STATE_DIR"


def last_conversion_file() -> Path:
    return Path(os.environ.get(STATE_ENV) or RESULTS) / ".last_conversion.json"


def _shown(path: Path, relative: bool) -> str:
    """A path as the user would type it here: relative under the working folder, else absolute."""
    path = Path(path).resolve()
    if relative:
        try:
            return str(path.relative_to(Path.cwd().resolve()))
        except ValueError:
            pass
    return str(path)


def training_commands(out_dir: Path, launchers: tuple[str, ...], relative: bool = True) -> list[str]:
    """The exact lines that train on ``out_dir`` (first: the usual one); absolute paths work anywhere."""
    return [f"DATA_DIR={shlex.quote(_shown(out_dir, relative))} "
            f"bash {shlex.quote(_shown(ROOT / 'tools' / 'swift' / name, relative))}" for name in launchers]


def remember_conversion(out_dir: Path, commands: list[str], summary: dict) -> None:
    """Best effort: a workspace that cannot be written costs this hint, not the conversion."""
    record = {"output_dir": str(Path(out_dir).resolve()), "commands": commands, "written": summary.get("written"),
              "format": summary.get("format") or summary.get("task"),
              "when": datetime.datetime.now().isoformat(timespec="seconds")}
    try:
        path = last_conversion_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, record)
    except OSError:
        pass


def last_conversion_hint() -> str:
    """What a launcher that finds no data tells the user: the last conversion and its command."""
    try:
        record = json.loads(last_conversion_file().read_text(encoding="utf-8"))
        return f"the last conversion ({record['when']}) wrote {record['output_dir']}: {record['commands'][0]}"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "convert data first: python scripts/convert_xray_swift.py --help"
