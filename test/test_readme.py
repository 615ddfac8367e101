"""The manual's commands (README.md, then the pages in docs/, in helpers.MANUAL_PAGES order), run
as written, in a scratch checkout.

They run in a copy of the repository's tracked files (with this checkout's .venv and built
tiny model linked in), so what they write lands there and never in the user's results/,
data/ or weights/. The first bash block is the README's first screen and must hold exactly
the two commands: the quick start (run here in full) and the test command (which CI runs;
running it from inside the suite would recurse). Every other command in a bash block of the
README or of a docs page is run too, in order, after the quick start:
* a command naming real weights or data sets (``/models/``, ``/data/``) that this machine
  cannot have must stop with the launcher's one-line error, before any heavy work, unless it
  is a dry run (``DRY_RUN=1``), which prints the command for the machine that has them;
* a command with a ``...`` placeholder is only checked to name a script that exists;
* everything else must succeed.
"""
from __future__ import annotations

import json
import re
import shlex

import pytest

from helpers import (AFTER_QUICKSTART, BLOCKS, OTHERS, QUICKSTART, README, ROOT, TEST_COMMAND, run,
                     run_readme_commands)


def test_first_screen_has_exactly_the_two_commands():
    assert BLOCKS[0] == [QUICKSTART, TEST_COMMAND]
    assert README.index("```bash") < 1200, "the two commands sit on the first screen"
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci
    assert "not for diagnosis" in README[:600]


@pytest.fixture(scope="module")
def quickstart(checkout):
    """The quick start, run once in this file's checkout: its output, and what it wrote there."""
    return run(["bash", "-c", QUICKSTART], env={"CUDA_VISIBLE_DEVICES": ""}, timeout=1800, cwd=checkout)


@pytest.fixture(scope="module")
def after_quickstart(quickstart, checkout) -> dict:
    """The commands that use the quick start's results, run once in the manual's order after it."""
    return run_readme_commands(AFTER_QUICKSTART, checkout)


def test_quickstart_as_written(quickstart, checkout):
    out = quickstart.stdout
    assert "[setup] .venv is up to date" in out, "set-up is a no-op when nothing changed"
    assert "MedSwift-VL quickstart finished. For research only, not for diagnosis." in out
    assert "read 6423 = written 8 (train 5, val 2, test 1) + skipped 6415 (missing image 6415)" in out
    assert "embedded default: learning recipe for the tiny model: LoRA rank 64" in out, "the recipe is stated"
    curve = re.search(r"training loss ([\d.]+) -> ([\d.]+) over 40 logged steps; token accuracy ([\d.]+) -> ([\d.]+)",
                      out)
    assert curve, "the quickstart states what training did"
    loss_first, loss_last, acc_first, acc_last = map(float, curve.groups())
    # The default starts in report language (about half the tokens right); 40 steps fit the
    # bundled reports: the loss falls and the next-token accuracy climbs.
    assert loss_last < loss_first and acc_last > acc_first + 0.2, "the newcomer sees it learn"
    assert re.search(r"app/gradio_app\.py --adapter_path \S+checkpoint-40", out), "the demo command to try next"
    where = dict(re.findall(r"^  (model|converted data|LoRA adapter|predictions|merged model|report card|scored copy)"
                            r"\s+(\S+)", out, re.M))
    assert set(where) == {"model", "converted data", "LoRA adapter", "predictions", "merged model", "report card",
                          "scored copy"}
    # one file is "predictions"; the report card's copy (with control rows) is named as such
    assert len(re.findall(r"^  predictions ", out, re.M)) == 1
    assert where["scored copy"].endswith("eval_val/predictions.jsonl")
    assert "control rows" in out
    card = (checkout / where["report card"]).read_text()
    assert "not for diagnosis" in card and "## Text metrics" in card
    adapter, merged = checkout / where["LoRA adapter"], checkout / where["merged model"]
    assert (adapter / "adapter_model.safetensors").is_file()
    card = (adapter / "README.md").read_text()
    assert "not for diagnosis" in card and "`eval_val/report.md` | 2 |" in card, "the card shows the report card"
    assert "CC BY-NC-SA 4.0" in card, "the bundled data's licence"
    assert (merged / "config.json").is_file()
    predictions = (checkout / where["predictions"]).read_text().splitlines()
    val = (checkout / where["converted data"] / "val.jsonl").read_text().splitlines()
    assert len(predictions) == len(val) == 2
    responses = [json.loads(line)["response"] for line in predictions]
    assert all(len(r.strip()) >= 20 for r in responses), f"report-like text, not empty output: {responses}"


@pytest.mark.parametrize("command", AFTER_QUICKSTART, ids=range(len(AFTER_QUICKSTART)))
def test_commands_after_the_quickstart(command, after_quickstart):
    assert after_quickstart[command] is None, after_quickstart[command]


def test_classification_commands_chain_together():
    """What predict_classification.py writes is what evaluate_classification.py reads, for both splits."""
    def flag(command, name):
        words = shlex.split(command)
        return words[words.index(name) + 1] if name in words else None

    written = {flag(c, "--output_file"): flag(c, "--dataset") for c in OTHERS if "predict_classification.py" in c}
    (evaluate,) = [c for c in OTHERS if "evaluate_classification.py" in c]
    test, val = flag(evaluate, "--predictions"), flag(evaluate, "--val_predictions")
    assert written.get(test, "").endswith("cls_test.jsonl") and written.get(val, "").endswith("cls_val.jsonl")
    labels = {flag(c, "--labels") for c in OTHERS if "_classification.py" in c}
    assert len(labels) == 1, "one labels.json for the whole chain"
