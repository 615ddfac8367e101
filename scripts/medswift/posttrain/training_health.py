"""Training health: a NaN, infinite or exploded loss, gradient norm, reward or KL stops the run.

A trainer that meets NaN keeps going and writes checkpoints that generate garbage (seen: GRPO at
learning rate 5e-4 logged ``grad_norm`` NaN at steps 2 and 4 and nothing said so). ms-swift takes
custom trainer callbacks by name (``--callbacks NAME``, from ``swift.callbacks.callbacks_map``,
which an ``--external_plugins`` file may extend): scripts/swift_plugins/medswift_health.py
registers ``medswift_health``, a callback whose ``on_log`` hands every logged row to
``check_row`` below. On a non-finite value it logs one line, writes ``training_health.json`` in
the run folder (the launcher's one-line error reads it) and asks the trainer to stop, unless
``MEDSWIFT_ALLOW_NONFINITE=1`` (then it only flags). The rest is the trainer's: the row itself
is already in ``logging.jsonl``.

Usage (what the launcher does after a run; by hand on a run folder):
    python -m medswift.posttrain.training_health results/grpo/v0-...

For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.errors import UsageError, run_cli

# The logged values that must stay finite: the loss and gradient norm of every trainer, and GRPO's
# reward and KL (a NaN reward gives NaN advantages, a NaN KL a NaN loss one step later).
WATCHED = ("loss", "grad_norm", "reward", "kl")
REPORT = "training_health.json"
ALLOW_ENV = "MEDSWIFT_ALLOW_NONFINITE"


# A loss or gradient norm this large is as broken as NaN (seen: GRPO on the embedded default logged
# loss 9.2e12 and grad_norm 3.7e11 at its second step, both finite): treated alike.
EXPLODED = 1e8


def non_finite(row: dict) -> dict[str, str]:
    """The watched keys of a logged row whose value is NaN, infinite or exploded (|x| > EXPLODED),
    as text (``nan``, ``inf``, ``9.2e+12``)."""
    bad = {}
    for key in WATCHED:
        value = row.get(key)
        if isinstance(value, str):  # ms-swift's console copy of the row formats numbers as text
            try:
                value = float(value)
            except ValueError:
                continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (not math.isfinite(value) or abs(value) > EXPLODED):
            bad[key] = f"{float(value):.3g}"
    return bad


def allowed() -> bool:
    value = os.environ.get(ALLOW_ENV, "0").strip().lower()
    if value not in ("0", "1", "true", "false", ""):
        raise UsageError(f"{ALLOW_ENV} must be 0 or 1, got {value!r}")
    return value in ("1", "true")


def check_row(row: dict, step: int, output_dir: str | os.PathLike, report: bool = True) -> bool:
    """Flag a logged row with a non-finite value: one warning line and (``report``: the main
    process) ``training_health.json``, the first such step kept, later ones counted. Returns True
    when training must stop."""
    bad = non_finite(row)
    if not bad:
        return False
    if not report:
        return not allowed()
    path = Path(output_dir) / REPORT
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {"first_step": step, "values": bad, "stopped": not allowed(), "non_finite_steps": 0}
    summary["non_finite_steps"] += 1
    summary["last_step"] = step
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    what = ", ".join(f"{k}={v}" for k, v in bad.items())
    action = "continuing (ALLOW_NONFINITE=1)" if allowed() else "stopping the run (ALLOW_NONFINITE=1 continues)"
    print(f"[medswift] training health: non-finite or exploded {what} at step {step}; {action}", file=sys.stderr, flush=True)
    return not allowed()


def verdict(run_dir: Path) -> str | None:
    """One line when the run folder's training stopped (or went on) with non-finite values, else None."""
    try:
        report = json.loads((Path(run_dir) / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    what = ", ".join(f"{k}={v}" for k, v in report.get("values", {}).items())
    if report.get("stopped"):
        return (f"training stopped at step {report.get('first_step')}: non-finite or exploded {what} (see {run_dir}/logging.jsonl); "
                f"lower LEARNING_RATE or check the starting adapter; ALLOW_NONFINITE=1 (the launchers' knob, {ALLOW_ENV} for ms-swift itself) continues through it")
    return (f"non-finite or exploded {what} at step {report.get('first_step')} ({report.get('non_finite_steps')} step(s)); "
            f"training continued because {ALLOW_ENV}=1")


def main(argv: list[str] | None = None) -> int:
    p = command_parser(__doc__, prog="python -m medswift.posttrain.training_health")
    p.add_argument("run_dir", help="a training run folder (ms-swift's v<N>-<time>)")
    args = p.parse_args(argv)

    def body() -> int:
        line = verdict(Path(args.run_dir))
        if line is None:
            print(f"{args.run_dir}: every logged loss, grad_norm, reward and kl is finite")
            return 0
        if line.startswith("training stopped"):
            raise UsageError(line)
        print(f"warning: {line}", file=sys.stderr)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
