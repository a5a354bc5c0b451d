"""Figure of the model ladder: held-out loss vs non-embedding parameters, and the training curves."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def plot_ladder(table: pd.DataFrame, histories: list[pd.DataFrame], names: list[str], fit=None):
    """Held-out loss vs size (with the fitted E + A·N^-α and its bootstrap band if given) and train curves."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(table["n_params_non_embedding"], table["heldout_loss"], "o-")
    for _, row in table.iterrows():
        ax1.annotate(row["name"], (row["n_params_non_embedding"], row["heldout_loss"]), fontsize=7,
                     xytext=(3, 3), textcoords="offset points")
    if fit is not None:
        grid = np.geomspace(table["n_params_non_embedding"].min() / 1.3, table["n_params_non_embedding"].max() * 1.3, 100)
        p = fit.params
        ax1.plot(grid, fit.predict(grid), "--", color="grey",
                 label=f"fit {p['E']:.2f} + {p['A']:.3g}·N^-{p['alpha']:.2f}")
        if fit.theta_draws is not None:
            lo, hi = fit.confidence_band(grid)
            ax1.fill_between(grid, lo, hi, color="grey", alpha=0.2)
        ax1.legend(fontsize=7)
    ax1.set_xscale("log")
    ax1.set_xlabel("non-embedding parameters")
    ax1.set_ylabel("held-out loss (nats/token)")
    ax1.set_title("Ladder: held-out loss vs size")
    palette = sns.color_palette("viridis", len(histories))
    order = np.argsort([table.set_index("name").loc[n, "n_params_non_embedding"] for n in names])
    for colour, i in zip(palette, order):
        h = histories[i]
        smooth = h["train_loss"].rolling(10, min_periods=1).mean()
        ax2.plot(h["step"], smooth, color=colour, label=names[i])
    ax2.set_xlabel("step")
    ax2.set_ylabel("train loss (nats/token, 10-step mean)")
    ax2.legend(fontsize=7)
    ax2.set_title("Training curves")
    fig.tight_layout()
    return fig
