"""Fits of L = E + A·N^-α and L = E + A·N^-α + B·D^-β: multi-start L-BFGS or VarPro, with bootstrap draws.

Both methods minimise the same function, the SUM over points of ρ(ln L̂ − ln L) (settings.py):

- ``lbfgs_grid``: every point of the start grid is run to convergence by the vectorised L-BFGS (lbfgs.py);
  the ``n_polish`` best results are re-run by scipy's L-BFGS-B and the lowest objective is kept.
- ``varpro``: exponent search with NNLS coefficients (varpro.py), then the same two L-BFGS stages from there.

Two stages because they stop differently: the vectorised L-BFGS stops on a RELATIVE objective decrease, while
scipy's L-BFGS-B stops on an absolute one when the objective is < 1 and handles bounds exactly.

Bootstrap refits (``n_boot`` resamples of the points, nested inside ``groups`` when given) start from the
full-data optimum plus the ``boot_starts`` grid points with the lowest full-data objective, all resamples in
one vectorised batch (a resample is a row of point multiplicities), whatever the method: VarPro is not re-run
per resample, since both methods minimise the same objective and the warm start sits in the optimum's basin.
Re-running the whole grid per resample
(4,500 starts for Chinchilla) is not affordable on a CPU; refits that stop without meeting a tolerance are
counted in ``diagnostics["boot_not_converged"]``. With ``optimizer`` "BFGS" or "Nelder-Mead" (sensitivity
runs) every start and refit is a sequential scipy call instead: same starts, much slower.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from tqdm.auto import tqdm

from lmcal.scaling.bootstrap import check_groups, resample_indices
from lmcal.scaling.lbfgs import batched_lbfgs
from lmcal.scaling.loglog import positive_array
from lmcal.scaling.objective import (
    CHINCHILLA,
    POWER_LAW,
    Form,
    log_predict,
    objective_and_grad,
    objective_and_grad_batch,
    objective_batch,
    params_to_theta,
    theta_to_params,
)
from lmcal.scaling.result import FitResult
from lmcal.scaling.settings import FitSettings
from lmcal.scaling.varpro import varpro_fit

try:  # transitive dependency (scikit-learn, via mlflow); the fit is correct without it, only slower
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

BOOT_CHUNK_CELLS = 1_000_000  # rows × points per vectorised bootstrap batch (bounds memory to ~100 MB)


def single_threaded_blas():
    """Pin BLAS to one thread: L-BFGS-B's tiny LAPACK calls are ~8x slower with a multi-threaded OpenBLAS
    (thread wake-ups dominate a 3x3 factorisation), which made a 150-start fit take a minute on 2 cores."""
    return threadpool_limits(limits=1, user_api="blas") if threadpool_limits else contextlib.nullcontext()


@dataclass(frozen=True)
class _Data:
    log_n: np.ndarray
    log_d: np.ndarray | None
    y: np.ndarray

    @property
    def log_y(self) -> np.ndarray:
        return np.log(self.y)

    def subset(self, idx: np.ndarray) -> _Data:
        return _Data(self.log_n[idx], None if self.log_d is None else self.log_d[idx], self.y[idx])

    def identifiable(self, form: Form) -> bool:
        """Enough distinct design points to pin every parameter (3 sizes; 5 (N, D) pairs, ≥ 2 of each)."""
        if form is POWER_LAW:
            return len(np.unique(self.log_n)) >= 3
        pairs = np.unique(np.column_stack([self.log_n, self.log_d]), axis=0)
        return len(pairs) >= 5 and len(np.unique(self.log_n)) >= 2 and len(np.unique(self.log_d)) >= 2


def grid_starts(form: Form, settings: FitSettings) -> np.ndarray:
    """Cartesian start grid in θ order, shape (n_grid, n_params)."""
    axes = {"e": settings.grid_e, "a": settings.grid_a, "b": settings.grid_b,
            "alpha": settings.grid_alpha, "beta": settings.grid_beta}
    return np.array(list(itertools.product(*(axes[t] for t in form.theta_names))), dtype=float)


def _bounds(form: Form, s: FitSettings) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = s.exponent_bounds
    lower = [lo if t in ("alpha", "beta") and lo is not None else -np.inf for t in form.theta_names]
    upper = [hi if t in ("alpha", "beta") and hi is not None else np.inf for t in form.theta_names]
    return np.array(lower, float), np.array(upper, float)


def _ranked_starts(form: Form, data: _Data, s: FitSettings, k: int | None) -> np.ndarray:
    """Grid starts, or the ``k`` of them with the lowest objective on ``data``."""
    starts = grid_starts(form, s)
    if k is None or k >= len(starts):
        return starts
    f = objective_batch(starts, form, data.log_n, data.log_d, data.log_y, s.loss, s.delta)
    return starts[np.argsort(f, kind="stable")[:k]]


def _scipy_min(theta0: np.ndarray, form: Form, data: _Data, s: FitSettings):
    args = (form, data.log_n, data.log_d, data.log_y, s.loss, s.delta)
    if s.optimizer == "Nelder-Mead":
        return minimize(lambda t: objective_and_grad(t, *args)[0], theta0, method="Nelder-Mead",
                        options={"maxiter": s.maxiter, "xatol": 1e-10, "fatol": 1e-15})
    if s.optimizer == "BFGS":
        return minimize(objective_and_grad, theta0, args=args, jac=True, method="BFGS",
                        options={"maxiter": s.maxiter, "gtol": s.gtol})
    return minimize(objective_and_grad, theta0, args=args, jac=True, method="L-BFGS-B",
                    bounds=list(zip(*(np.where(np.isfinite(b), b, None) for b in _bounds(form, s)))),
                    options={"maxiter": s.maxiter, "ftol": s.ftol, "gtol": s.gtol, "maxls": 50})


def _batched(form: Form, data: _Data, s: FitSettings, starts: np.ndarray, weights: np.ndarray | None,
             per_row: int = 1) -> dict:
    """Vectorised L-BFGS from ``starts``; row i uses point weights ``weights[i // per_row]``."""
    def fun_grad(x, rows):
        w = None if weights is None else weights[rows // per_row]
        return objective_and_grad_batch(x, form, data.log_n, data.log_d, data.log_y, s.loss, s.delta, w)

    return batched_lbfgs(fun_grad, starts, *_bounds(form, s), maxiter=s.maxiter, ftol=s.ftol, gtol=s.gtol)


def _point_fit(form: Form, data: _Data, s: FitSettings) -> tuple[np.ndarray, float, bool, dict]:
    """Full-data fit: (θ, objective, converged, diagnostics)."""
    diag: dict = {}
    if s.method == "varpro":
        vp, f_vp = varpro_fit(form, data.log_n, data.log_d, data.y, s.loss, s.delta, s.varpro_grid(),
                              s.varpro_irls_iters)
        # NNLS may return E = 0 (θ = −∞); start the polish just inside, 10⁻⁶ of the smallest loss.
        starts = params_to_theta(form, vp, floor=1e-6 * float(data.y.min()))[None, :]
        diag.update({f"varpro_{k}": v for k, v in vp.items()}, varpro_objective=f_vp)
    else:
        starts = _ranked_starts(form, data, s, s.n_starts)
    if s.optimizer == "L-BFGS-B":
        res = _batched(form, data, s, starts, None)
        fun = np.where(np.isfinite(res["fun"]), res["fun"], np.inf)
        order = np.argsort(fun, kind="stable")[: s.n_polish]
        polished = [_scipy_min(res["x"][i], form, data, s) for i in order]
        cand = [(float(fun[i]), res["x"][i], bool(res["converged"][i]), "vectorised L-BFGS") for i in order]
        cand += [(float(r.fun), np.asarray(r.x), bool(r.success), str(r.message)) for r in polished]
        diag.update(n_converged_starts=int(res["converged"].sum()), max_nit=int(res["nit"].max()))
    else:
        results = [_scipy_min(t, form, data, s) for t in starts]
        cand = [(float(r.fun), np.asarray(r.x), bool(r.success), str(r.message)) for r in results]
        fun = np.array([c[0] if np.isfinite(c[0]) else np.inf for c in cand])
        diag.update(n_converged_starts=int(sum(c[2] for c in cand)))
    f, theta, _, message = min(cand, key=lambda c: c[0] if np.isfinite(c[0]) else np.inf)
    # Converged if a run that met its own tolerance reached the best objective: scipy reports "ABNORMAL" when
    # its line search cannot improve a point that is already optimal to machine precision.
    ok = any(c[2] and c[0] <= f + 1e-9 * abs(f) + 1e-15 for c in cand)
    diag.update(
        n_starts=len(starts),
        # starts whose own run reached the best objective (to 1e-6 relative): how unique the optimum looks
        n_starts_at_best=int(np.sum(fun <= f + 1e-6 * abs(f) + 1e-15)),
        message=message,
    )
    return theta, f, ok, diag


def _bootstrap(form: Form, data: _Data, s: FitSettings, theta: np.ndarray, groups, progress: bool):
    """Bootstrap refits in log space, (n_boot, n_params), and the number that did not converge."""
    rng = np.random.default_rng(s.seed)
    n = len(data.y)
    counts = np.zeros((s.n_boot, n))
    valid = np.zeros(s.n_boot, dtype=bool)
    for j in range(s.n_boot):
        for _ in range(100):  # redraw resamples that cannot identify every parameter
            idx = resample_indices(rng, n, groups, s.resample_within_groups)
            if data.subset(idx).identifiable(form):
                counts[j], valid[j] = np.bincount(idx, minlength=n), True
                break
    starts = np.vstack([theta[None, :], _ranked_starts(form, data, s, s.boot_starts)[: s.boot_starts]])
    draws = np.full((s.n_boot, form.n_params), np.nan)
    not_converged = 0
    rows = np.flatnonzero(valid)
    size = max(1, BOOT_CHUNK_CELLS // (len(starts) * n))
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    for chunk in tqdm(chunks, desc=f"bootstrap {form.name}", disable=not progress, unit="chunk"):
        if s.optimizer == "L-BFGS-B":
            k = len(starts)
            res = _batched(form, data, s, np.tile(starts, (len(chunk), 1)), counts[chunk], per_row=k)
            fun = np.where(np.isfinite(res["fun"]), res["fun"], np.inf).reshape(len(chunk), k)
            best = np.argmin(fun, axis=1) + k * np.arange(len(chunk))
            draws[chunk] = res["x"][best]
            not_converged += int((~res["converged"][best]).sum())
        else:
            for j in chunk:
                sub = data.subset(np.repeat(np.arange(n), counts[j].astype(int)))
                out = min((_scipy_min(t, form, sub, s) for t in starts), key=lambda r: r.fun)
                draws[j] = out.x
                not_converged += not out.success
    return draws, not_converged


def _fit(form: Form, data: _Data, settings: FitSettings | None, groups, progress: bool) -> FitResult:
    s = settings or FitSettings()
    if not data.identifiable(form):
        raise ValueError(
            f"{form.name} needs at least 3 distinct n" if form is POWER_LAW
            else "chinchilla needs at least 5 distinct (n, d) pairs with at least 2 distinct n and 2 distinct d"
        )
    groups = check_groups(groups, len(data.y))
    with single_threaded_blas():
        theta, f, ok, diag = _point_fit(form, data, s)
        residuals = log_predict(form, theta, data.log_n, data.log_d) - data.log_y
        result = FitResult(form.name, theta_to_params(form, theta), theta, f, ok, len(data.y), s, residuals, diag)
        if s.n_boot:
            result.theta_draws, n_bad = _bootstrap(form, data, s, theta, groups, progress)
            diag.update(boot_not_converged=n_bad, boot_unidentifiable=int(np.isnan(result.theta_draws[:, 0]).sum()))
    return result


def fit_power_law(n, loss, settings: FitSettings | None = None, *, groups=None, progress: bool = True) -> FitResult:
    """Fit L = E + A·N^-α to losses ``loss`` (nats/token, > 0) at sizes ``n`` (parameters, > 0).

    ``groups`` (one label per point, e.g. seed) nests the bootstrap; see ``FitSettings`` for every choice.
    """
    n, y = positive_array(n, "n"), positive_array(loss, "loss")
    if len(n) != len(y):
        raise ValueError(f"n and loss must have the same length, got {len(n)} and {len(y)}")
    return _fit(POWER_LAW, _Data(np.log(n), None, y), settings, groups, progress)


def fit_chinchilla(
    n, d, loss, settings: FitSettings | None = None, *, groups=None, progress: bool = True
) -> FitResult:
    """Fit L = E + A/N^α + B/D^β (Chinchilla Approach 3) to losses at parameters ``n`` and tokens ``d``."""
    n, d, y = positive_array(n, "n"), positive_array(d, "d"), positive_array(loss, "loss")
    if not len(n) == len(d) == len(y):
        raise ValueError(f"n, d and loss must have the same length, got {len(n)}, {len(d)}, {len(y)}")
    return _fit(CHINCHILLA, _Data(np.log(n), np.log(d), y), settings, groups, progress)
