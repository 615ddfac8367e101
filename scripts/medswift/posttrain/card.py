"""Model cards with the post-training (GRPO / DPO) stage: its section and its curves.

Usage (the launchers call it after training, merging and evaluating; by hand after moving a run):
    python -m medswift.posttrain.card --run results/grpo/v0-...          # a card per checkpoint + curves
    python -m medswift.posttrain.card results/lora/v0-.../checkpoint-40  # one checkpoint (SFT or RL)
    python -m medswift.posttrain.card weights/xray-merged --merged_from results/lora/v0-.../checkpoint-40

The card itself (data, training settings, metrics) is medswift.eval.model_card; this module adds
the stage after supervised training, so that eval stays below post-training.

ms-swift keeps, in the run folder, ``logging.jsonl`` (per step: GRPO ``reward``, ``reward_std``,
``rewards/<RewardClass>/mean`` (the plugin's class name: ``rewards/MedSwiftFindings/mean``),
``completions/mean_length``, ``completions/clipped_ratio``, ``kl``; DPO ``rewards/chosen``,
``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``) and, for GRPO,
``completions.jsonl`` (every sampled report with its rewards and advantage). This module draws
``images/rl_curves.png``: the SFT run the stage started from (loss and token accuracy, from
that run's own logging.jsonl) beside the RL curves, so one picture shows both stages.
For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from medswift.eval import model_card


def _rows(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "logging.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "global_step/max_steps" in row:
            out.append(row)
    return out


def _step(row: dict) -> int | None:
    done = str(row.get("global_step/max_steps", "")).split("/")[0]
    return int(done) if done.isdigit() else None


def _first(value):
    return value[0] if isinstance(value, list) and value else value


def base_checkpoint(args: dict) -> str | None:
    """The SFT checkpoint the stage started from: the frozen reference adapter, else the first one."""
    return _first(args.get("ref_adapters")) or _first(args.get("adapters"))


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(_step(r), r[key]) for r in rows if isinstance(r.get(key), (int, float)) and _step(r) is not None]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def section(args: dict, checkpoint: Path) -> list[str]:
    """The model card's RL-stage section (empty for an SFT checkpoint)."""
    kind = args.get("rlhf_type")
    if not kind:
        return []
    rows = [r for r in _rows(checkpoint.parent) if (_step(r) or 0) <= _checkpoint_step(checkpoint)]
    steps = max((_step(r) or 0 for r in rows), default=None)
    table = [("stage", f"{str(kind).upper()} (swift rlhf --rlhf_type {kind})"),
             ("started from (SFT checkpoint, also the KL reference)", f"`{base_checkpoint(args)}`"),
             ("beta (KL weight)", args.get("beta")), ("loss type", _first(args.get("loss_type")) or "n/a"),
             ("training data", f"`{_first(args.get('dataset'))}`"), ("optimizer steps to this checkpoint", steps)]
    if kind == "grpo":
        weights = args.get("reward_weights") or [1.0] * len(args.get("reward_funcs") or [])
        table += [("rewards (weight)", ", ".join(f"{n} ({w})" for n, w in zip(args.get("reward_funcs") or [], weights))),
                  ("generations per prompt", args.get("num_generations")),
                  ("sampling temperature", args.get("temperature")),
                  ("max completion length", args.get("max_completion_length")),
                  ("rollout engine", "vLLM colocate" if args.get("use_vllm") else "transformers")]
    if kind == "dpo":
        table.append(("RPO alpha (NLL on chosen)", args.get("rpo_alpha") if args.get("rpo_alpha") is not None else "none"))
        summary = _pairs_summary(args)
        if summary:
            table += [("preference pairs", f"{summary['pairs']} from {summary['studies']} studies (ties dropped "
                                           f"{summary['ties_dropped']}; chosen = {summary['chosen']})"),
                      ("pair reward", ", ".join(f"{n} ({w})" for n, w in zip(summary["reward_funcs"],
                                                                            summary["reward_weights"])))]
    lines = ["## Post-training (RL stage)", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in table]
    key = "reward" if kind == "grpo" else "rewards/margins"
    steps_r, values = series(rows, key)
    if values:
        _, std = series(rows, "reward_std")
        spread = f" (std within groups {std[0]:.3f} -> {std[-1]:.3f})" if kind == "grpo" and std else ""
        lines += ["", f"{'Mean reward' if kind == 'grpo' else 'DPO reward margin'} {values[0]:.3f} at step "
                      f"{steps_r[0]} -> {values[-1]:.3f} at step {steps_r[-1]}{spread}; curves beside the SFT run's: "
                      f"`{checkpoint.parent / 'images' / 'rl_curves.png'}`"
                  + ("; every sampled report with its rewards: `completions.jsonl` in the run folder." if kind == "grpo"
                     else ".")]
    if kind == "grpo":
        lines += _rollout_health(rows)
    health = _health_line(checkpoint.parent)
    if health:
        lines += ["", f"**Training health:** {health}"]
    lines += ["", "A rising reward is not proof of better reports: compare the SFT and RL checkpoints with "
                  "`scripts/compare_checkpoints.py` (docs/post-training.md: Did it help?).", ""]
    return lines


def _rollout_health(rows: list[dict]) -> list[str]:
    """The share of rollouts cut at max_completion_length (a cut report is scored unfinished and
    teaches the length limit, not the reward) and the KL at the first and last step."""
    _, clipped = series(rows, "completions/clipped_ratio")
    kl_steps, kl = series(rows, "kl")
    out = []
    if clipped:
        mean = sum(clipped) / len(clipped)
        warn = " (most rollouts are cut: raise MAX_COMPLETION_LENGTH)" if mean > 0.5 else ""
        out.append(f"- rollouts cut at max completion length: {mean:.0%} on average over {len(clipped)} steps "
                   f"(first step {clipped[0]:.0%}, last {clipped[-1]:.0%}){warn}")
    if kl:
        out.append(f"- KL to the reference at step {kl_steps[0]}: {kl[0]:.4g} (the policy starts as the reference; "
                   f"later steps' KL reads against this); at step {kl_steps[-1]}: {kl[-1]:.4g}")
    return [""] + out if out else []


def _health_line(run_dir: Path) -> str | None:
    from medswift.posttrain.training_health import verdict

    return verdict(run_dir)


def _checkpoint_step(checkpoint: Path) -> int:
    tail = checkpoint.name.split("-", 1)[-1]
    return int(tail) if tail.isdigit() else 10 ** 9


def _pairs_summary(args: dict) -> dict | None:
    data = _first(args.get("dataset"))
    if not data:
        return None
    try:
        value = json.loads(Path(str(data)).with_suffix(".summary.json").read_text(encoding="utf-8"))
        return value if isinstance(value, dict) and "pairs" in value else None
    except (OSError, ValueError):
        return None


def plot_curves(run_dir: Path) -> Path | None:
    """``images/rl_curves.png`` in an RL run folder: SFT loss and token accuracy (from the base
    checkpoint's run), then the RL curves; None when the folder is not an RL run."""
    run_dir = Path(run_dir)
    try:
        args = json.loads((run_dir / "args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        ckpts = sorted(run_dir.glob("checkpoint-*"))
        try:
            args = json.loads((ckpts[-1] / "args.json").read_text(encoding="utf-8")) if ckpts else {}
        except (OSError, ValueError):
            args = {}
    kind = args.get("rlhf_type")
    rows = _rows(run_dir)
    if not kind or not rows:
        return None
    base = base_checkpoint(args)
    sft_rows = _rows(Path(base).parent) if base else []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("SFT: training loss", sft_rows, ["loss"]), ("SFT: token accuracy", sft_rows, ["token_acc"])]
    if kind == "grpo":
        names = sorted({k[len("rewards/"):-len("/mean")] for r in rows for k in r
                        if k.startswith("rewards/") and k.endswith("/mean")})
        panels += [("GRPO: reward (mean, band = std within groups)", rows, ["reward"] + [f"rewards/{n}/mean" for n in names]),
                   ("GRPO: completion length (tokens)", rows, ["completions/mean_length"]),
                   ("GRPO: KL to the SFT checkpoint", rows, ["kl"])]
    else:
        panels += [("DPO: implicit rewards", rows, ["rewards/chosen", "rewards/rejected", "rewards/margins"]),
                   ("DPO: pair accuracy", rows, ["rewards/accuracies"]), ("DPO: loss", rows, ["loss"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2))
    for ax, (title, source, keys) in zip(axes, panels):
        for key in keys:
            x, y = series(source, key)
            if not y:
                continue
            ax.plot(x, y, marker="o" if len(y) < 20 else None, ms=3, label=key)
            if key == "reward":
                _, std = series(source, "reward_std")
                if len(std) == len(y):
                    ax.fill_between(x, [a - b for a, b in zip(y, std)], [a + b for a, b in zip(y, std)], alpha=0.2)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged" if source else "SFT run's logging.jsonl\nnot found", ha="center",
                    va="center", transform=ax.transAxes, fontsize=8)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(keys) > 1 and ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(f"SFT then {kind.upper()} ({run_dir.name}); research only, not for diagnosis", fontsize=9)
    fig.tight_layout()
    out = run_dir / "images" / "rl_curves.png"
    out.parent.mkdir(exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    return model_card.main(argv, stage_sections=(section,), run_plots=(plot_curves,))


if __name__ == "__main__":
    sys.exit(main())
