"""Extrapolation backtest: fit the k smallest models, predict the larger ones, roll k forward.

Follows OLMo-core's ``ScalingLawRollout`` and ObsScaling's cutoff sweep (spec §3). Prediction intervals come
from ``FitResult.prediction_interval``: the bootstrap curves plus resampled log-residual noise, so they are
intervals for a new observation at the held-out size, not only for the mean curve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lmcal.scaling.fit import fit_chinchilla, fit_power_law
from lmcal.scaling.loglog import positive_array
from lmcal.scaling.settings import FitSettings


def backtest(
    n,
    loss,
    *,
    d=None,
    ks=None,
    settings: FitSettings | None = None,
    groups=None,
    metric: str = "loss",
    progress: bool = True,
) -> pd.DataFrame:
    """Roll a scaling-law fit forward over the model sizes and score its extrapolations.

    Args:
        n: model size per point (non-embedding parameters); several points may share a size (seeds).
        loss: the metric to fit per point (> 0, e.g. held-out CE in nats/token).
        d: training tokens per point; given, the Chinchilla form is fitted instead of E + A·N^-α.
        ks: numbers of smallest distinct sizes to fit on; default every k from (#params + 1) to
            (#sizes − 1), so each fit has residual degrees of freedom and at least one held-out size.
        settings: fit settings (``n_boot`` > 0 is required: the intervals come from the bootstrap).
        groups: per-point labels for a nested bootstrap (see ``fit_power_law``).
        metric: name written to the ``metric`` column (one backtest per metric; concatenate for F7).

    Returns one row per (k, held-out point): metric, k, n_fit (points fitted), n_max_fit (largest fitted
    size), n, d (NaN for the power law), observed, predicted, pi_lo, pi_hi, covered (observed inside the PI),
    abs_err = |predicted − observed| (loss units), rel_err = (predicted − observed) / observed (signed),
    decades = log10(n / n_max_fit) (extrapolation distance), the fitted parameters, objective and converged.
    """
    s = settings or FitSettings()
    if s.n_boot < 1:
        raise ValueError("settings.n_boot must be >= 1: prediction intervals come from the bootstrap draws")
    n, y = positive_array(n, "n"), positive_array(loss, "loss")
    d = None if d is None else positive_array(d, "d")
    if len(n) != len(y) or (d is not None and len(d) != len(y)):
        raise ValueError("n, loss (and d) must have the same length")
    groups = None if groups is None else np.asarray(groups)
    if groups is not None and groups.shape != y.shape:
        raise ValueError(f"groups must have one label per point (shape {y.shape}), got {groups.shape}")
    sizes = np.unique(n)
    n_params = 3 if d is None else 5
    ks = list(range(n_params + 1, len(sizes))) if ks is None else [int(k) for k in ks]
    for k in ks:
        if not 1 <= k < len(sizes):
            raise ValueError(f"every k in ks must lie in [1, {len(sizes) - 1}] (there are {len(sizes)} sizes), got {k}")
    rows = []
    for k in tqdm(ks, desc=f"backtest {metric}", disable=not progress):
        fit_mask = n <= sizes[k - 1]
        g = None if groups is None else groups[fit_mask]
        if d is None:
            fit = fit_power_law(n[fit_mask], y[fit_mask], s, groups=g, progress=False)
            held_d = None
        else:
            fit = fit_chinchilla(n[fit_mask], d[fit_mask], y[fit_mask], s, groups=g, progress=False)
            held_d = d[~fit_mask]
        held_n, held_y = n[~fit_mask], y[~fit_mask]
        pred = fit.predict(held_n, held_d)
        lo, hi = fit.prediction_interval(held_n, held_d)
        for i in range(len(held_n)):
            rows.append({
                "metric": metric, "k": k, "n_fit": int(fit_mask.sum()), "n_max_fit": float(sizes[k - 1]),
                "n": float(held_n[i]), "d": np.nan if held_d is None else float(held_d[i]),
                "observed": float(held_y[i]), "predicted": float(pred[i]),
                "pi_lo": float(lo[i]), "pi_hi": float(hi[i]), "covered": bool(lo[i] <= held_y[i] <= hi[i]),
                "abs_err": float(abs(pred[i] - held_y[i])), "rel_err": float((pred[i] - held_y[i]) / held_y[i]),
                "decades": float(np.log10(held_n[i] / sizes[k - 1])),
                **fit.params, "objective": fit.objective, "converged": fit.converged,
            })
    return pd.DataFrame(rows)


def summarise_backtest(df: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, k): held-out count, mean/max abs error, mean |rel error|, PI coverage, mean distance."""
    if df.empty:
        raise ValueError("backtest table is empty")
    return (
        df.assign(abs_rel_err=df["rel_err"].abs())
        .groupby(["metric", "k"], as_index=False)
        .agg(n_heldout=("observed", "size"), mean_abs_err=("abs_err", "mean"), max_abs_err=("abs_err", "max"),
             mean_abs_rel_err=("abs_rel_err", "mean"), coverage=("covered", "mean"),
             mean_decades=("decades", "mean"))
    )
