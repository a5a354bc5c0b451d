"""Two-step forecast of a hard metric: size N → task loss (power law, ``lmcal.scaling``) → metric (sigmoid
floored at chance), and its backtest on held-out largest models (spec §2.6, figures F6/F7).

Step 1 fits the task's per-token target CE of the final checkpoints, L(N) = E + A·N^(−α), with the scaling
helper's summed log-space Huber fit. Step 2 fits metric = chance + (1 − chance)·σ((ℓ₀ − ℓ)/w) on every
(checkpoint, size) point of the fitted sizes, since the loss → metric link is size-independent (Du et al. 2024).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

from lmcal.scaling.fit import fit_power_law
from lmcal.scaling.settings import FitSettings


def sigmoid_floor(loss, l0: float, width: float, chance: float) -> np.ndarray:
    """chance + (1 − chance)·σ((l0 − loss)/width): chance at high loss, 1 at low loss."""
    return chance + (1 - chance) * expit((l0 - np.asarray(loss, dtype=float)) / width)


def fit_sigmoid_floor(loss, y, chance: float) -> dict:
    """Least-squares (l0, width > 0) of ``sigmoid_floor`` to (loss, metric) points; chance is fixed."""
    loss, y = np.asarray(loss, dtype=float), np.asarray(y, dtype=float)
    if loss.shape != y.shape or loss.ndim != 1 or len(loss) < 2:
        raise ValueError("loss and y must be 1-D arrays of equal length >= 2")
    if not 0 <= chance < 1:
        raise ValueError(f"chance must be in [0, 1), got {chance}")
    spread = max(float(np.ptp(loss)), 1e-3)

    def resid(theta):
        return sigmoid_floor(loss, theta[0], np.exp(theta[1]), chance) - y

    starts = [(q, np.log(spread * s)) for q in np.quantile(loss, [0.1, 0.5, 0.9]) for s in (0.05, 0.3)]
    best = min(
        (least_squares(resid, s, method="lm" if len(loss) > 2 else "trf") for s in starts),
        key=lambda r: r.cost,
    )
    return dict(
        l0=float(best.x[0]),
        width=float(np.exp(best.x[1])),
        chance=float(chance),
        sse=float(2 * best.cost),
        n_points=len(loss),
        residuals=(-best.fun).tolist(),
    )


def fit_task_law(final: pd.DataFrame, fit_sizes, settings: FitSettings):
    """Step 1: E + A·N^(−α) fitted to the task loss of the final checkpoints at ``fit_sizes`` (bootstrap
    resamples nested in sizes). The law depends only on the loss, so every metric of a task can share it."""
    train = final[final["n"].isin(set(fit_sizes))]
    if train["n"].nunique() < 3:
        raise ValueError(f"fit_sizes: need >= 3 distinct sizes for E + A·N^-α, got {train['n'].nunique()}")
    return fit_power_law(
        train["n"].to_numpy(float),
        train["loss"].to_numpy(float),
        settings,
        groups=train["n"].to_numpy(),
        progress=False,
    )


def two_step_forecast(
    final: pd.DataFrame, curve: pd.DataFrame, fit_sizes, chance: float, settings: FitSettings, law=None
) -> dict:
    """Fit both steps on the sizes ``fit_sizes`` and predict the metric at every size.

    ``final``: one row per (size, seed) final checkpoint with columns n (non-embedding params), loss (task
    per-token CE, nats), metric. ``curve``: every (size, seed, step) point with loss and metric (step 2).
    ``law``: a step-1 fit from ``fit_task_law`` on the same sizes, to reuse across metrics.
    Returns the two fits and a per-size table: n, held_out, actual (mean over seeds), predicted loss and its
    prediction interval, predicted metric, its interval and abs_error. The metric interval maps step 1's
    prediction interval through the sigmoid and widens it by the (1 ± ci)/2 quantiles of step 2's residuals,
    so it covers both the loss extrapolation and the scatter of a metric around its loss curve.
    """
    fit_sizes = set(fit_sizes)
    law = law if law is not None else fit_task_law(final, fit_sizes, settings)
    link = fit_sigmoid_floor(*curve[curve["n"].isin(fit_sizes)][["loss", "metric"]].to_numpy(float).T, chance)
    r_lo, r_hi = np.quantile(link["residuals"], [(1 - settings.ci) / 2, (1 + settings.ci) / 2])
    sizes = np.sort(final["n"].unique())
    pred_loss = law.predict(sizes)
    if law.theta_draws is not None:
        lo, hi = law.prediction_interval(sizes)
    else:
        lo = hi = pred_loss
    table = pd.DataFrame(
        dict(
            n=sizes,
            held_out=[s not in fit_sizes for s in sizes],
            actual=final.groupby("n")["metric"].mean().reindex(sizes).to_numpy(),
            actual_loss=final.groupby("n")["loss"].mean().reindex(sizes).to_numpy(),
            pred_loss=pred_loss,
            pred_loss_lo=lo,
            pred_loss_hi=hi,
            predicted=sigmoid_floor(pred_loss, link["l0"], link["width"], chance),
            # the metric falls with loss, so the upper loss bound gives the lower metric bound
            pred_lo=np.clip(sigmoid_floor(hi, link["l0"], link["width"], chance) + r_lo, 0, 1),
            pred_hi=np.clip(sigmoid_floor(lo, link["l0"], link["width"], chance) + r_hi, 0, 1),
        )
    )
    table["abs_error"] = (table["predicted"] - table["actual"]).abs()
    table["covered"] = (table["actual"] >= table["pred_lo"]) & (table["actual"] <= table["pred_hi"])
    return dict(law=law, link=link, table=table)


def backtest(
    final: pd.DataFrame, curve: pd.DataFrame, chance: float, settings: FitSettings, min_k: int = 3, laws=None
) -> pd.DataFrame:
    """Fit on the k smallest sizes (k = min_k … #sizes − 1) and score the predictions at the others.

    ``laws``: optional {k: step-1 fit on the k smallest sizes} to reuse across metrics. One row per
    (k, held-out size): n, k, decades (log10 distance beyond the largest fitted size), actual, predicted,
    pred_lo/pred_hi, abs_error, covered.
    """
    sizes = np.sort(final["n"].unique())
    rows = []
    for k in range(min_k, len(sizes)):
        law = (laws or {}).get(k)
        res = two_step_forecast(final, curve, sizes[:k], chance, settings, law=law)
        held = res["table"][res["table"]["held_out"]].copy()
        held["k"] = k
        held["decades"] = np.log10(held["n"] / sizes[k - 1])
        rows.append(held)
    if not rows:
        raise ValueError(f"need more than min_k={min_k} sizes for a backtest, got {len(sizes)}")
    return pd.concat(rows, ignore_index=True)
