"""A vectorised L-BFGS that runs many independent small problems in lockstep.

A multi-start fit runs the same 3- or 5-parameter problem from 150 (power law) or 4,500 (Chinchilla) starts,
and a bootstrap repeats it for every resample. One scipy ``minimize`` call per start costs ~10–50 ms of Python
and LAPACK overhead for a problem whose objective takes microseconds, so instead every start (and every
resample, as a row of point weights) is a row of one batch: the two-loop recursion, the line search and the
convergence test are all array operations, and finished rows drop out of the batch.

Algorithm per row: L-BFGS direction (memory ``m``) on the projected gradient; box bounds by projection, with
coordinates held at a bound while the gradient pushes outward; weak-Wolfe bisection line search (pairs with
sᵀy ≤ 0 are still skipped, and the memory is reset if the direction is not a descent direction). A row stops when its projected gradient's max-norm is ≤ ``gtol``, when the RELATIVE decrease of
its objective is ≤ ``ftol`` (relative to |f| itself, not to max(|f|, 1) as in L-BFGS-B, because summed
log-space Huber objectives are ≪ 1), or when the line search finds no decrease at all; only the iteration cap
counts as not converged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

FunGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _project(x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, lower), upper)


def _free_mask(x, g, lower, upper) -> np.ndarray:
    """Coordinates that may move: not pinned at a bound by a gradient pushing outward."""
    at_low = (x <= lower) & (g > 0)
    at_high = (x >= upper) & (g < 0)
    return ~(at_low | at_high)


def _weak_wolfe(fun_grad, rows, xr, fr, gr, d, t, skip, lower, upper, max_ls, c1=1e-4, c2=0.9):
    """Bisection search for a step meeting the weak Wolfe conditions (Lewis & Overton), every row at once.

    Armijo fails: shrink into [lo, t]; curvature fails (the slope is still steep, e.g. on a linear stretch of
    the Huber loss): grow, doubling until bracketed. The curvature condition keeps sᵀy > 0, so the L-BFGS
    memory stays positive definite; a plain backtracking search crawled for thousands of iterations along the
    narrow valleys of the Huber objective. If no trial meets both, the best Armijo point is taken.
    """
    k = len(rows)
    lo, hi = np.zeros(k), np.full(k, np.inf)
    done = skip.copy()
    accepted = np.zeros(k, dtype=bool)
    x_new, f_new, g_new = xr.copy(), fr.copy(), gr.copy()
    for _ in range(max_ls):
        todo = np.flatnonzero(~done)
        if len(todo) == 0:
            break
        xt = _project(xr[todo] + t[todo, None] * d[todo], lower, upper)
        ft, gt = fun_grad(xt, rows[todo])
        step = xt - xr[todo]
        armijo = np.isfinite(ft) & (ft <= fr[todo] + c1 * np.einsum("bp,bp->b", gr[todo], step))
        curv = np.einsum("bp,bp->b", gt, step) >= c2 * np.einsum("bp,bp->b", gr[todo], step)
        better = armijo & (ft < f_new[todo])  # fallback: best Armijo point so far
        hit = todo[better]
        x_new[hit], f_new[hit], g_new[hit] = xt[better], ft[better], gt[better]
        accepted[hit] = True
        done[todo[armijo & curv]] = True
        shrink, grow = todo[~armijo], todo[armijo & ~curv]
        hi[shrink] = t[shrink]
        lo[grow] = t[grow]
        t[shrink] = 0.5 * (lo[shrink] + hi[shrink])
        t[grow] = np.where(np.isinf(hi[grow]), 2.0 * lo[grow], 0.5 * (lo[grow] + hi[grow]))
    return x_new, f_new, g_new, accepted


def batched_lbfgs(
    fun_grad: FunGrad,
    x0: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    *,
    maxiter: int = 2000,
    ftol: float = 1e-13,
    gtol: float = 1e-12,
    m: int = 10,
    max_ls: int = 60,
) -> dict[str, np.ndarray]:
    """Minimise B independent problems from starts ``x0`` (B, p).

    ``fun_grad(x, rows)`` returns the objectives (k,) and gradients (k, p) of the rows ``rows`` (indices into
    the batch) at ``x`` (k, p). Returns ``x`` (B, p), ``fun`` (B,), ``converged`` (B,) (a tolerance was met,
    not the iteration cap) and ``nit`` (B,).
    """
    x = np.array(x0, dtype=float)
    B, p = x.shape
    lower = np.full(p, -np.inf) if lower is None else np.asarray(lower, float)
    upper = np.full(p, np.inf) if upper is None else np.asarray(upper, float)
    x = _project(x, lower, upper)
    f, g = fun_grad(x, np.arange(B))
    S = np.zeros((B, m, p))
    Y = np.zeros((B, m, p))
    rho = np.zeros((B, m))  # 1/(sᵀy); 0 marks an empty or skipped slot
    gamma = np.ones(B)  # initial inverse-Hessian scale sᵀy / yᵀy of the newest pair
    done = np.zeros(B, dtype=bool)
    converged = np.zeros(B, dtype=bool)
    nit = np.zeros(B, dtype=int)
    first = np.ones(B, dtype=bool)
    for it in range(maxiter):
        rows = np.flatnonzero(~done)
        if len(rows) == 0:
            break
        xr, fr, gr = x[rows], f[rows], g[rows]
        free = _free_mask(xr, gr, lower, upper)
        pg = np.where(free, gr, 0.0)
        small = np.abs(pg).max(axis=1) <= gtol
        # Two-loop recursion over the slots from newest to oldest (slot age is the same for every row).
        Sr, Yr, rr = S[rows], Y[rows], rho[rows]
        q = pg.copy()
        order = [(it - 1 - j) % m for j in range(min(it, m))]
        alphas = []
        for j in order:
            a = rr[:, j] * (Sr[:, j] * q).sum(axis=1)
            q -= a[:, None] * Yr[:, j]
            alphas.append(a)
        q *= gamma[rows, None]
        for j, a in zip(reversed(order), reversed(alphas)):
            bcoef = rr[:, j] * (Yr[:, j] * q).sum(axis=1)
            q += (a - bcoef)[:, None] * Sr[:, j]
        d = np.where(free, -q, 0.0)
        slope = np.einsum("bp,bp->b", d, pg)
        bad = ~(slope < 0)  # not a descent direction: fall back to steepest descent and forget the memory
        if bad.any():
            d[bad] = -pg[bad]
            rho[rows[bad]] = 0.0
            gamma[rows[bad]] = 1.0
        t = np.where(first[rows], np.minimum(1.0, 1.0 / np.maximum(np.abs(d).max(axis=1), 1e-300)), 1.0)
        x_new, f_new, g_new, accepted = _weak_wolfe(fun_grad, rows, xr, fr, gr, d, t, small, lower, upper,
                                                    max_ls)
        stalled = ~accepted & ~small
        s = x_new - xr
        y = g_new - gr
        sy = np.einsum("bp,bp->b", s, y)
        good = accepted & (sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)) & (sy > 0)
        slot = it % m
        S[rows, slot] = np.where(good[:, None], s, 0.0)
        Y[rows, slot] = np.where(good[:, None], y, 0.0)
        rho[rows, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[rows[good]] = sy[good] / np.einsum("bp,bp->b", y[good], y[good])
        rel_drop = (fr - f_new) / np.maximum(np.abs(fr), 1e-300)
        tiny = accepted & (rel_drop <= ftol)
        x[rows], f[rows], g[rows] = x_new, f_new, g_new
        nit[rows[accepted]] += 1
        first[rows[accepted]] = False
        stop = small | tiny | stalled
        done[rows[stop]] = True
        # A stall is convergence too: d is a descent direction (else it was reset to −∇f), so no Armijo point
        # in ``max_ls`` bisections means no decrease is representable (checked: scipy's L-BFGS-B cannot
        # improve such rows either).
        converged[rows[stop]] = True
    return {"x": x, "fun": f, "converged": converged, "nit": nit}
