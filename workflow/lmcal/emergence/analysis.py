"""Emergence statistics on scaling curves (spec "emergence and scaling-law fits" §2, §5).

emergence score (Schaeffer et al. 2023, BIG-bench meta-analysis), the Mirage toy model (§2.2), the
PassUntil task law log(−log PU) = c − α·log N (Hu et al. 2024), the loss-threshold hinge η (Du et al. 2024),
the U-shape test (isotonic vs quadratic in log N) and the scratchpad crossover size. Curves are arrays over
model size N (non-embedding parameters); log is natural unless stated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def _xy(x, y, name_x: str = "x", name_y: str = "y", min_points: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"{name_x} and {name_y} must be 1-D arrays of equal length, got {x.shape}, {y.shape}"
        )
    if len(x) < min_points:
        raise ValueError(f"need at least {min_points} points, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{name_x} and {name_y} must be finite")
    return x, y


def emergence_score(x, y) -> float:
    """sign(argmax − argmin) · (max y − min y) / sqrt(median of squared successive differences of y).

    Points are sorted by x first. A curve that moves in one large jump among small steps scores high; a
    smooth curve scores ~ (number of points). A perfectly flat curve scores 0; a step with all other
    differences exactly zero scores ±inf.
    """
    x, y = _xy(x, y, min_points=3)
    y = y[np.argsort(x, kind="stable")]
    spread = y.max() - y.min()
    if spread == 0:
        return 0.0
    sign = np.sign(int(np.argmax(y)) - int(np.argmin(y)))
    denom = np.sqrt(np.median(np.diff(y) ** 2))
    return float(sign * spread / denom) if denom > 0 else float(sign * np.inf)


def early_share(n, y, monotone: bool = False) -> float:
    """Share of a curve's total change (first to last size) reached at the geometric midpoint of the sizes.

    Interpolated in ln N. A smooth power-law-like improvement has done much of its change by then (Mirage
    toy edit distance: ~0.6–0.9); a curve that takes off late ("emergent") has done little (EM of long
    targets: < 0.2). With ``monotone`` the curve is first replaced by its increasing isotonic fit (pass
    improvement-oriented values), so noisy endpoints cannot push the share outside [0, 1]. NaN when first
    and last values are equal.
    """
    n, y = _xy(n, y)
    order = np.argsort(n)
    ln, y = np.log(n[order]), y[order]
    if monotone:
        y = isotonic(y, increasing=True)
    total = y[-1] - y[0]
    if total == 0:
        return float("nan")
    return float((np.interp((ln[0] + ln[-1]) / 2, ln, y) - y[0]) / total)


def mirage_toy(n, c: float, alpha: float, target_len: int) -> dict[str, np.ndarray]:
    """Schaeffer et al.'s toy model: per-token CE L(N) = (N/c)^α (α < 0), p = exp(−L) per token.

    Returns per_token_ce, p (per-token probability of the right token), exact_match = p^L and
    edit_distance = L·(1 − p) (expected wrong tokens), for targets of ``target_len`` tokens.
    """
    n = np.asarray(n, dtype=float)
    if np.any(n <= 0) or c <= 0:
        raise ValueError("n and c must be positive")
    if alpha >= 0:
        raise ValueError(f"alpha must be negative (CE falls with N), got {alpha}")
    if target_len < 1:
        raise ValueError(f"target_len must be >= 1, got {target_len}")
    ce = (n / c) ** alpha
    p = np.exp(-ce)
    return dict(per_token_ce=ce, p=p, exact_match=p**target_len, edit_distance=target_len * (1 - p))


def mirage_from_ce(per_token_ce, target_len: float) -> dict[str, np.ndarray]:
    """Predicted EM = p^L and edit distance L(1 − p) from a (fitted) per-token CE, p = exp(−CE)."""
    p = np.exp(-np.asarray(per_token_ce, dtype=float))
    return dict(p=p, exact_match=p**target_len, edit_distance=target_len * (1 - p))


def max_log_slope(n, y) -> float:
    """Largest |Δy / Δ ln N| between neighbouring sizes: how sharp a curve is on a log axis."""
    n, y = _xy(n, y)
    order = np.argsort(n)
    return float(np.max(np.abs(np.diff(y[order]) / np.diff(np.log(n[order])))))


# ---------------------------------------------------------------- PassUntil task law


def _linear_and_curvature(x: np.ndarray, y: np.ndarray) -> dict:
    """OLS line y = b + m·x, plus a t-test of the quadratic term (curvature) when there are ≥ 4 points."""
    m, b = np.polyfit(x, y, 1)
    out = dict(slope=float(m), intercept=float(b), quad=np.nan, quad_p=np.nan, n_points=len(x))
    if len(x) >= 4 and len(np.unique(x)) >= 3:
        xc = x - x.mean()
        design = np.column_stack([np.ones_like(xc), xc, xc**2])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        dof = len(x) - 3
        s2 = float(resid @ resid) / dof if dof > 0 else np.nan
        cov = s2 * np.linalg.pinv(design.T @ design)
        se = np.sqrt(cov[2, 2]) if s2 > 0 else np.nan
        t = coef[2] / se if se and np.isfinite(se) and se > 0 else np.nan
        out.update(
            quad=float(coef[2]), quad_p=float(2 * stats.t.sf(abs(t), dof)) if np.isfinite(t) else np.nan
        )
    return out


def pass_until_law(n, pu, item_ids=None) -> dict:
    """Fit log(−log PU) = intercept + slope·ln N (PU(N) = exp(−c·N^(−α)) ⇒ slope = −α).

    Points with PU ∈ {0, 1} carry no information on this scale and are dropped. With ``item_ids`` the line is
    fitted per item (≥ 2 usable sizes) and the slopes/intercepts averaged, as Hu et al. do; the pooled fit
    (with a curvature test: a significantly positive quadratic term = "accelerated emergence") is always
    returned under ``pooled``.
    """
    n, pu = _xy(n, pu, "n", "pu")
    ok = (pu > 0) & (pu < 1) & (n > 0)
    res: dict = dict(n_used=int(ok.sum()), n_dropped=int((~ok).sum()))
    x, y = np.log(n[ok]), np.log(-np.log(pu[ok]))
    res["pooled"] = _linear_and_curvature(x, y) if len(np.unique(x)) >= 2 else None
    if item_ids is not None:
        ids = np.asarray(item_ids)[ok]
        fits = [
            np.polyfit(x[ids == i], y[ids == i], 1)
            for i in np.unique(ids)
            if len(np.unique(x[ids == i])) >= 2
        ]
        if fits:
            arr = np.asarray(fits)
            res["per_item"] = dict(
                slope=float(arr[:, 0].mean()), intercept=float(arr[:, 1].mean()), n_items=len(fits)
            )
    return res


# ---------------------------------------------------------------- loss threshold (hinge)


def _hinge_profile(grid: np.ndarray, loss: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Best (η, b, s, SSE) over ``grid`` for y = b + s·max(0, η − loss), s ≥ 0, by closed-form OLS per η."""
    h = np.maximum(0.0, grid[:, None] - loss[None, :])  # (grid, points)
    hm, ym = h.mean(axis=1, keepdims=True), y.mean()
    var = ((h - hm) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(var > 0, ((h - hm) * (y - ym)).sum(axis=1) / var, 0.0)
    s = np.maximum(s, 0.0)  # a negative slope means "no gain below η": the flat fit
    b = ym - s * hm[:, 0]
    sse = ((y[None, :] - b[:, None] - s[:, None] * h) ** 2).sum(axis=1)
    i = int(np.argmin(sse))
    return float(grid[i]), float(b[i]), float(s[i]), float(sse[i])


def fit_hinge(loss, y, *, n_grid: int = 200, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """Loss-threshold fit y = b + s·max(0, η − loss): flat above the threshold η, linear gain below it.

    η is profiled over ``n_grid`` values spanning the observed losses; (b, s ≥ 0) by least squares. The CI of η
    is a percentile bootstrap over points. Also returns the SSE of a plain line for comparison.
    """
    loss, y = _xy(loss, y, "loss", "y", min_points=4)
    grid = np.linspace(loss.min(), loss.max(), n_grid)
    eta, b, s, sse = _hinge_profile(grid, loss, y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(loss), len(loss))
        if np.ptp(loss[idx]) > 0:
            draws.append(_hinge_profile(grid, loss[idx], y[idx])[0])
    lo, hi = np.quantile(draws, [(1 - ci) / 2, (1 + ci) / 2]) if draws else (np.nan, np.nan)
    m, c0 = np.polyfit(loss, y, 1)
    sse_line = float(((y - c0 - m * loss) ** 2).sum())
    # η at the lowest observed loss means "the rise has only begun at the best model": a censored threshold
    at_boundary = bool(eta <= grid[0] or eta >= grid[-1])
    return dict(
        eta=float(eta),
        eta_lo=float(lo),
        eta_hi=float(hi),
        base=b,
        slope=s,
        sse=sse,
        sse_line=sse_line,
        n_points=len(loss),
        n_boot=len(draws),
        ci=ci,
        eta_at_boundary=at_boundary,
    )


def hinge_predict(loss, eta: float, base: float, slope: float) -> np.ndarray:
    return base + slope * np.maximum(0.0, eta - np.asarray(loss, dtype=float))


# ---------------------------------------------------------------- U-shape


def isotonic(y, increasing: bool = True, weights=None) -> np.ndarray:
    """Least-squares monotone fit by pool-adjacent-violators (y in the order of increasing x)."""
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if not increasing:
        return -isotonic(-y, True, w)
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, wi in zip(y, w):
        blocks.append([v, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(c, m) for m, _, c in blocks])


def u_shape_test(n, y, alpha: float = 0.05) -> dict:
    """Is the curve U-shaped (or inverted-U) in log N?

    Fits the best monotone (isotonic, either direction) curve and a quadratic in ln N. Verdict ``u_shaped`` is
    True when the quadratic term is significant (t-test, p < alpha), its vertex lies strictly inside the
    observed ln N range and the quadratic beats the best monotone fit on SSE.
    """
    n, y = _xy(n, y, "n", "y", min_points=4)
    order = np.argsort(n, kind="stable")
    x, y = np.log(n[order]), y[order]
    sse_inc = float(((y - isotonic(y, True)) ** 2).sum())
    sse_dec = float(((y - isotonic(y, False)) ** 2).sum())
    quad = np.polyfit(x, y, 2)
    sse_quad = float(((y - np.polyval(quad, x)) ** 2).sum())
    lin = _linear_and_curvature(x, y)
    vertex = -quad[1] / (2 * quad[0]) if quad[0] != 0 else np.nan
    inside = bool(np.isfinite(vertex) and x.min() < vertex < x.max())
    sig = bool(np.isfinite(lin["quad_p"]) and lin["quad_p"] < alpha)
    return dict(
        sse_isotonic=min(sse_inc, sse_dec),
        isotonic_direction="increasing" if sse_inc <= sse_dec else "decreasing",
        sse_quadratic=sse_quad,
        quad_coef=float(quad[0]),
        quad_p=lin["quad_p"],
        vertex_ln_n=float(vertex),
        vertex_inside=inside,
        u_shaped=bool(sig and inside and sse_quad < min(sse_inc, sse_dec)),
        shape="U" if quad[0] > 0 else "inverted-U",
    )


# ---------------------------------------------------------------- scratchpad crossover


def crossing_point(x, d) -> float:
    """The last x where d turns from ≤ 0 to > 0 and stays > 0 for every larger x (linear interpolation
    between neighbours): where method B pulls ahead for good. NaN if d ≤ 0 at the largest x or d > 0
    everywhere."""
    x, d = _xy(x, d)
    order = np.argsort(x)
    x, d = x[order], d[order]
    for i in range(len(x) - 1, 0, -1):
        if d[i] <= 0:
            break
        if d[i - 1] <= 0:
            return float(x[i - 1] + (x[i] - x[i - 1]) * (-d[i - 1]) / (d[i] - d[i - 1]))
    return float("nan")


def scratchpad_crossover(
    n: Sequence[float],
    hits_a: Sequence[np.ndarray],
    hits_b: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict:
    """Size where method B (scratchpad) starts to beat method A (direct), interpolated in ln N.

    ``hits_a[i]``/``hits_b[i]`` are per-item scores (e.g. EM 0/1) of the models at size n[i] (items pooled
    over seeds). The CI resamples items within each size and method; ``p_cross`` is the share of resamples
    with a crossover. Returns NaN sizes when there is none.
    """
    n = np.asarray(n, dtype=float)
    if not len(n) == len(hits_a) == len(hits_b) or len(n) < 2:
        raise ValueError("n, hits_a and hits_b must have the same length (>= 2)")
    if any(len(h) == 0 for h in (*hits_a, *hits_b)):
        raise ValueError("every size needs at least one item in both methods")
    ln = np.log(n)
    diff = np.array([np.mean(b) - np.mean(a) for a, b in zip(hits_a, hits_b)])
    point = crossing_point(ln, diff)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        d = [np.mean(rng.choice(b, len(b))) - np.mean(rng.choice(a, len(a))) for a, b in zip(hits_a, hits_b)]
        draws.append(crossing_point(ln, np.asarray(d)))
    draws = np.asarray(draws)
    ok = draws[np.isfinite(draws)]
    lo, hi = np.quantile(ok, [(1 - ci) / 2, (1 + ci) / 2]) if len(ok) else (np.nan, np.nan)
    return dict(
        crossover_n=float(np.exp(point)) if np.isfinite(point) else np.nan,
        crossover_lo=float(np.exp(lo)) if np.isfinite(lo) else np.nan,
        crossover_hi=float(np.exp(hi)) if np.isfinite(hi) else np.nan,
        p_cross=float(len(ok) / max(n_boot, 1)),
        diff=diff.tolist(),
    )
