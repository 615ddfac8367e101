"""Did post-training help? Two report cards (an SFT checkpoint and its GRPO/DPO successor, on the
same split) side by side, with one verdict: helped, hurt, gamed the reward, or no clear change.

Usage:
    python scripts/compare_checkpoints.py --sft results/lora/v0-.../checkpoint-40/eval_val --rl results/grpo/v0-.../checkpoint-50/eval_val
    python scripts/compare_checkpoints.py --sft A/eval_val --rl B/eval_val --output_dir results/compare --reward_funcs "medswift_findings medswift_repetition" --reward_weights "1 0.2"

Each folder is what ``tools/evaluate_checkpoint.sh`` writes (``metrics.json``, ``predictions.jsonl``
with the blank/noise controls). Written into ``--output_dir``: ``comparison.md``,
``comparison.json`` and ``comparison.png``.

* text metrics and finding F1 from each report card, with their 95% bootstrap intervals;
* per-record, paired over the records both cards scored (one resampling of the records for both
  models, so a difference has its own 95% interval): finding F1 (micro, macro), the mean reward
  (the reward GRPO optimised, weighted as in training) and the mean report length;
* the share of reports that say "no acute abnormality", predictions vs references, and the
  image-ablation check (distinct reports, identical to the blank-image report).

Verdict: **gamed** when the reward rose (its paired interval above 0) but the finding F1 did not,
or the RL model stopped reading the image, moved its "normal" share further from the references'
by more than 10 points, or moved its length away from the references' to under half or over twice it; **helped** when the paired finding-F1
interval lies above 0 and nothing of the above; **hurt** when it lies below 0, or the reward fell
(interval below 0) without the finding F1 rising; else **no clear change**. A rule-based proxy judges a rule-based reward: read the worst examples of both cards.
For research only, not for diagnosis.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from medswift.core.cli import command_parser
from medswift.core.constants import NOTICE, RESULTS
from medswift.core.errors import UsageError, run_cli
from medswift.posttrain import datasets
from medswift.eval import bootstrap, charts, report_card, scorer_workers

NORMAL_GAP_POINTS = 0.10   # a "normal" share moved this much further from the references' is gaming
LENGTH_RATIO = 2.0         # halved or doubled report length
HEADLINE = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")


def _card(folder: Path) -> tuple[dict, Path]:
    metrics, predictions = folder / "metrics.json", folder / "predictions.jsonl"
    if not metrics.is_file():
        raise UsageError(f"no report card in {folder} (metrics.json): run tools/evaluate_checkpoint.sh first")
    if not predictions.is_file():
        raise UsageError(f"no predictions.jsonl in {folder}: the comparison re-scores each record")
    try:
        return json.loads(metrics.read_text(encoding="utf-8")), predictions
    except ValueError:
        raise UsageError(f"{metrics} is not JSON") from None


def report_length(text: str, reference: str) -> int:
    """Characters for a Chinese report, words for an English one (the report cards' units)."""
    return len(text.replace(" ", "")) if report_card.record_lang(reference) == "zh" else len(text.split())


def _paired(sft_rows: list[dict], rl_rows: list[dict]) -> tuple[list[str], dict, dict]:
    sft, rl_by = {r["key"]: r for r in sft_rows}, {r["key"]: r for r in rl_rows}
    keys = [k for k in sft if k in rl_by]
    if not keys:
        raise UsageError("the two report cards share no record: evaluate both checkpoints on the same split")
    differ = [k for k in keys if sft[k]["reference"] != rl_by[k]["reference"]]
    if differ:
        raise UsageError(f"record {differ[0]} has different references in the two cards: not the same split")
    return keys, sft, rl_by


def compare(sft_dir: Path, rl_dir: Path, out: Path, reward_funcs: list[str], reward_weights: list[float],
            plugin: Path | None, n_boot: int = 1000, seed: int = 0) -> dict:
    sft_m, sft_pred = _card(sft_dir)
    rl_m, rl_pred = _card(rl_dir)
    orms = datasets.check_rewards(reward_funcs, [str(w) for w in reward_weights], plugin)
    sft_rows, _, _ = report_card.load_rows(sft_pred)
    rl_rows, _, _ = report_card.load_rows(rl_pred)
    keys, sft, rlr = _paired(sft_rows, rl_rows)
    refs = [sft[k]["reference"] for k in keys]
    texts = {side: [report_card.answer_text(rows[k]["response"]) for k in keys] for side, rows in
             (("sft", sft), ("rl", rlr))}
    with scorer_workers.Workers(1) as pool:
        y_true, _ = report_card.resolve_labels(refs, report_card.label_all(refs, None, pool))
        y = {side: report_card.resolve_labels(t, report_card.label_all(t, None, pool))[0] for side, t in texts.items()}
    counts = {side: report_card.finding_counts(y_true, y[side]) for side in y}
    reward = {side: np.array(datasets.score(t, refs, reward_funcs, reward_weights, orms)) for side, t in texts.items()}
    length = {side: np.array([report_length(t, r) for t, r in zip(texts[side], refs)], dtype=float) for side in texts}
    reference_length = float(np.mean([report_length(r, r) for r in refs]))
    k = counts["sft"].shape[1] // 3

    def f1s(sums, n):
        a = report_card.finding_f1_from_sums(sums[:, :3 * k])
        b = report_card.finding_f1_from_sums(sums[:, 3 * k:])
        return np.hstack([a, b, b - a])

    def means(sums, n):
        return np.hstack([sums / n, (sums[:, 1:] - sums[:, :1]) / n])

    point = {"f1": f1s(np.hstack([counts["sft"], counts["rl"]]).sum(0, keepdims=True), len(keys))[0],
             "reward": means(np.stack([reward["sft"], reward["rl"]], 1).sum(0, keepdims=True), len(keys))[0],
             "length": means(np.stack([length["sft"], length["rl"]], 1).sum(0, keepdims=True), len(keys))[0]}
    names = {"f1": ["sft_micro", "sft_macro", "rl_micro", "rl_macro", "diff_micro", "diff_macro"],
             "reward": ["sft", "rl", "diff"], "length": ["sft", "rl", "diff"]}
    ci = {}
    if n_boot:
        ci = bootstrap.intervals({"f1": np.hstack([counts["sft"], counts["rl"]]),
                                  "reward": np.stack([reward["sft"], reward["rl"]], 1),
                                  "length": np.stack([length["sft"], length["rl"]], 1)},
                                 {b: ([f"{b}.{n}" for n in names[b]], fn) for b, fn in
                                  (("f1", f1s), ("reward", means), ("length", means))}, n_boot, seed)
    paired = {f"{b}.{n}": {"value": float(point[b][j]), "ci95": ci.get(f"{b}.{n}")}
              for b in names for j, n in enumerate(names[b])}
    result = {"sft": str(sft_dir), "rl": str(rl_dir), "records_paired": len(keys), "notice": NOTICE,
              "reference_length": reference_length,
              "reward_funcs": reward_funcs, "reward_weights": reward_weights, "paired": paired,
              "bootstrap": {"resamples": n_boot, "seed": seed, "paired": True},
              "cards": {side: _headline(m) for side, m in (("sft", sft_m), ("rl", rl_m))}}
    result["verdict"], result["reasons"] = verdict(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    plot(result, out / "comparison.png")
    write_markdown(result, out / "comparison.md")
    return result


def _headline(m: dict) -> dict:
    scheme = m.get("primary_tokenisation") if m.get("primary_tokenisation") in (m.get("text") or {}) else \
        next(iter(m.get("text") or {}), None)
    text_ci = ((m.get("ci95") or {}).get("text") or {}).get(scheme, {})
    f_ci = (m.get("ci95") or {}).get("findings") or {}
    abl = m.get("ablation") or {}
    return {"n": m.get("n"), "scheme": scheme,
            "text": {k: {"value": (m["text"][scheme] or {}).get(k), "ci95": text_ci.get(k)} for k in HEADLINE
                     if scheme and k in m["text"][scheme]},
            "finding_f1": {k: {"value": (m.get("findings") or {}).get(k), "ci95": f_ci.get(k)}
                           for k in ("micro_f1", "macro_f1")},
            "normal_share": m.get("normal_share") or {}, "reads_the_image": abl.get("reads_the_image"),
            "distinct_share": abl.get("distinct_share"), "identical_to_blank_share": abl.get("identical_to_blank_share")}


def _above(entry: dict) -> bool:
    ci = entry.get("ci95")
    return bool(ci and ci[0] is not None and ci[0] > 0)


def _below(entry: dict) -> bool:
    ci = entry.get("ci95")
    return bool(ci and ci[1] is not None and ci[1] < 0)


def verdict(r: dict) -> tuple[str, list[str]]:
    p, sft, rl_card = r["paired"], r["cards"]["sft"], r["cards"]["rl"]
    reasons = []
    f1_up, f1_down = _above(p["f1.diff_micro"]), _below(p["f1.diff_micro"])
    if _above(p["reward.diff"]) and not f1_up:
        reasons.append("the reward rose but the finding F1 did not")
    if sft["reads_the_image"] and rl_card["reads_the_image"] is False:
        reasons.append("the RL model stopped reading the image (ablation)")
    gaps = [abs((c["normal_share"].get("predictions") or 0) - (c["normal_share"].get("references") or 0))
            for c in (sft, rl_card)]
    if gaps[1] - gaps[0] > NORMAL_GAP_POINTS:
        reasons.append(f"its \"no acute abnormality\" share moved {100 * (gaps[1] - gaps[0]):.0f} points further "
                       "from the references'")
    ref_len = r.get("reference_length")
    s_len, r_len = p["length.sft"]["value"], p["length.rl"]["value"]

    def off(x):  # how many times longer or shorter than the references
        return max(x / ref_len, ref_len / x) if x and ref_len else float("inf")
    if off(r_len) > LENGTH_RATIO and off(r_len) > off(s_len):
        reasons.append(f"its reports are {r_len / ref_len:.2f}x as long as the references (SFT {s_len / ref_len:.2f}x)"
                       if r_len else "its reports are empty")
    if reasons:
        return "gamed the reward", reasons
    if f1_up:
        return "helped", ["the paired finding-F1 difference is above 0 (95% interval)"]
    if f1_down:
        return "hurt", ["the paired finding-F1 difference is below 0 (95% interval)"]
    if _below(p["reward.diff"]):
        return "hurt", ["the mean reward fell (its paired 95% interval is below 0) and the finding F1 did not rise"]
    return "no clear change", ["the paired finding-F1 difference's 95% interval includes 0"]


def _fmt(entry: dict | None, signed: bool = False) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    f = "{:+.3f}" if signed else "{:.3f}"
    ci = entry.get("ci95")
    body = f.format(entry["value"])
    return body + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci and ci[0] is not None else "")


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def table_rows(r: dict) -> list[tuple[str, str, str, str]]:
    p, s, q = r["paired"], r["cards"]["sft"], r["cards"]["rl"]
    rows = []
    for name in HEADLINE:
        if name in s["text"] or name in q["text"]:
            a, b = s["text"].get(name), q["text"].get(name)
            diff = b["value"] - a["value"] if a and b and a["value"] is not None and b["value"] is not None else None
            rows.append((f"{name} ({s['scheme']})", _fmt(a), _fmt(b), "n/a" if diff is None else f"{diff:+.3f}"))
    rows += [("finding F1 micro (paired)", _fmt(p["f1.sft_micro"]), _fmt(p["f1.rl_micro"]), _fmt(p["f1.diff_micro"], True)),
             ("finding F1 macro (paired)", _fmt(p["f1.sft_macro"]), _fmt(p["f1.rl_macro"]), _fmt(p["f1.diff_macro"], True)),
             (f"mean reward ({' + '.join(f'{w:g}*{n}' for n, w in zip(r['reward_funcs'], r['reward_weights']))})",
              _fmt(p["reward.sft"]), _fmt(p["reward.rl"]), _fmt(p["reward.diff"], True)),
             (f"mean length (words; characters for Chinese; references {r['reference_length']:.1f})",
              _fmt(p["length.sft"]), _fmt(p["length.rl"]), _fmt(p["length.diff"], True)),
             ("\"no acute abnormality\": predictions (references)",
              f"{_pct(s['normal_share'].get('predictions'))} ({_pct(s['normal_share'].get('references'))})",
              f"{_pct(q['normal_share'].get('predictions'))} ({_pct(q['normal_share'].get('references'))})", ""),
             ("reads the image (ablation)", str(s["reads_the_image"]), str(q["reads_the_image"]), ""),
             ("distinct reports / identical to blank", f"{_pct(s['distinct_share'])} / {_pct(s['identical_to_blank_share'])}",
              f"{_pct(q['distinct_share'])} / {_pct(q['identical_to_blank_share'])}", "")]
    return rows


def write_markdown(r: dict, path: Path) -> None:
    lines = [f"# Did post-training help? **{r['verdict']}**", "",
             f"> {NOTICE} A rule-based reward judged by a rule-based labeller: a proxy for clinical quality, "
             "not a radiologist's reading.", "",
             f"- SFT report card: `{r['sft']}`", f"- RL report card: `{r['rl']}`",
             f"- records compared (both cards): {r['records_paired']}; why: " + "; ".join(r["reasons"]), "",
             "| | SFT | RL | RL - SFT |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in table_rows(r)]
    lines += ["", "In brackets: 95% percentile-bootstrap intervals. Text metrics: each report card's own intervals. "
                  f"Paired rows: {r['bootstrap']['resamples']} resamples of the shared records (seed "
                  f"{r['bootstrap']['seed']}), the same records for both models in each resample, so the difference "
                  "has its own interval.", "",
              "Verdict rules: *gamed the reward* when the reward rose (interval above 0) but the finding F1 did not, or "
              "the RL model stopped reading the image, moved its \"no acute abnormality\" share more than 10 points "
              "further from the references', or moved its length to under half or over twice the references'; *helped* / *hurt* when the paired finding-F1 "
              "interval lies above / below 0 (*hurt* too when the reward fell and the finding F1 did not rise); else *no clear change*.", "", "![comparison](comparison.png)", "",
              f"_{NOTICE}_", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def plot(r: dict, path: Path) -> None:
    plt = charts.pyplot()
    p, s, q = r["paired"], r["cards"]["sft"], r["cards"]["rl"]
    bars = [(n, s["text"].get(n), q["text"].get(n)) for n in ("bleu_1", "bleu_4", "meteor", "rouge_l")
            if n in s["text"]]
    bars += [("finding F1\nmicro", p["f1.sft_micro"], p["f1.rl_micro"]), ("finding F1\nmacro", p["f1.sft_macro"], p["f1.rl_macro"]),
             ("mean\nreward", p["reward.sft"], p["reward.rl"]),
             ("\"normal\"\nshare", {"value": s["normal_share"].get("predictions")}, {"value": q["normal_share"].get("predictions")}),
             ("distinct\nreports", {"value": s["distinct_share"]}, {"value": q["distinct_share"]})]
    fig, (ax, ax_len) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [len(bars), 1.6]})
    width = 0.38
    for j, (side, color) in enumerate((("SFT", "#8a8a8a"), ("RL", "#3b7dd8"))):
        vals = [(b[1 + j] or {}).get("value") or 0 for b in bars]
        errs = [[max(0, v - ((b[1 + j] or {}).get("ci95") or [v, v])[0]) for v, b in zip(vals, bars)],
                [max(0, ((b[1 + j] or {}).get("ci95") or [v, v])[1] - v) for v, b in zip(vals, bars)]]
        ax.bar([i + j * width for i in range(len(bars))], vals, width, yerr=errs, capsize=2, label=side, color=color)
    normal_ref = s["normal_share"].get("references")
    if normal_ref is not None:
        i = [b[0] for b in bars].index("\"normal\"\nshare")
        ax.hlines(normal_ref, i - 0.2, i + 0.6, colors="k", linestyles="--", lw=1, label="references' \"normal\" share")
    ax.set_xticks([i + width / 2 for i in range(len(bars))], [b[0] for b in bars], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(f"SFT vs RL: {r['verdict']} (95% intervals; research only, not for diagnosis)", fontsize=9)
    for j, (side, color) in enumerate((("SFT", "#8a8a8a"), ("RL", "#3b7dd8"))):
        e = p[f"length.{side.lower()}"]
        lo, hi = e.get("ci95") or [e["value"], e["value"]]
        ax_len.bar([j], [e["value"]], 0.6, yerr=[[e["value"] - lo], [hi - e["value"]]], capsize=2, color=color)
    ax_len.set_xticks([0, 1], ["SFT", "RL"], fontsize=7)
    ax_len.set_title("mean length", fontsize=9)
    fig.tight_layout()
    charts.save_figure(fig, path)


def build_parser():
    p = command_parser(__doc__)
    p.add_argument("--sft", required=True, help="report-card folder of the SFT checkpoint (eval_<split>/)")
    p.add_argument("--rl", required=True, help="report-card folder of the GRPO/DPO checkpoint, same split")
    p.add_argument("--output_dir", default=str(RESULTS / "compare"))
    p.add_argument("--reward_funcs", default="medswift_findings", help="the rewards of the mean-reward row")
    p.add_argument("--reward_weights", default="", help="one weight per reward (default: all 1)")
    p.add_argument("--plugin", default=str(Path(__file__).resolve().parents[2] / "swift_plugins" / "medswift_rewards.py"))
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="paired resamples (0: no intervals)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.bootstrap < 0:
            raise UsageError(f"--bootstrap must be 0 or more, got {args.bootstrap}")
        names = args.reward_funcs.replace(",", " ").split()
        weights = args.reward_weights.replace(",", " ").split()
        plugin = Path(args.plugin) if args.plugin and Path(args.plugin).is_file() else None
        r = compare(Path(args.sft), Path(args.rl), Path(args.output_dir), names,
                    [float(w) for w in weights] or [1.0] * len(names), plugin, args.bootstrap, args.seed)
        print(f"verdict: {r['verdict']} ({'; '.join(r['reasons'])})")
        for a, b, c, d in table_rows(r):
            print(f"  {a.replace(chr(10), ' ')}: SFT {b} | RL {c}" + (f" | diff {d}" if d else ""))
        print(f"card: {Path(args.output_dir) / 'comparison.md'}")
        print(NOTICE)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
