"""Figures 1–4 of the entropy-calibration study (spec §8), redrawn with seaborn on the Agg backend.

Each function takes the study's tables and returns a matplotlib Figure; the caller saves it with
``lmcal.core.io.save_figure`` (and logs it to MLflow). Sizes are real parameter counts (``size_key``), never nominal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def _grid(n_rows: int, n_cols: int, w: float = 4.0, h: float = 3.2, **kw):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows), squeeze=False, **kw)
    return fig, axes


def plot_size_fits(table: pd.DataFrame, fits: pd.DataFrame, draws: pd.DataFrame, *, decode: str,
                   size_key: str = "n_params_non_embedding", size_unit: float = 1e9, ci: float = 0.95):
    """Fig. 1: ln(size) vs ln EntCE, one panel per family, one colour per dataset, OLS line and bootstrap band.

    Points with EntCE ≤ 0 are drawn at ln|EntCE| as hollow markers (they have no logarithm; see the fits'
    ``negative`` policy). Legend: ``Y = e^b·X^slope`` with X in units of ``size_unit`` parameters.
    """
    base = table[table["decode"] == decode]
    families = sorted(base["family"].unique())
    datasets = sorted(base["dataset"].unique())
    colours = dict(zip(datasets, sns.color_palette("colorblind", len(datasets))))
    fig, axes = _grid(1, max(len(families), 1), sharey=True)
    for ax, family in zip(axes[0], families):
        for dataset in datasets:
            pts = base[(base["family"] == family) & (base["dataset"] == dataset)]
            if pts.empty:
                continue
            lx = np.log(pts[size_key].to_numpy(float) / size_unit)
            y = pts["entce"].to_numpy(float)
            with np.errstate(divide="ignore"):
                ly = np.log(np.abs(y))
            c = colours[dataset]
            ax.scatter(lx[y > 0], ly[y > 0], color=c, zorder=3)
            ax.scatter(lx[y <= 0], ly[y <= 0], facecolors="none", edgecolors=c, zorder=3)
            fit = fits[(fits["family"] == family) & (fits["dataset"] == dataset)]
            if fit.empty or fit.iloc[0].get("status") != "ok":
                ax.plot([], [], "o", color=c, label=f"{dataset} (no fit)")
                continue
            f = fit.iloc[0]
            grid = np.linspace(lx.min(), lx.max(), 50)
            ax.plot(grid, f["intercept"] + f["slope"] * grid, color=c,
                    label=f"{dataset}: $Y = e^{{{f['intercept']:.2f}}}\\cdot X^{{{f['slope']:.3f}}}$")
            d = draws[(draws["family"] == family) & (draws["dataset"] == dataset)].dropna()
            if len(d) >= 2:
                lines = d["intercept"].to_numpy()[:, None] + d["slope"].to_numpy()[:, None] * grid[None, :]
                lo, hi = np.quantile(lines, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
                ax.fill_between(grid, lo, hi, color=c, alpha=0.2, linewidth=0)
        ax.set_title(family)
        ax.set_xlabel(f"ln(size / {size_unit:g}) [{size_key}]")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("ln EntCE (nats/token)")
    fig.suptitle(f"EntCE vs model size (decode {decode}; band: {ci:.0%} document bootstrap)")
    fig.tight_layout()
    return fig


def plot_step_curves(curves: pd.DataFrame, sizes: Mapping[str, float], families: Mapping[str, str], *,
                     smoothed: bool = True, series: Sequence[str] = ("entropy", "logloss")):
    """Fig. 2: per-step sample entropy (solid) and human log loss (dashed), nats; colour = ln size.

    ``curves``: long table with ``model, dataset, series, step, mean, smoothed`` at one decode. Rows = families,
    columns = datasets.
    """
    fams = sorted({families[m] for m in curves["model"].unique()})
    datasets = sorted(curves["dataset"].unique())
    logs = {m: np.log(s) for m, s in sizes.items()}
    norm = matplotlib.colors.Normalize(min(logs.values()), max(logs.values()) + 1e-9)
    cmap = matplotlib.colormaps["viridis"]
    styles = dict(zip(series, ["-", "--", ":", "-."]))
    fig, axes = _grid(len(fams), len(datasets), sharex=True)
    col = "smoothed" if smoothed else "mean"
    for i, fam in enumerate(fams):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            for model in sorted((m for m in curves["model"].unique() if families[m] == fam), key=logs.get):
                for s in series:
                    c = curves[(curves["model"] == model) & (curves["dataset"] == dataset) & (curves["series"] == s)]
                    ax.plot(c["step"], c[col], styles[s], color=cmap(norm(logs[model])), linewidth=1)
            ax.set_title(f"{fam} / {dataset}", fontsize=9)
            if i == len(fams) - 1:
                ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("nats")
    handles = [matplotlib.lines.Line2D([], [], color="k", linestyle=styles[s], label=s) for s in series]
    axes[0, 0].legend(handles=handles, fontsize=7)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="ln(size)")
    fig.suptitle("entropy of own samples (solid) vs human log loss (dashed)" + (" — EMA smoothed" if smoothed else ""))
    return fig


def plot_temperature(temps: pd.DataFrame, *, models: Sequence[str] | None = None,
                     instruct: Mapping[str, str] | None = None, instruct_rows: pd.DataFrame | None = None):
    """Fig. 3: EntCE vs human log loss at τ (nats/token), a polyline over τ per (model, dataset), y = 0 line.

    ``instruct`` maps an instruct model to its base model; its τ = 1 point (from ``instruct_rows``) is joined to
    the base model's τ = 1 point with a dotted line.
    """
    models = sorted(temps["model"].unique()) if models is None else list(models)
    datasets = sorted(temps["dataset"].unique())
    fig, axes = _grid(max(len(models), 1), max(len(datasets), 1))
    for i, model in enumerate(models):
        for j, dataset in enumerate(datasets):
            ax = axes[i, j]
            d = temps[(temps["model"] == model) & (temps["dataset"] == dataset)].sort_values("temperature")
            ax.plot(d["logloss"], d["entce"], "o-", color="C0")
            for _, r in d.iterrows():
                ax.annotate(f"τ={r['temperature']:g}", (r["logloss"], r["entce"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
            for inst, base in (instruct or {}).items():
                if base != model or instruct_rows is None:
                    continue
                ip = instruct_rows[(instruct_rows["model"] == inst) & (instruct_rows["dataset"] == dataset)]
                b1 = d[np.isclose(d["temperature"], 1.0)]
                if len(ip) and len(b1):
                    ax.plot([b1["logloss"].iloc[0], ip["logloss"].iloc[0]],
                            [b1["entce"].iloc[0], ip["entce"].iloc[0]], "s:", color="C3", label=inst)
                    ax.legend(fontsize=7)
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_title(f"{model} / {dataset}", fontsize=9)
            ax.set_xlabel("human log loss at τ (nats/token)")
            ax.set_ylabel("EntCE (nats/token)")
    fig.tight_layout()
    return fig


def plot_theory(rates: pd.DataFrame, rank_freq: pd.DataFrame, zipf: Mapping[str, Mapping[str, float]], *,
                alphas: Sequence[float] = (1.0, 1.25, 1.5)):
    """Fig. 4: left, ln m vs ln E[K_{m,1}/m] (exact sum) per α with dashed reference slopes 1/α − 1;
    right, ln rank vs ln frequency of each corpus's top unigrams with its fitted Zipf line."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for k, a in enumerate(alphas):
        d = rates[np.isclose(rates["alpha"], a)].sort_values("m")
        if d.empty:
            continue
        lm, lq = np.log(d["m"].to_numpy(float)), np.log(d["exact"].to_numpy(float))
        left.plot(lm, lq, "o-", color=f"C{k}", label=f"α={a:g}")
        left.plot(lm, lq[0] + (1 / a - 1) * (lm - lm[0]), "--", color=f"C{k}", linewidth=1,
                  label=f"slope 1/α−1 = {1 / a - 1:+.2f}")
        if "mc_mean" in d and d["mc_mean"].notna().all():  # Monte Carlo check, ±2 SE (in ln units)
            mc, se = d["mc_mean"].to_numpy(float), d["mc_se"].to_numpy(float)
            left.errorbar(lm, np.log(mc), yerr=2 * se / mc, fmt="x", color="k", markersize=4, linewidth=0.8,
                          label="Monte Carlo ±2 SE" if k == 0 else None)
    left.set_xlabel("ln m (training tokens)")
    left.set_ylabel(r"$\ln E[K_{m,1}/m]$")
    left.legend(fontsize=7)
    for k, (dataset, d) in enumerate(sorted(rank_freq.groupby("dataset"), key=lambda t: t[0])):
        lr, lf = np.log(d["rank"].to_numpy(float)), np.log(d["freq"].to_numpy(float))
        right.plot(lr, lf, ".", markersize=2, color=f"C{k}", alpha=0.5)
        z = zipf[dataset]
        right.plot(lr, z["intercept"] - z["alpha"] * lr, "-", color=f"C{k}",
                   label=f"{dataset}: α={z['alpha']:.3f}")
    right.set_xlabel("ln rank")
    right.set_ylabel("ln frequency")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig
