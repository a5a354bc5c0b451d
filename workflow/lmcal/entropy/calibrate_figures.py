"""Figures of the calibrated-sampler study: Figure 3-style EntCE vs log loss with the truncation frontier and
the calibrated points, and the exact toy world (per-step EntCE; every method's totals). Agg backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns


def plot_calibrated_frontier(summary: Mapping[str, Any]):
    """One panel per dataset: each model's entropy-study decodes (dots joined by log loss: the truncation and
    temperature trade-off), τ = 1 ringed, and the calibrated points (stars) fitted on the other half of the
    documents; the dashed line is EntCE = 0. All on the held-out eval documents."""
    rows, points = summary["table"], summary["decode_points"]
    datasets = sorted({r["dataset"] for r in rows})
    models = sorted({r["model"] for r in rows})
    colours = dict(zip(models, sns.color_palette("colorblind", len(models))))
    fig, axes = plt.subplots(1, max(len(datasets), 1), figsize=(4.6 * max(len(datasets), 1), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for model in models:
            pts = sorted((p for p in points if p["model"] == model and p["dataset"] == dataset
                          and np.isfinite(p["logloss"])), key=lambda p: p["logloss"])
            if not pts:
                continue
            c = colours[model]
            ax.plot([p["logloss"] for p in pts], [p["entce"] for p in pts], "o-", color=c, ms=4, lw=1, label=model)
            for p in pts:
                ax.annotate(p["decode"], (p["logloss"], p["entce"]), fontsize=6, xytext=(2, 2),
                            textcoords="offset points")
            for r in (r for r in rows if r["model"] == model and r["dataset"] == dataset):
                ax.scatter([r["logloss_tau1"]], [r["entce_tau1"]], s=70, facecolors="none", edgecolors=c)
                ax.scatter([r["logloss"]], [r["entce"]], marker="*", s=120, color=c, edgecolors="k", lw=0.5)
                ax.annotate(f"{r['method']} a={r['a']:g}", (r["logloss"], r["entce"]), fontsize=6,
                            xytext=(3, -8), textcoords="offset points")
        ax.axhline(0, color="0.5", ls="--", lw=0.8)
        ax.set(title=dataset, xlabel="log loss on human text (nats/token)", ylabel="EntCE (nats/token)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Calibrated sampler (stars) vs decodes (dots; ringed: tau = 1), held-out documents", fontsize=9)
    fig.tight_layout()
    return fig


def plot_toyworld(toy: Mapping[str, Any], per_step_names: Sequence[str] | None = None):
    """Left: exact per-step EntCE of p^, of the temperature that zeroes total EntCE, and of Algorithm 1.
    Right: every method's total EntCE against its total log loss (exact, nats over the horizon)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name in per_step_names or list(toy["per_step_entce"]):
        curve = toy["per_step_entce"][name]
        left.plot(np.arange(1, len(curve) + 1), curve, "o-", ms=3, label=name)
    left.axhline(0, color="0.5", ls="--", lw=0.8)
    left.set(xlabel="step t", ylabel="EntCE_t (nats)", title="per-step EntCE (exact)")
    left.legend(fontsize=7)
    for r in toy["table"]:
        right.scatter([r["log_loss"]], [r["entce"]], s=30)
        right.annotate(r["method"], (r["log_loss"], r["entce"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    right.axhline(0, color="0.5", ls="--", lw=0.8)
    right.set(xlabel="total log loss under p* (nats)", ylabel="total EntCE (nats)", title="methods (exact totals)")
    fig.tight_layout()
    return fig


def plot_step_curves(curves):
    """Per-step entropy (EMA-smoothed, nats) of the τ = 1 samples (grey), of each method's calibrated samples
    (colours) and the human per-step log loss under p^ (dashed), on the held-out documents: rows = datasets,
    columns = models (spec Figure 2 layout)."""
    from lmcal.entropy.calibrate_curves import HUMAN, TAU1

    models, datasets = sorted(curves["model"].unique()), sorted(curves["dataset"].unique())
    methods = sorted(s for s in curves["series"].unique() if s not in (TAU1, HUMAN))
    colours = dict(zip(methods, sns.color_palette("colorblind", max(len(methods), 1))))
    fig, axes = plt.subplots(max(len(datasets), 1), max(len(models), 1), squeeze=False, sharey="row",
                             figsize=(3.6 * max(len(models), 1), 2.8 * max(len(datasets), 1)))
    for i, dataset in enumerate(datasets):
        for j, model in enumerate(models):
            ax = axes[i][j]
            sub = curves[(curves["model"] == model) & (curves["dataset"] == dataset)]
            for series, style in ([(TAU1, {"color": "0.4", "lw": 1.2}), (HUMAN, {"color": "k", "ls": "--", "lw": 1})]
                                  + [(m, {"color": colours[m], "lw": 1.2}) for m in methods]):
                c = sub[sub["series"] == series].sort_values("step")
                if len(c):
                    ax.plot(c["step"], c["smoothed"], label=series, **style)
            ax.set(title=f"{model} / {dataset}", xlabel="step")
            if j == 0:
                ax.set_ylabel("nats (EMA-smoothed)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
