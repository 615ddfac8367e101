"""The README's commands, run as written.

The first bash block is the README's first screen and must hold exactly the two
commands: the quick start (run here in full) and the test command (which CI runs;
running it from inside the suite would recurse). Every other command in a bash
block is run too:
* a command naming real weights or data sets (``/models/``, ``/data/``) that this machine
  cannot have must stop with the launcher's one-line error, before any heavy work;
* a command with a ``...`` placeholder is only checked to name a script that exists;
* everything else must succeed.
"""
from __future__ import annotations

import re
import shlex

import pytest

from conftest import ROOT, run

README = (ROOT / "README.md").read_text(encoding="utf-8")


def bash_blocks() -> list[list[str]]:
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        commands = []
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # trailing comment
            if line and not line.startswith("#"):
                commands.append(line)
        blocks.append(commands)
    return blocks


BLOCKS = bash_blocks()
QUICKSTART, TEST_COMMAND = "bash tools/quickstart.sh", "bash tools/run_tests.sh"
OTHERS = [c for block in BLOCKS[1:] for c in block]


def test_first_screen_has_exactly_the_two_commands():
    assert BLOCKS[0] == [QUICKSTART, TEST_COMMAND]
    assert README.index("```bash") < 1200, "the two commands sit on the first screen"
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci
    assert "not for diagnosis" in README[:600]


def test_quickstart_as_written():
    proc = run(["bash", "-c", QUICKSTART], env={"CUDA_VISIBLE_DEVICES": ""}, timeout=1800)
    out = proc.stdout
    assert "[setup] .venv is up to date" in out, "set-up is a no-op when nothing changed"
    assert "MedSwift-VL quickstart finished. For research only, not for diagnosis." in out
    assert "read 6423 = written 8 (train 5, val 2, test 1) + skipped 6415 (missing image 6415)" in out
    where = dict(re.findall(r"^  (model|converted data|LoRA adapter|predictions|merged model|report card)\s+(\S+)",
                            out, re.M))
    assert set(where) == {"model", "converted data", "LoRA adapter", "predictions", "merged model", "report card"}
    card = (ROOT / where["report card"]).read_text()
    assert "not for diagnosis" in card and "## Text metrics" in card
    adapter, merged = ROOT / where["LoRA adapter"], ROOT / where["merged model"]
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (merged / "config.json").is_file()
    predictions = (ROOT / where["predictions"]).read_text().splitlines()
    val = (ROOT / where["converted data"] / "val.jsonl").read_text().splitlines()
    assert len(predictions) == len(val) == 2


@pytest.mark.parametrize("command", OTHERS, ids=range(len(OTHERS)))
def test_other_readme_commands(command):
    words = shlex.split(command)
    scripts = [w for w in words if w.endswith((".sh", ".py"))]
    assert scripts and all((ROOT / s).is_file() for s in scripts), f"names a missing script: {command}"
    if command == TEST_COMMAND or "..." in command:
        return  # CI runs the test command; placeholders are only checked for their script
    proc = run(["bash", "-c", command], env={"CUDA_VISIBLE_DEVICES": ""}, check=False, timeout=900)
    if re.search(r"[= ]/(models|data)/", command):
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
        assert "not found" in errors[0]
    else:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
