"""Figures of the SFT label-smoothing study: before/after calibration, reliability overlays, the V/D effect."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lmcal.calibration.metrics import HEADLINE, SCORE_LABELS

PALETTE = sns.color_palette("colorblind")


def before_after(table: pd.DataFrame) -> Figure:
    """ECE, RMS-CE, Brier and accuracy per base model: the base model (grey) and its SFT models by β."""
    main = table[table["kind"] == "main"]
    if main.empty:
        raise ValueError("table: no main-grid rows")
    bases = list(dict.fromkeys(main.sort_values("n_params_non_embedding", na_position="last")["base"]))
    betas = sorted(main["label_smoothing"].unique())
    metrics = [m for m in HEADLINE if m != "accuracy"] + ["accuracy"]  # errors on top, accuracy last
    fig = Figure(figsize=(max(6.0, 1.1 * len(bases) * 2), 7.5))
    axes = fig.subplots(len(metrics), 1, sharex=True)
    width = 0.8 / (len(betas) + 1)
    x = np.arange(len(bases))
    for ax, metric in zip(axes, metrics):
        agg = main.groupby(["base", "label_smoothing"])[[f"{metric}_before", f"{metric}_after"]].mean()
        before = [agg.xs(b, level="base")[f"{metric}_before"].mean() for b in bases]
        ax.bar(x - 0.4, before, width, align="edge", color="0.7", edgecolor="black", lw=0.5, label="base")
        for k, beta in enumerate(betas):
            vals = [agg.loc[(b, beta), f"{metric}_after"] if (b, beta) in agg.index else np.nan for b in bases]
            ax.bar(x - 0.4 + (k + 1) * width, vals, width, align="edge", color=PALETTE[k % len(PALETTE)],
                   edgecolor="black", lw=0.5, label=f"SFT β={beta:g}")
        ax.set_ylabel(SCORE_LABELS[metric])
    axes[0].legend(ncol=len(betas) + 1, fontsize=8, frameon=False, loc="upper left")
    axes[-1].set_xticks(x, bases, rotation=30, ha="right", fontsize=8)
    axes[0].set_title("Calibration before and after SFT (mean over lr and seed)", fontsize=10)
    sns.despine(fig=fig)
    return fig


def reliability_grid(panels: Mapping[str, Mapping[str, pd.DataFrame]]) -> Figure:
    """One panel per (base model, evalset); in each, reliability curves of the base and every SFT model.

    ``panels`` maps a panel title to {curve label: ``lmcal.calibration.reliability_table`` frame}.
    """
    if not panels:
        raise ValueError("panels: need at least one")
    n = len(panels)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(4.2 * cols, 4.0 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (title, curves) in zip(axes, panels.items()):
        ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1)
        for k, (label, table) in enumerate(curves.items()):
            filled = table[table["count"] > 0]
            share = filled["count"].to_numpy(float) / max(table["count"].sum(), 1)
            color = "0.35" if k == 0 else PALETTE[(k - 1) % len(PALETTE)]
            ax.plot(filled["confidence"], filled["accuracy"], "-", color=color, lw=1.4, label=label)
            ax.scatter(filled["confidence"], filled["accuracy"], s=12 + 200 * share, color=color,
                       edgecolor="black", lw=0.3, zorder=3)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=title, xlabel="confidence", ylabel="accuracy")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    for ax in axes[n:]:
        ax.set_visible(False)
    sns.despine(fig=fig)
    return fig


def ls_effect_vs_v_over_d(effects: pd.DataFrame, *, title: str = "") -> Figure:
    """ECE reduction from label smoothing, ECE(β=0) − ECE(β), against V/D (log axis); one colour per β."""
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    if effects.empty:
        ax.text(0.5, 0.5, "no β > 0 runs", ha="center", va="center", transform=ax.transAxes)
        return fig
    for k, (beta, grp) in enumerate(effects.groupby("label_smoothing")):
        grp = grp.sort_values("v_over_d")
        ax.plot(grp["v_over_d"], grp["ece_reduction"], "o-", color=PALETTE[k % len(PALETTE)], label=f"β={beta:g}")
        if "hidden_size" in grp:
            for _, r in grp.iterrows():
                ax.annotate(f"V{int(r['vocab_size'])}/D{int(r['hidden_size'])}", (r["v_over_d"], r["ece_reduction"]),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="0.4", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set(xlabel="V / D", ylabel="ECE(β=0) − ECE(β)  (> 0: LS helps)", title=title)
    ax.legend(frameon=False, fontsize=8)
    sns.despine(fig=fig)
    return fig


def logit_gap_vs_delta_star(rows: pd.DataFrame) -> Figure:
    """Realised mean target-vs-rest logit gap after SFT against the LS optimum Δ*, per (V, D, β)."""
    sft_rows = rows[(rows["kind"] == "sft") & rows["delta_star"].notna()]
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.subplots()
    if len(sft_rows):
        lim = float(max(sft_rows["delta_star"].max(), sft_rows["gap_mean"].max())) * 1.1
        ax.plot([0, lim], [0, lim], ls="--", color="0.4", lw=1, label="gap = Δ*")
        sns.scatterplot(data=sft_rows, x="delta_star", y="gap_mean", hue="v_over_d", size="hidden_size",
                        palette="viridis", ax=ax)
    ax.set(xlabel="Δ* = ln(1 + (1−β)V/β)", ylabel="realised gap z_y − mean z_j (after SFT)")
    sns.despine(fig=fig)
    return fig


def vd_benefit_trend(table: pd.DataFrame, findings: Mapping[str, dict]) -> Figure:
    """V/D study: LS benefit in ECE and RMS-CE against V/D, one point per seed, cell means, the fitted slope.

    ``table`` is ``vd_analysis.vd_table``, ``findings`` its ``vd_analysis.vd_findings`` (slope and CI per β)."""
    panels = (("ece", "ece_reduction", "ECE(β=0) − ECE(β)"), ("rms_ce", "rms_ce_reduction", "RMS-CE(β=0) − RMS-CE(β)"))
    fig = Figure(figsize=(10.5, 4.2))
    axes = fig.subplots(1, 2)
    for ax, (metric, col, label) in zip(axes, panels):
        for k, (beta, grp) in enumerate(table.groupby("label_smoothing")):
            color = PALETTE[k % len(PALETTE)]
            ax.scatter(grp["v_over_d"], grp[col], s=10, color=color, alpha=0.5)
            cell = grp.groupby(["vocab_size", "hidden_size"]).agg(x=("v_over_d", "first"), y=(col, "mean"))
            ax.scatter(cell["x"], cell["y"], s=36, color=color, edgecolor="black", lw=0.5, zorder=3)
            for (v, d), r in cell.iterrows():
                ax.annotate(f"V{int(v)}/D{int(d)}", (r["x"], r["y"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
            t = findings.get(f"{float(beta):g}", {}).get(metric, {})
            text = f"β={beta:g}"
            if t.get("slope") is not None:
                x = np.log(grp["v_over_d"].to_numpy(float))
                xs = np.linspace(x.min(), x.max(), 20)
                ax.plot(np.exp(xs), grp[col].mean() + t["slope"] * (xs - x.mean()), color=color, lw=1.2)
                text += f": slope {t['slope']:+.4f}"
                if t.get("ci"):
                    text += f" [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}]"
            ax.plot([], [], color=color, label=text)
        ax.axhline(0, color="0.4", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set(xlabel="V / D", ylabel=f"{label}  (> 0: LS helps)")
        ax.legend(frameon=False, fontsize=7, title="slope per ln(V/D), 95% CI", title_fontsize=7)
    axes[0].set_title("V/D study: label-smoothing benefit vs V/D", fontsize=10)
    sns.despine(fig=fig)
    return fig


def vd_confidence_bound(rows: pd.DataFrame) -> Figure:
    """Per SFT model of the V/D study: the confidence bound of the LS target against the mean and max
    option-renormalised confidence the model reaches, along V/D (``vd_analysis.confidence_bound``)."""
    fig = Figure(figsize=(5.8, 4.2))
    ax = fig.subplots()
    sft_rows = rows[rows["kind"] == "sft"] if len(rows) else rows
    if not len(sft_rows):
        ax.text(0.5, 0.5, "no V/D models", ha="center", va="center", transform=ax.transAxes)
        return fig
    for k, (beta, grp) in enumerate(sft_rows.groupby("label_smoothing")):
        color = PALETTE[k % len(PALETTE)]
        cell = grp.groupby("v_over_d")[["conf_bound", "conf_mean", "conf_max"]].agg(
            {"conf_bound": "min", "conf_mean": "mean", "conf_max": "max"}).sort_index()
        ax.plot(cell.index, cell["conf_bound"], "-", color=color, lw=1.4, label=f"β={beta:g}: LS bound")
        ax.scatter(grp["v_over_d"], grp["conf_max"], marker="^", s=18, color=color, label=f"β={beta:g}: max reached")
        ax.scatter(grp["v_over_d"], grp["conf_mean"], marker="o", s=14, facecolor="none", edgecolor=color,
                   label=f"β={beta:g}: mean reached")
    ax.set_xscale("log")
    ax.set(xlabel="V / D", ylabel="option-renormalised confidence", ylim=(0, 1.02),
           title="LS confidence bound vs confidence reached")
    ax.title.set_fontsize(10)
    ax.legend(frameon=False, fontsize=7, loc="lower left")
    sns.despine(fig=fig)
    return fig
