"""Figures of the emergence study (spec §5: F1–F7, F11, F12), seaborn/matplotlib on the Agg backend.

Each function takes the study's tables (``lmcal.emergence.report``) and returns a Figure; the caller saves it
with ``lmcal.core.io.save_figure``. x = measured non-embedding parameters N.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lmcal.emergence import analysis as an
from lmcal.emergence.metrics import LABELS


def _grid(rows: int, cols: int, w: float = 3.6, h: float = 2.9, **kw):
    return plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False, **kw)


def _seed_points(ax, pts: pd.DataFrame, metric: str, colour) -> None:
    ax.scatter(pts["n_params"], pts[metric], s=10, alpha=0.35, color=colour, lw=0)


def _seed_band(ax, g: pd.DataFrame, metric: str, colour, label: str | None = None) -> None:
    """Seed mean (line) with its min-max over seeds (band), where seed_means gave the spread."""
    ax.plot(g["n_params"], g[metric], "o-", ms=3, color=colour, label=label)
    if f"{metric}_min" in g and (g["n_seeds"] > 1).any():
        ax.fill_between(g["n_params"], g[f"{metric}_min"], g[f"{metric}_max"], color=colour, alpha=0.18, lw=0)


def plot_loss_scaling(points: pd.DataFrame, law, fit_sizes: Sequence[float]):
    """F1: held-out CE of every rung vs N (log-log) with the E + A·N^-α fit, its band and held-out sizes."""
    fig, (ax, rax) = plt.subplots(2, 1, figsize=(5, 5), sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
    held = ~points["n_params"].isin(fit_sizes)
    ax.scatter(points.loc[~held, "n_params"], points.loc[~held, "heldout_ce"], s=14, label="fitted")
    ax.scatter(
        points.loc[held, "n_params"],
        points.loc[held, "heldout_ce"],
        s=30,
        marker="*",
        color="C3",
        label="held out",
    )
    grid = np.geomspace(points["n_params"].min() / 1.3, points["n_params"].max() * 1.3, 100)
    p = law.params
    ax.plot(
        grid, law.predict(grid), color="k", lw=1, label=f"{p['E']:.3f} + {p['A']:.3g}·N^-{p['alpha']:.3f}"
    )
    if law.theta_draws is not None:
        lo, hi = law.confidence_band(grid)
        ax.fill_between(
            grid, lo, hi, color="k", alpha=0.12, lw=0, label=f"{law.settings.ci:.0%} bootstrap band"
        )
    ax.set(
        xscale="log", yscale="log", ylabel="held-out CE [nats/char]", title="F1 loss scaling (task ladder)"
    )
    ax.legend(fontsize=7)
    rax.axhline(0, color="k", lw=0.5)
    rax.scatter(
        points["n_params"],
        np.log(points["heldout_ce"]) - np.log(law.predict(points["n_params"].to_numpy(float))),
        s=8,
    )
    rax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="ln obs − ln fit")
    fig.tight_layout()
    return fig


def plot_mirage_panel(
    means: pd.DataFrame,
    points: pd.DataFrame,
    mirage: dict,
    components: Sequence[str],
    metrics: Sequence[str] = (
        "exact_match",
        "norm_edit_distance",
        "per_digit_acc",
        "target_logprob",
        "mc_grade",
        "brier",
    ),
):
    """F2: rows = components, columns = metrics from the same outputs (seed mean, band = min-max over seeds);
    dashed = Mirage prediction from the per-token CE fit (EM = p^L, edit distance/L = 1 − p)."""
    fig, axes = _grid(len(components), len(metrics), sharex=True)
    for r, comp in enumerate(components):
        g, pts = means[means["component"] == comp], points[points["component"] == comp]
        for c, m in enumerate(metrics):
            ax = axes[r, c]
            if g[m].isna().all():
                ax.set_axis_off()
                continue
            _seed_points(ax, pts, m, "C0")
            _seed_band(ax, g, m, "C0")
            pred = {"exact_match": "em_pred", "norm_edit_distance": "ned_pred"}.get(m)
            if pred and comp in mirage:
                ax.plot(g["n_params"], mirage[comp][pred], "--", color="C3", label="Mirage p^L / 1−p")
                ax.legend(fontsize=6)
            ax.set(xscale="log", title=f"{comp}: {LABELS.get(m, m)}")
            ax.title.set_fontsize(8)
    for ax in axes[-1]:
        ax.set_xlabel("N (non-embedding)")
    fig.suptitle("F2 same outputs, different metrics", y=1.0)
    fig.tight_layout()
    return fig


def plot_axis_artefact(means: pd.DataFrame, components: Sequence[str]):
    """F3: exact match vs N on a linear and a log axis (same points; seed mean, band = min-max over seeds)."""
    fig, axes = _grid(1, 2, w=4.5)
    for i, comp in enumerate(components):
        g = means[means["component"] == comp]
        for ax in axes[0]:
            _seed_band(ax, g, "exact_match", f"C{i % 10}", label=comp)
    axes[0, 0].set(xlabel="N (linear)", ylabel="exact match", title="F3 linear x")
    axes[0, 1].set(xscale="log", xlabel="N (log)", title="F3 log x")
    axes[0, 1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pass_until(pu: pd.DataFrame, laws: dict):
    """F4: log(−log PU) vs ln N with Clopper–Pearson bars (transformed) and the linear task-law fit."""
    fig, axes = _grid(1, 1, w=5, h=4)
    ax = axes[0, 0]
    for i, (comp, g) in enumerate(pu.groupby("component")):
        g = g.groupby("n_params")[["n_hits", "n_samples"]].sum().reset_index()
        from lmcal.emergence.metrics import clopper_pearson

        p = g["n_hits"] / g["n_samples"]
        lo, hi = clopper_pearson(g["n_hits"], g["n_samples"])
        ok = (p > 0) & (p < 1)
        if not ok.any():
            continue
        y = np.log(-np.log(p[ok]))
        # log(−log p) decreases in p: the upper p bound gives the lower y bound
        ylo = np.log(-np.log(np.clip(hi[ok], 1e-300, 1 - 1e-12)))
        yhi = np.log(-np.log(np.clip(lo[ok], 1e-300, 1 - 1e-12)))
        x = np.log(g["n_params"][ok])
        ax.errorbar(x, y, yerr=[y - ylo, yhi - y], fmt="o", ms=3, color=f"C{i}", label=comp, capsize=2)
        fit = (laws.get(comp) or {}).get("pooled")
        if fit:
            ax.plot(x, fit["intercept"] + fit["slope"] * x, "-", color=f"C{i}", lw=0.8)
    ax.set(xlabel="ln N", ylabel="ln(−ln PU)", title="F4 PassUntil resolution (sampled EM)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_loss_threshold(all_points: pd.DataFrame, hinges: dict, metric: str = "exact_match"):
    """F5: metric vs held-out loss (reversed axis) for every size and checkpoint, with the hinge fit η ± CI."""
    comps = list(hinges)
    fig, axes = _grid(1, max(len(comps), 1), w=4.2)
    for ax, comp in zip(axes[0], comps):
        g = all_points[all_points["component"] == comp]
        sns.scatterplot(
            data=g,
            x="heldout_ce",
            y=metric,
            hue=np.log10(g["n_params"]),
            palette="viridis",
            ax=ax,
            s=16,
            legend=False,
        )
        h = hinges[comp]
        grid = np.linspace(g["heldout_ce"].min(), g["heldout_ce"].max(), 100)
        ax.plot(grid, an.hinge_predict(grid, h["eta"], h["base"], h["slope"]), "k-", lw=1)
        ax.axvspan(h["eta_lo"], h["eta_hi"], color="C3", alpha=0.15, lw=0)
        ax.axvline(
            h["eta"], color="C3", lw=1, label=f"η = {h['eta']:.3f} [{h['eta_lo']:.3f}, {h['eta_hi']:.3f}]"
        )
        ax.axhline(0, color="grey", ls=":", lw=1, label="chance")
        ax.invert_xaxis()
        ax.set(
            xlabel="held-out CE [nats/char] (reversed)", ylabel=LABELS.get(metric, metric), title=f"F5 {comp}"
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_two_step(forecast: pd.DataFrame, curve_points: pd.DataFrame):
    """F6: (a) task NLL vs N with the power law and PI; (b) metric vs task NLL with the floored sigmoid;
    held-out sizes as stars (predicted vs actual)."""
    keys = forecast[["component", "metric"]].drop_duplicates().to_numpy()
    fig, axes = _grid(len(keys), 2, w=4.2)
    for r, (comp, metric) in enumerate(keys):
        t = forecast[(forecast["component"] == comp) & (forecast["metric"] == metric)].sort_values("n")
        a, b = axes[r]
        a.plot(t["n"], t["actual_loss"], "o", ms=4, label="observed")
        a.plot(t["n"], t["pred_loss"], "-", color="k", lw=1, label="power law (fitted sizes)")
        a.fill_between(t["n"], t["pred_loss_lo"], t["pred_loss_hi"], color="k", alpha=0.12, lw=0)
        a.set(xscale="log", yscale="log", xlabel="N", ylabel="task per-token CE", title=f"F6a {comp}")
        pts = curve_points[curve_points["component"] == comp]
        b.scatter(pts["per_token_ce"], pts[metric], s=8, alpha=0.4, label="all checkpoints")
        ho = t[t["held_out"]]
        b.scatter(ho["actual_loss"], ho["actual"], marker="*", s=60, color="C3", label="held out: actual")
        b.scatter(ho["pred_loss"], ho["predicted"], marker="x", s=40, color="k", label="held out: predicted")
        b.invert_xaxis()
        b.set(xlabel="task per-token CE (reversed)", ylabel=LABELS.get(metric, metric), title=f"F6b {metric}")
        b.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_backtest(bt: pd.DataFrame):
    """F7: absolute error at the held-out sizes vs the number of smallest sizes fitted, one line per metric."""
    fig, axes = _grid(1, 1, w=5, h=3.6)
    ax = axes[0, 0]
    agg = bt.groupby(["component", "metric", "k"])["abs_error"].mean().reset_index()
    agg["series"] = agg["component"] + " / " + agg["metric"]
    sns.lineplot(data=agg, x="k", y="abs_error", hue="series", marker="o", ax=ax)
    cov = bt.groupby(["component", "metric"])["covered"].mean()
    ax.set(
        xlabel="# smallest sizes fitted (k)",
        ylabel="mean |predicted − actual|",
        title="F7 backtest; PI coverage " + ", ".join(f"{m}: {v:.0%}" for (_, m), v in cov.items()),
    )
    ax.title.set_fontsize(8)
    fig.tight_layout()
    return fig


def plot_u_shape(means: pd.DataFrame, components: Sequence[str], metric: str = "exact_match"):
    """F11: metric vs ln N with the best monotone (isotonic) fit and a quadratic in ln N."""
    fig, axes = _grid(1, max(len(components), 1), w=4)
    for ax, comp in zip(axes[0], components):
        g = means[means["component"] == comp].sort_values("n_params")
        x, y = np.log(g["n_params"].to_numpy()), g[metric].to_numpy()
        test = an.u_shape_test(g["n_params"], y)
        iso = an.isotonic(y, test["isotonic_direction"] == "increasing")
        q = np.polyfit(x, y, 2)
        ax.plot(x, y, "o", ms=4)
        ax.step(x, iso, where="mid", color="C2", label=f"isotonic SSE {test['sse_isotonic']:.3g}")
        xx = np.linspace(x.min(), x.max(), 100)
        ax.plot(
            xx,
            np.polyval(q, xx),
            "--",
            color="C3",
            label=f"quadratic SSE {test['sse_quadratic']:.3g} (p={test['quad_p']:.2g})",
        )
        ax.set(
            xlabel="ln N", ylabel=LABELS.get(metric, metric), title=f"F11 {comp}: U-shaped={test['u_shaped']}"
        )
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_scratchpad(means: pd.DataFrame, crossovers: Sequence[dict]):
    """F12: EM with vs without scratchpad vs N; crossover size ± CI where one exists."""
    fig, axes = _grid(1, max(len(crossovers), 1), w=4)
    for ax, cr in zip(axes[0], crossovers):
        nd = cr["n_digits"]
        for fmt, colour in (("direct", "C0"), ("scratchpad", "C1")):
            g = means[means["component"] == f"add{nd}-{fmt}"]
            _seed_band(ax, g, "exact_match", colour, label=fmt)
        if np.isfinite(cr["crossover_n"]):
            ax.axvline(cr["crossover_n"], color="k", lw=1, label=f"crossover {cr['crossover_n']:.3g}")
            if np.isfinite(cr["crossover_lo"]):
                ax.axvspan(cr["crossover_lo"], cr["crossover_hi"], color="k", alpha=0.1, lw=0)
        ax.set(
            xscale="log",
            xlabel="N",
            ylabel="exact match",
            title=f"F12 add {nd}-digit (p_cross={cr['p_cross']:.2f})",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def make_figures(rep: dict, curves: pd.DataFrame, pass_until: pd.DataFrame) -> dict[str, plt.Figure]:
    """Every figure the report can draw from ``lmcal.emergence.report.analyze`` output, keyed by file name.

    Figures whose inputs are absent (no scratchpad format, no PassUntil samples, no forecastable metric) are
    left out rather than drawn empty.
    """
    from lmcal.emergence.report import ladder_points

    res, tables = rep["results"], rep["tables"]
    means, headline = tables["means"], res["headline"]
    points, all_points = ladder_points(curves), ladder_points(curves, final_only=False)
    figs = {}
    loss_pts = tables["loss_points"]
    figs["F1_loss_scaling.png"] = plot_loss_scaling(
        loss_pts, rep["fits"]["loss"], res["loss_scaling"]["fit_sizes"]
    )
    comps = sorted(means["component"].unique())
    figs["F2_mirage_panel.png"] = plot_mirage_panel(means, points, res["mirage"], comps)
    fig = plot_axis_artefact(means, comps)
    ref = curves[(curves["family"] != "ladder") & curves["component"].isin(comps)]
    for r in ref.itertuples():
        fig.axes[1].scatter(r.n_params, r.exact_match, marker="*", s=80, label=f"{r.family} {r.component}")
    if len(ref):
        fig.axes[1].legend(fontsize=6)
    figs["F3_axis_artefact.png"] = fig
    if len(pass_until) and res["pass_until"]:
        figs["F4_pass_until.png"] = plot_pass_until(
            pass_until[pass_until["family"] == "ladder"], res["pass_until"]
        )
    if res["loss_threshold"]:
        figs["F5_loss_threshold.png"] = plot_loss_threshold(all_points, res["loss_threshold"])
    if len(tables["forecast"]):
        figs["F6_two_step.png"] = plot_two_step(tables["forecast"], all_points)
        figs["F7_backtest.png"] = plot_backtest(tables["backtest"])
    figs["F11_u_shape.png"] = plot_u_shape(means, headline)
    if res["scratchpad"]:
        figs["F12_scratchpad.png"] = plot_scratchpad(means, res["scratchpad"])
    return figs
