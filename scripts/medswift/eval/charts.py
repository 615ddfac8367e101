"""The report cards' charts (matplotlib, Agg), each written atomically.

For research only, not for diagnosis.
"""
from __future__ import annotations

from pathlib import Path

from medswift.core.errors import UsageError


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Draw into a temporary file beside ``path`` and rename it, as ``write_atomic`` does for text."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."))
        tmp.replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        pyplot().close(fig)


def plot_findings(per: dict, path: Path) -> None:
    save_figure(findings_figure(per), path)


def plot_text(text: dict, path: Path) -> None:
    save_figure(text_figure(text), path)


def findings_figure(per: dict):
    plt = pyplot()
    names = [n for n, v in per.items() if v["f1"] is not None]
    values = [per[n]["f1"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.4 * max(len(names), 3) + 1.2))
    ax.barh(names[::-1], values[::-1], color="#3b7dd8")
    # How many reports each bar rests on: an F1 of 1.00 over one reference means little.
    for y, name in enumerate(names[::-1]):
        v = per[name]
        ax.text(min(v["f1"] + 0.01, 0.62), y, f"{v['f1']:.2f}  ({v['support']} ref, {v['predicted']} pred)",
                va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (rule-based labeller; uncertain = positive)")
    ax.set_title("Per-finding F1 of generated vs reference reports\n(research only, not for diagnosis)", fontsize=10)
    fig.tight_layout()
    return fig


def text_figure(text: dict):
    plt = pyplot()
    schemes = list(text)
    metrics = [m for m in ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "meteor")
               if any(m in text[s] for s in schemes)]
    # CIDEr is not a 0-1 score (up to 10): its own panel and scale, so it neither dwarfs nor is clipped.
    fig, (ax, ax_cider) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [len(metrics), 1.4]})
    width = 0.8 / len(schemes)
    cider_top = 1.0
    for k, scheme in enumerate(schemes):
        values = [text[scheme].get(m, 0) for m in metrics]
        bars = ax.bar([i + k * width for i in range(len(metrics))], values, width, label=scheme)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
        cider = text[scheme].get("cider", 0) or 0
        bars = ax_cider.bar([k * width], [cider], width, label=scheme)
        ax_cider.bar_label(bars, labels=[f"{cider:.2f}"], fontsize=7)
        cider_top = max(cider_top, cider)
    ax.set_ylim(0, 1.05)  # a fixed 0-1 scale: near-zero scores must look near zero
    ax.set_xticks([i + width * (len(schemes) - 1) / 2 for i in range(len(metrics))], metrics)
    ax.set_title("Text metrics by tokenisation (0-1)\nresearch only, not for diagnosis", fontsize=10)
    ax.legend(title="tokenisation", fontsize=7)
    ax_cider.set_ylim(0, cider_top * 1.15)
    ax_cider.set_xticks([width * (len(schemes) - 1) / 2], ["cider"])
    ax_cider.set_title("CIDEr (0-10 scale)", fontsize=10)
    fig.tight_layout()
    return fig
