"""Reliability diagrams (label-smoothing spec §2, paper Fig. 1): one model, or several overlaid.

Inputs are ``lmcal.calibration.reliability_table`` frames (columns bin, lower, upper, count, confidence,
accuracy). Figures are built on ``matplotlib.figure.Figure`` (Agg, no pyplot state to leak); save them with
``lmcal.core.io.save_figure``.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

# Paper Fig. 1 colours: base blue, instruction-tuned red; further models continue the palette.
PALETTE = sns.color_palette("colorblind")


def _label(name: str, metrics: Mapping[str, Mapping[str, float]] | None) -> str:
    m = (metrics or {}).get(name)
    if not m:
        return name
    return f"{name} (acc {m['accuracy']:.2f}, ECE {m['ece']:.3f})"


def reliability_diagram(
    table: pd.DataFrame, *, title: str = "", metrics: Mapping[str, float] | None = None, color=None
) -> Figure:
    """Bars of per-bin accuracy against the diagonal, the gap to mean confidence hatched, counts below.

    Equal-width tables draw bars over their bin edges; equal-mass tables draw them over the [min, max]
    confidence each bin holds. ``metrics`` (from ``calibration_metrics``) adds accuracy/ECE/RMS-CE to the title.
    """
    color = color or PALETTE[0]
    fig = Figure(figsize=(4.6, 5.4))
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    filled = table[table["count"] > 0]
    lower = filled["lower"].to_numpy(float)
    width = np.maximum(filled["upper"].to_numpy(float) - lower, 0.01)
    ax.bar(lower, filled["accuracy"], width=width, align="edge", color=color, edgecolor="black", lw=0.6,
           label="accuracy")
    gap_bottom = np.minimum(filled["accuracy"], filled["confidence"])
    ax.bar(lower, np.abs(filled["gap"]), bottom=gap_bottom, width=width, align="edge", color="none",
           edgecolor="tab:red", hatch="//", lw=0.6, label="gap to confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    if metrics:
        title = f"{title}\nacc {metrics['accuracy']:.3f}  ECE {metrics['ece']:.3f}  RMS-CE {metrics['rms_ce']:.3f}"
    ax.set_title(title.strip(), fontsize=10)
    ax_count.bar(lower, filled["count"], width=width, align="edge", color=color, edgecolor="black", lw=0.6)
    for x, w, n in zip(lower, width, filled["count"]):
        ax_count.annotate(str(int(n)), (x + w / 2, n), ha="center", va="bottom", fontsize=7)
    ax_count.set(xlabel="confidence (max choice probability)", ylabel="items")
    ax_count.set_ylim(0, max(filled["count"].max() * 1.3, 1))
    sns.despine(fig=fig)
    return fig


def reliability_overlay(
    tables: Mapping[str, pd.DataFrame],
    *,
    title: str = "",
    metrics: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """Several models' reliability curves on one diagram (e.g. base vs SFT vs SFT+LS), counts below.

    Each model is a line through its non-empty bins at (mean confidence, accuracy), marker area scaled by
    the bin's share of items; the lower panel shows each model's item share per bin.
    """
    if not tables:
        raise ValueError("tables: need at least one model")
    fig = Figure(figsize=(5.2, 5.6))
    ax, ax_count = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1)
    for k, (name, table) in enumerate(tables.items()):
        c = PALETTE[k % len(PALETTE)]
        filled = table[table["count"] > 0]
        share = filled["count"].to_numpy(float) / max(table["count"].sum(), 1)
        ax.plot(filled["confidence"], filled["accuracy"], "-", color=c, lw=1.5, label=_label(name, metrics))
        ax.scatter(filled["confidence"], filled["accuracy"], s=20 + 300 * share, color=c, edgecolor="black",
                   lw=0.4, zorder=3)
        centers = (table["lower"].to_numpy(float) + table["upper"].to_numpy(float)) / 2
        ax_count.plot(centers, table["count"].to_numpy(float) / max(table["count"].sum(), 1), "-o", ms=3,
                      color=c)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax_count.set(xlabel="confidence (max choice probability)", ylabel="share of items")
    sns.despine(fig=fig)
    return fig
