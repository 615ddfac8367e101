"""Shared fixtures: repo paths, the tiny model (built once per session), a converted split."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
BUNDLED_IMAGES = ROOT / "data" / "openi" / "images"
REPORTS = {"zh": ROOT / "data" / "openi" / "openi-zh.json", "en": ROOT / "data" / "openi" / "openi-en.json"}


def run(cmd, env=None, timeout=900, check=True, cwd=ROOT):
    """Run a command, return CompletedProcess; on failure show its output."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The embedded default model, built on demand (seconds) into weights/."""
    run([PYTHON, str(ROOT / "scripts" / "build_tiny_model.py")], timeout=600)
    path = ROOT / "weights" / "tiny-qwen3-vl"
    assert (path / "config.json").is_file()
    return path


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """The bundled X-rays converted to ms-swift JSONL (English reports)."""
    out = tmp_path_factory.mktemp("openi_swift")
    run([PYTHON, str(ROOT / "scripts" / "convert_xray_swift.py"), "--input", str(REPORTS["en"]),
         "--images_dir", str(BUNDLED_IMAGES), "--output_dir", str(out), "--lang", "en", "--quiet"])
    return out
