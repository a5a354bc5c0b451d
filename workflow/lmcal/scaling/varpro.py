"""Variable projection (VarPro) for L = E + A·N^-α (+ B·D^-β).

For fixed exponents the model is linear in the coefficients c = (E, A[, B]) ≥ 0, so the search runs only over
the exponents (1-D for the power law, 2-D for Chinchilla) and solves for c with NNLS. That turns a badly
conditioned 5-D problem (κ ~ 10¹¹) into a well conditioned one (spec §3).

Consistency with the log-space objective. Plain NNLS minimises Σ (L̂ − L)² in linear space, which weights
high-loss points more and ignores the Huber loss, so its optimum is not the optimum of Σ Huber_δ(ln L̂ − ln L).
Our choice, in three steps:

1. Inner solve by IRLS on relative residuals q = (L̂ − L)/L (rows scaled by 1/L): q ≈ ln L̂ − ln L to first
   order. Each round reweights every row by w = [ρ'(r)/r]·[r/q]², with r = ln L̂ − ln L at the current c:
   the first factor is the Huber IRLS weight (min(1, δ/|r|)), the second makes w·q² equal r² at the current
   iterate, so a fixed point of the rounds is a stationary point of Σ ρ(r) over c ≥ 0.
2. The profile P(exponents) is the EXACT summed log-space objective at the inner solution; it is searched on a
   grid, then refined (bounded scalar search in 1-D, Nelder–Mead in 2-D).
3. The best (c, exponents) is polished by the same local optimiser as the multi-start method on the full
   log-space objective, so both methods report minima of the same function; the unpolished VarPro solution
   is kept in the diagnostics for comparison.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar, nnls

from lmcal.scaling.objective import CHINCHILLA, POWER_LAW, Form, rho, rho_grad


def _design(form: Form, exps: np.ndarray, log_n: np.ndarray, log_d: np.ndarray | None) -> np.ndarray:
    cols = [np.ones_like(log_n), np.exp(-exps[0] * log_n)]
    if form is CHINCHILLA:
        cols.append(np.exp(-exps[1] * log_d))
    return np.column_stack(cols)


def inner_solve(
    form: Form, exps, log_n, log_d, y: np.ndarray, loss: str, delta: float, irls_iters: int
) -> tuple[np.ndarray, float]:
    """Coefficients c = (E, A[, B]) ≥ 0 at fixed exponents, and the exact log-space objective there."""
    X = _design(form, np.atleast_1d(np.asarray(exps, float)), log_n, log_d) / y[:, None]
    ones = np.ones_like(y)
    w = ones
    best_c, best_f = None, np.inf
    for _ in range(max(1, irls_iters)):
        sw = np.sqrt(w)
        c, _ = nnls(X * sw[:, None], sw, maxiter=50 * X.shape[1])
        q = X @ c - 1.0  # relative residual (L̂ − L)/L
        if np.any(q <= -1.0):  # L̂ ≤ 0: log undefined (all coefficients zero)
            break
        r = np.log1p(q)
        f = float(rho(r, loss, delta).sum())
        if f < best_f:
            best_c, best_f = c, f
        with np.errstate(invalid="ignore", divide="ignore"):
            huber_w = np.where(r != 0, rho_grad(r, loss, delta) / r, 1.0)
            log_vs_rel = np.where(q != 0, r / q, 1.0) ** 2
        w = np.maximum(huber_w * log_vs_rel, 1e-12)
    if best_c is None:
        return np.zeros(X.shape[1]), np.inf
    return best_c, best_f


def varpro_fit(
    form: Form, log_n, log_d, y: np.ndarray, loss: str, delta: float, grid: tuple[float, ...],
    irls_iters: int, start_exps: np.ndarray | None = None,
) -> tuple[dict[str, float], float]:
    """Minimise the VarPro profile over the exponents; returns (E, A[, B], α[, β]) and the profile value.

    ``start_exps`` skips the grid and refines from there (bootstrap refits warm-started at the full fit).
    """
    def profile(exps) -> float:
        exps = np.atleast_1d(exps)
        if np.any(exps < 0):
            return np.inf
        return inner_solve(form, exps, log_n, log_d, y, loss, delta, irls_iters)[1]

    g = np.asarray(grid, float)
    step = g[1] - g[0] if len(g) > 1 else 0.1
    if form is POWER_LAW:
        if start_exps is None:
            values = np.array([profile(a) for a in g])
            centre = g[int(np.argmin(values))]
        else:
            centre = float(start_exps[0])
        res = minimize_scalar(profile, bounds=(max(0.0, centre - step), centre + step), method="bounded",
                              options={"xatol": 1e-10})
        exps = np.array([res.x]) if res.fun <= profile(centre) else np.array([centre])
    else:
        if start_exps is None:
            aa, bb = np.meshgrid(g, g, indexing="ij")
            pts = np.column_stack([aa.ravel(), bb.ravel()])
            values = np.array([profile(p) for p in pts])
            centre = pts[int(np.argmin(values))]
        else:
            centre = np.asarray(start_exps, float)
        res = minimize(profile, centre, method="Nelder-Mead",
                       options={"xatol": 1e-9, "fatol": 1e-15, "maxiter": 2000,
                                "initial_simplex": [centre, centre + [step, 0], centre + [0, step]]})
        exps = res.x if res.fun <= profile(centre) else centre
    c, f = inner_solve(form, exps, log_n, log_d, y, loss, delta, irls_iters)
    params = {"E": float(c[0]), "A": float(c[1]), "alpha": float(exps[0])}
    if form is CHINCHILLA:
        params.update(B=float(c[2]), beta=float(exps[1]))
    return {k: params[k] for k in form.param_names}, f
