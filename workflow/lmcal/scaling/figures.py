"""Scaling-law figures (spec §5): F1 loss scaling, F7 backtest, F8 corner plot of the bootstrap draws.

Each function returns a matplotlib Figure; save it with ``lmcal.core.io.save_figure`` (Agg backend, no display).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from lmcal.scaling.backtest import summarise_backtest
from lmcal.scaling.result import FitResult

PARAM_LABELS = {"E": "E", "A": "log10 A", "B": "log10 B", "alpha": "α", "beta": "β"}


def plot_loss_scaling(
    n, loss, fit: FitResult, *, heldout=None, ylabel: str = "held-out CE [nats/token]", title: str | None = None
):
    """F1: loss vs N (log-log) with the E + A·N^-α fit, its bootstrap band, held-out points and residual inset.

    ``heldout`` is a boolean mask of points NOT used by ``fit`` (drawn hollow, the curve extends to them).
    """
    n, loss = np.asarray(n, float), np.asarray(loss, float)
    heldout = np.zeros(len(n), bool) if heldout is None else np.asarray(heldout, bool)
    if fit.form != "power_law":
        raise ValueError(f"plot_loss_scaling draws a power-law fit, got form {fit.form!r}")
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 200)
    if fit.theta_draws is not None:
        lo, hi = fit.confidence_band(grid)
        ax.fill_between(grid, lo, hi, color="C0", alpha=0.2, lw=0, label=f"{fit.settings.ci:.0%} bootstrap band")
    p = fit.params
    ax.plot(grid, fit.predict(grid), color="C0",
            label=f"E + A·N^-α: E={p['E']:.3g}, A={p['A']:.3g}, α={p['alpha']:.3f}")
    ax.axhline(p["E"], color="C0", ls=":", lw=0.8)
    ax.scatter(n[~heldout], loss[~heldout], color="k", s=18, zorder=3, label="fitted")
    if heldout.any():
        ax.scatter(n[heldout], loss[heldout], facecolors="none", edgecolors="C3", s=36, zorder=3, label="held out")
    ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", ylabel=ylabel, title=title)
    ax.legend(fontsize=7, loc="upper right")
    # Residual inset: ln L − ln L̂ at every point, the held-out ones included.
    ins = ax.inset_axes([0.1, 0.1, 0.38, 0.28])
    resid = np.log(loss) - np.log(fit.predict(n))
    ins.axhline(0, color="grey", lw=0.6)
    ins.scatter(n[~heldout], resid[~heldout], s=6, color="k")
    ins.scatter(n[heldout], resid[heldout], s=8, facecolors="none", edgecolors="C3")
    ins.set_xscale("log")
    ins.set_ylabel(r"$\ln L - \ln \hat{L}$", fontsize=6)
    ins.tick_params(labelsize=5)
    fig.tight_layout()
    return fig


def plot_backtest(df: pd.DataFrame, title: str | None = None):
    """F7: (a) mean abs error at held-out sizes vs #smallest models fitted, one line per metric, with the 95%
    PI coverage in the legend; (b) |relative error| vs extrapolation distance in decades of N."""
    summary = summarise_backtest(df)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (metric, g) in enumerate(summary.groupby("metric", sort=True)):
        cov = (df.loc[df["metric"] == metric, "covered"]).mean()
        ax.plot(g["k"], g["mean_abs_err"], marker="o", color=f"C{i}", label=f"{metric} (PI coverage {cov:.0%})")
    ax.set(xlabel="# smallest models fitted (k)", ylabel="mean |predicted − observed|", yscale="log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    sns.scatterplot(data=df.assign(abs_rel_err=df["rel_err"].abs()), x="decades", y="abs_rel_err",
                    hue="metric", style="covered", ax=bx, s=28)
    bx.set(xlabel="extrapolation distance [decades of N]", ylabel="|relative error|", yscale="log")
    bx.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_corner(fit: FitResult, params: Sequence[str] = ("E", "A", "alpha")):
    """F8: corner plot of the bootstrap draws (A and B on log10 scale), with the point estimate and CI."""
    draws = fit.draws_frame().dropna()
    missing = [p for p in params if p not in draws]
    if missing:
        raise ValueError(f"params {missing} are not parameters of this fit ({list(draws.columns)})")
    shown = pd.DataFrame({p: np.log10(draws[p]) if p in ("A", "B") else draws[p] for p in params})
    point = {p: np.log10(fit.params[p]) if p in ("A", "B") else fit.params[p] for p in params}
    ci = {p: np.log10(fit.ci[p]) if p in ("A", "B") else np.asarray(fit.ci[p]) for p in params}
    k = len(params)
    fig, axes = plt.subplots(k, k, figsize=(2.4 * k, 2.4 * k), squeeze=False)
    for i, pi in enumerate(params):
        for j, pj in enumerate(params):
            ax = axes[i, j]
            if j > i:
                ax.set_axis_off()
                continue
            if i == j:
                ax.hist(shown[pi], bins=30, color="C0", alpha=0.7)
                for v in ci[pi]:
                    ax.axvline(v, color="k", ls="--", lw=0.8)
                ax.axvline(point[pi], color="C3", lw=1)
                ax.set_yticks([])
                ax.set_title(f"{PARAM_LABELS.get(pi, pi)} = {point[pi]:.3g} [{ci[pi][0]:.3g}, {ci[pi][1]:.3g}]",
                             fontsize=7)
            else:
                ax.scatter(shown[pj], shown[pi], s=3, alpha=0.3, color="C0", lw=0)
                ax.scatter([point[pj]], [point[pi]], color="C3", s=20, marker="x")
            if i == k - 1:
                ax.set_xlabel(PARAM_LABELS.get(pj, pj))
            if j == 0 and i > 0:
                ax.set_ylabel(PARAM_LABELS.get(pi, pi))
    fig.suptitle(f"{len(shown)} bootstrap draws, {fit.settings.ci:.0%} percentile intervals", fontsize=9)
    fig.tight_layout()
    return fig
