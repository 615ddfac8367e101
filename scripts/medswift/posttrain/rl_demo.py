"""The RL demo's summary (tools/rl_demo.sh, last step): compare/compare.json and rl_demo.png.

Usage:
    python -m medswift.posttrain.rl_demo --dir results/rl_demo --sft_checkpoint A --rl_checkpoint B

Reads what the demo's steps wrote under ``--dir``: the task's ``data/summary.json``, the comparison
(``compare/comparison.json``, scripts/compare_checkpoints.py), both report cards' predictions
(``eval_sft``, ``eval_rl``) and GRPO's ``logging.jsonl``. Writes ``compare/compare.json``: the
verdict, ``reward`` {sft, rl, delta, ci95, p}, ``reads_image`` (the RL model's answers depend on
the image: permutation test), the held-out accuracy of both models with their answer shares, the
GRPO reward per step, the recipe, and the wall and CPU seconds of each step; and
``compare/rl_demo.png``: the GRPO reward curve beside the held-out accuracy of both models.
For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE
from medswift.core.errors import UsageError, run_cli
from medswift.core.files import read_jsonl, write_json
from medswift.eval import charts


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise UsageError(f"{path} is missing: an earlier step of the demo did not finish") from None
    except ValueError:
        raise UsageError(f"{path} is not JSON") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} is not a JSON object")
    return value


def answer_shares(predictions: Path, answers: list[str]) -> dict:
    """Held-out accuracy (the answer equals the reference, spaces aside) and how often each of the
    task's answers, or anything else, was written; control rows (blank/noise images) left out."""
    rows = [r for _, r in read_jsonl(predictions, "predictions file")[0] if isinstance(r, dict) and not r.get("control")]
    if not rows:
        raise UsageError(f"{predictions} holds no scored prediction")
    norm = lambda t: " ".join(str(t or "").split())  # noqa: E731
    correct = sum(norm(r.get("response")) == norm(r.get("reference")) for r in rows)
    shares = {a: sum(norm(r.get("response")) == a for r in rows) / len(rows) for a in answers}
    return {"n": len(rows), "correct": correct, "accuracy": correct / len(rows), "answer_shares": shares,
            "other_answers_share": 1 - sum(shares.values())}


def grpo_curve(grpo_dir: Path) -> list[dict]:
    """Per logged GRPO step: mean reward, its spread, the share of completions cut by the length
    limit and the KL (ms-swift's logging.jsonl keys)."""
    logs = sorted(grpo_dir.glob("v*/logging.jsonl"))
    if not logs:
        raise UsageError(f"no GRPO logging.jsonl under {grpo_dir}")
    curve = []
    for _, row in read_jsonl(logs[-1], "GRPO log")[0]:
        if isinstance(row, dict) and "reward" in row and "global_step/max_steps" in row:
            curve.append({"step": int(str(row["global_step/max_steps"]).split("/")[0]), "reward": row["reward"],
                          "reward_std": row.get("reward_std"), "clipped_ratio": row.get("completions/clipped_ratio"),
                          "kl": row.get("kl"), "loss": row.get("loss")})
    return curve


def _timings(text: str) -> dict[str, int]:
    out = {}
    for item in text.split():
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise UsageError(f"--timings: expected NAME=SECONDS items, got '{item}'")
        out[name] = int(value)
    return out


def summarise(demo: Path, sft_ckpt: str, rl_ckpt: str, timings: str, cpu_seconds: str, recipe: str) -> dict:
    comparison = _json(demo / "compare" / "comparison.json")
    task = _json(demo / "data" / "summary.json")
    answers = [a for a in task.get("answers", []) if isinstance(a, str)]
    steps = _timings(timings)
    summary = {
        "verdict": comparison["verdict"], "reasons": comparison["reasons"], "reward": comparison["reward"],
        "reward_ci95": {side: (comparison.get("paired", {}).get(f"reward.{side}") or {}).get("ci95") for side in ("sft", "rl")},
        "reads_image": comparison["reads_image"], "image_dependence": comparison["image_dependence"],
        "studies": comparison["studies_paired"], "records": comparison["records_paired"],
        "accuracy": {"chance": task.get("chance"), **{side: answer_shares(demo / f"eval_{side}" / "predictions.jsonl", answers)
                                                      for side in ("sft", "rl")}},
        "grpo_curve": grpo_curve(demo / "grpo"), "task": task,
        "recipe": dict(item.partition("=")[::2] for item in recipe.split()),
        "checkpoints": {"sft": sft_ckpt, "rl": rl_ckpt},
        "timings_s": steps, "wall_s": sum(steps.values()), "cpu_s": int(cpu_seconds) if cpu_seconds.isdigit() else None,
        "comparison": str(demo / "compare" / "comparison.md"), "notice": NOTICE,
    }
    write_json(demo / "compare" / "compare.json", summary)
    plot(summary, demo / "compare" / "rl_demo.png")
    return summary


def plot(s: dict, path: Path) -> None:
    plt = charts.pyplot()
    fig, (ax, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [2.2, 1]})
    curve = s["grpo_curve"]
    steps = [c["step"] for c in curve]
    ax.plot(steps, [c["reward"] for c in curve], color="#3b7dd8", lw=1, alpha=0.5, label="mean reward per step")
    window = 5  # a running mean: one step holds only a few prompts
    smooth = [sum(c["reward"] for c in curve[max(0, i - window + 1):i + 1]) / len(curve[max(0, i - window + 1):i + 1])
              for i in range(len(curve))]
    ax.plot(steps, smooth, color="#3b7dd8", lw=2, label=f"running mean ({window} steps)")
    ax.set_xlabel("GRPO step")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("GRPO training reward (medswift_findings)", fontsize=9)
    ax.legend(fontsize=7)
    # held-out: the reward's reading of each answer (1 when it states what the image shows) with its
    # 95% interval, beside the share of answers that are word for word the task's own sentence
    reward, cis = s["reward"], s.get("reward_ci95") or {}
    for j, side in enumerate(("sft", "rl")):
        value, ci = reward.get(side), cis.get(side)
        if value is None:
            continue
        err = [[value - ci[0]], [ci[1] - value]] if ci and None not in ci else None
        ax_acc.bar([j - 0.18], [value], 0.34, yerr=err, capsize=3, color=("#8a8a8a", "#3b7dd8")[j],
                   label="reward (right reading)" if j == 0 else None)
        ax_acc.bar([j + 0.18], [s["accuracy"][side]["accuracy"]], 0.34, color="white", edgecolor=("#8a8a8a", "#3b7dd8")[j],
                   hatch="//", label="exact answer" if j == 0 else None)
    chance = s["accuracy"].get("chance")
    if chance is not None:
        ax_acc.axhline(chance, color="k", ls="--", lw=1, label="chance")
    ax_acc.legend(fontsize=6, loc="upper center", ncol=3, handlelength=1.5, columnspacing=0.8)
    ax_acc.set_xticks([0, 1], ["SFT", "GRPO"])
    ax_acc.set_ylim(0, 1.22)  # room above the bars for the legend
    ax_acc.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ci = reward.get("ci95") or [None, None]
    delta = "n/a" if reward.get("delta") is None else f"{reward['delta']:+.2f}" + (
        f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci[0] is not None else "")
    ax_acc.set_title(f"held-out reward, delta {delta}", fontsize=9)
    fig.suptitle(f"RL demo: {s['verdict']} (synthetic task; research only, not for diagnosis)", fontsize=9)
    fig.tight_layout()
    charts.save_figure(fig, path)


def build_parser():
    p = command_parser(__doc__)
    p.add_argument("--dir", required=True, help="RL_DEMO_DIR")
    p.add_argument("--sft_checkpoint", required=True)
    p.add_argument("--rl_checkpoint", required=True)
    p.add_argument("--timings", default="", help="NAME=SECONDS items, space-separated")
    p.add_argument("--cpu_seconds", default="")
    p.add_argument("--recipe", default="", help="KEY=VALUE items, space-separated")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        demo = Path(args.dir)
        s = summarise(demo, args.sft_checkpoint, args.rl_checkpoint, args.timings, args.cpu_seconds, args.recipe)
        r, acc = s["reward"], s["accuracy"]
        ci = r.get("ci95") or [None, None]
        print(f"\nRL demo: {s['verdict']}. {NOTICE}")
        print(f"  held-out answers word for word the task's sentence: SFT {acc['sft']['correct']}/{acc['sft']['n']}, "
              f"GRPO {acc['rl']['correct']}/{acc['rl']['n']} (the reward also credits other wordings)")
        if r.get("delta") is not None:
            print(f"  held-out reward (medswift_findings: the share of answers stating what the image shows; "
                  f"chance {acc.get('chance')}): SFT {r['sft']:.3f} -> GRPO {r['rl']:.3f}, delta {r['delta']:+.3f}"
                  + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci[0] is not None else "")
                  + (f", randomisation p={r['p']:.3g}" if r.get("p") is not None else ""))
        print(f"  GRPO answers depend on the image: {s['reads_image']}")
        print(f"  wall {s['wall_s']} s, CPU {s['cpu_s']} s; steps {s['timings_s']}")
        print(f"  summary {demo / 'compare' / 'compare.json'}; card {s['comparison']}; curves {demo / 'compare' / 'rl_demo.png'}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
