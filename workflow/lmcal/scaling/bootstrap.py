"""Resampling helpers shared by every scaling fit: percentile intervals and (nested) bootstrap indices."""

from __future__ import annotations

import numpy as np


def percentile_interval(draws: np.ndarray, ci: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed percentile interval of ``draws`` along ``axis`` (NaN draws ignored).

    A percentile bootstrap interval, not "estimate ± k·SE": no normality or sigma-vs-95% assumption.
    """
    check_ci(ci)
    tail = 100.0 * (1.0 - ci) / 2.0
    lo = np.nanpercentile(draws, tail, axis=axis)
    hi = np.nanpercentile(draws, 100.0 - tail, axis=axis)
    return lo, hi


def check_ci(ci: float) -> None:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie strictly between 0 and 1, got {ci!r}")


def check_groups(groups, n: int) -> np.ndarray | None:
    """Validate a per-point group label array (e.g. seed or item id); ``None`` means i.i.d. points."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have one label per point (shape ({n},)), got shape {groups.shape}")
    return groups


def resample_indices(
    rng: np.random.Generator, n: int, groups: np.ndarray | None = None, resample_within: bool = True
) -> np.ndarray:
    """Indices of one bootstrap resample of ``n`` points.

    Without ``groups`` points are drawn i.i.d. with replacement. With ``groups`` the resample is nested
    (two-stage): draw whole groups with replacement, then (if ``resample_within``) draw points with
    replacement inside each drawn group; ``resample_within=False`` is the plain cluster bootstrap. Nesting
    keeps correlated points (one seed's models, one item's scores) together so the interval reflects the
    variance between groups rather than pretending every point is independent.
    """
    if groups is None:
        return rng.integers(0, n, size=n)
    labels, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    chosen = rng.integers(0, len(labels), size=len(labels))
    parts = []
    for g in chosen:
        idx = members[g]
        parts.append(idx[rng.integers(0, len(idx), size=len(idx))] if resample_within else idx)
    return np.concatenate(parts)
