"""Straight-line fit in log-log space (a pure power law y = exp(b)·x^m) with bootstrap intervals."""

from __future__ import annotations

import numpy as np

from lmcal.scaling.bootstrap import (
    check_ci,
    check_groups,
    percentile_interval,
    resample_indices,
)


def positive_array(values, name: str) -> np.ndarray:
    """``values`` as a finite, strictly positive 1-D float array; ValueError naming ``name`` otherwise."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN/inf)")
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be strictly positive for a log fit, got min {arr.min()!r}")
    return arr


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise OLS slope and intercept for arrays of shape (..., n)."""
    mx, my = lx.mean(axis=-1, keepdims=True), ly.mean(axis=-1, keepdims=True)
    sxx = ((lx - mx) ** 2).sum(axis=-1)
    sxy = ((lx - mx) * (ly - my)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = sxy / sxx
    return slope, my[..., 0] - slope * mx[..., 0]


def fit_loglog(
    x,
    y,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    groups=None,
    return_draws: bool = False,
) -> dict:
    """OLS of ln y on ln x (natural logs): ``ln y = intercept + slope · ln x``.

    Args:
        x, y: strictly positive 1-D arrays of equal length (≥ 2 points, ≥ 2 distinct x).
        n_boot: percentile-bootstrap resamples of the points (0 disables the intervals).
        seed: seed of the resampling generator (the fit itself is deterministic).
        ci: two-sided interval level.
        groups: optional per-point labels; resamples are then nested (groups, then points inside them).
        return_draws: add ``draws``, an (n_boot, 2) array of (slope, intercept) resamples.

    Returns a JSON-friendly dict: slope, intercept (ln units), slope_lo/slope_hi and intercept_lo/intercept_hi
    (percentile CI; NaN when n_boot = 0), r2 (of ln y), resid_sd (SD of the ln-space residuals, ddof 2),
    n, n_boot, ci, seed. Resamples whose x values are all equal (slope undefined) are redrawn.
    """
    x, y = positive_array(x, "x"), positive_array(y, "y")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) < 2 or len(np.unique(x)) < 2:
        raise ValueError("x needs at least 2 distinct values to fit a slope")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    check_ci(ci)
    groups = check_groups(groups, len(x))
    lx, ly = np.log(x), np.log(y)
    slope, intercept = (float(v) for v in _ols(lx, ly))
    resid = ly - (intercept + slope * lx)
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 1.0
    out = {
        "slope": slope,
        "intercept": intercept,
        "r2": r2,
        "resid_sd": float(resid.std(ddof=2)) if len(x) > 2 else 0.0,
        "n": len(x),
        "n_boot": int(n_boot),
        "ci": float(ci),
        "seed": int(seed),
    }
    draws = np.full((n_boot, 2), np.nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        todo = np.arange(n_boot)
        for _ in range(1000):  # redraw degenerate resamples; 1000 rounds is ample for >= 2 distinct x
            if groups is None:
                idx = rng.integers(0, len(x), size=(len(todo), len(x)))
                s, b = _ols(lx[idx], ly[idx])
                ok = np.isfinite(s) & (np.ptp(lx[idx], axis=1) > 0)
            else:  # nested resamples differ in length when groups do, so fit them one by one
                idxs = [resample_indices(rng, len(x), groups) for _ in todo]
                s, b = (np.array(v) for v in zip(*(_ols(lx[i], ly[i]) for i in idxs)))
                ok = np.isfinite(s) & np.array([np.ptp(lx[i]) > 0 for i in idxs])
            draws[todo[ok]] = np.column_stack([s[ok], b[ok]])
            todo = todo[~ok]
            if len(todo) == 0:
                break
        (s_lo, b_lo), (s_hi, b_hi) = percentile_interval(draws, ci)
        out.update(slope_lo=float(s_lo), slope_hi=float(s_hi), intercept_lo=float(b_lo), intercept_hi=float(b_hi))
    else:
        out.update(slope_lo=np.nan, slope_hi=np.nan, intercept_lo=np.nan, intercept_hi=np.nan)
    if return_draws:
        out["draws"] = draws
    return out
