"""The manual's commands (README and docs/) other than the quick start and the benchmarks, run as
written and in the manual's order in their own scratch checkout (see test_readme.py for the rules)."""
from __future__ import annotations

import json

import pytest

from helpers import COMMANDS, OTHERS, run_readme_commands


@pytest.fixture(scope="module")
def ran(checkout) -> dict:
    """Every command, run once in the manual's order (a later one uses what an earlier one wrote),
    whatever order the tests below run in."""
    return run_readme_commands(COMMANDS, checkout)


@pytest.mark.parametrize("command", COMMANDS, ids=range(len(COMMANDS)))
def test_readme_command(command, ran):
    assert ran[command] is None, ran[command]


def test_readme_training_command_trained_with_validation(checkout, ran):
    """`bash tools/swift/finetune_qwen3vl_lora.sh --max_steps 2` (docs/training.md): the one-GPU launcher's
    defaults reached ms-swift and the validation split was evaluated."""
    assert "bash tools/swift/finetune_qwen3vl_lora.sh --max_steps 2" in OTHERS
    (ckpt,) = [p for p in (checkout / "results" / "lora").glob("v*/checkpoint-*") if not p.name.endswith("-merged")]
    assert ckpt.name == "checkpoint-2" and (ckpt / "adapter_model.safetensors").is_file()
    args = json.loads((ckpt / "args.json").read_text())
    assert args["tuner_type"] == "lora" and args["lora_rank"] == 8 and args["freeze_vit"] is True
    log = [json.loads(line) for line in (ckpt.parent / "logging.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in log), "validation split was evaluated"
