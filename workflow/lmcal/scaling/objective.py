"""Log-space objectives of the scaling-law forms, with analytic gradients.

Parameters live in log space so positivity is free and the scales of E and A (10⁰ vs 10¹⁰) stay comparable:
``θ = (e, a, α)`` for L = E + A·N^-α and ``θ = (e, a, b, α, β)`` for L = E + A·N^-α + B·D^-β, with
E = exp(e), A = exp(a), B = exp(b). ln L̂ is the log-sum-exp of the terms (Chinchilla App. D.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Form:
    """A scaling-law form: names of its log-space and linear parameters."""

    name: str
    theta_names: tuple[str, ...]  # log-space parameters the optimiser sees
    param_names: tuple[str, ...]  # reported (linear) parameters, same order

    @property
    def n_params(self) -> int:
        return len(self.theta_names)


POWER_LAW = Form("power_law", ("e", "a", "alpha"), ("E", "A", "alpha"))
CHINCHILLA = Form("chinchilla", ("e", "a", "b", "alpha", "beta"), ("E", "A", "B", "alpha", "beta"))


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber_δ(r): 0.5·r² for |r| ≤ δ, δ·(|r| − δ/2) beyond (same as ``scipy.special.huber``)."""
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def rho(r: np.ndarray, loss: str, delta: float) -> np.ndarray:
    return huber(r, delta) if loss == "huber" else 0.5 * r * r


def rho_grad(r: np.ndarray, loss: str, delta: float) -> np.ndarray:
    """dρ/dr: the clipped residual for Huber, r itself for squared loss."""
    return np.clip(r, -delta, delta) if loss == "huber" else r


def log_huber_objective(log_pred, log_obs, delta: float = 1e-3) -> float:
    """SUM (not mean) over points of Huber_δ(ln L̂ − ln L): the Chinchilla / Epoch objective."""
    r = np.asarray(log_pred, dtype=float) - np.asarray(log_obs, dtype=float)
    return float(huber(r, delta).sum())


def _terms(form: Form, theta, log_n: np.ndarray, log_d: np.ndarray | None) -> list[np.ndarray]:
    """Log of each additive term (A·N^-α, [B·D^-β,] E); leading axes of ``theta`` broadcast over points."""
    theta = np.asarray(theta, dtype=float)
    col = [theta[..., i, None] for i in range(form.n_params)]
    if form is POWER_LAW:
        return [col[1] - col[2] * log_n, col[0]]
    return [col[1] - col[3] * log_n, col[2] - col[4] * log_d, col[0]]


def _lse(terms: list[np.ndarray]) -> np.ndarray:
    """ln Σ exp(term), pairwise with the logaddexp ufunc (scipy's logsumexp costs ~0.5 ms a call in array-API
    dispatch, which dominated a multi-start fit on a handful of points)."""
    out = terms[0]
    for t in terms[1:]:
        out = np.logaddexp(out, t)
    return out


def log_predict(form: Form, theta, log_n, log_d=None) -> np.ndarray:
    """ln L̂ at ln N (and ln D); leading axes of ``theta`` broadcast (used for bootstrap bands)."""
    return _lse(_terms(form, theta, np.asarray(log_n, float), log_d))


def objective_and_grad_batch(
    thetas: np.ndarray, form: Form, log_n: np.ndarray, log_d: np.ndarray | None, log_y: np.ndarray,
    loss: str, delta: float, weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Σ_i w_i·ρ(ln L̂_i − ln L_i) and its gradient for each row of ``thetas`` (k, p).

    ``weights`` (k, n) are per-row point multiplicities (a bootstrap resample is a row of counts); None
    means every point once. d ln L̂ / d term_j is the softmax weight exp(term_j − ln L̂).
    """
    terms = _terms(form, thetas, log_n, log_d)
    lse = _lse(terms)
    r = lse - log_y
    if loss == "huber":
        psi = np.clip(r, -delta, delta)
        val = psi * (r - 0.5 * psi)  # = Huber_δ(r): 0.5·r² inside, δ·(|r| − δ/2) outside
    else:
        psi, val = r, 0.5 * r * r
    if weights is not None:
        psi, val = psi * weights, val * weights
    gw = [psi * np.exp(t - lse) for t in terms]  # ψ_i · d ln L̂_i / d term_j
    if form is POWER_LAW:
        grad = [gw[1].sum(-1), gw[0].sum(-1), -(gw[0] @ log_n)]
    else:
        grad = [gw[2].sum(-1), gw[0].sum(-1), gw[1].sum(-1), -(gw[0] @ log_n), -(gw[1] @ log_d)]
    return val.sum(axis=-1), np.stack(grad, axis=-1)


def objective_and_grad(
    theta: np.ndarray, form: Form, log_n: np.ndarray, log_d: np.ndarray | None, log_y: np.ndarray,
    loss: str, delta: float,
) -> tuple[float, np.ndarray]:
    """Σ ρ(ln L̂ − ln L) and its gradient at one θ (the scipy-facing form)."""
    f, g = objective_and_grad_batch(np.asarray(theta, float)[None, :], form, log_n, log_d, log_y, loss, delta)
    return float(f[0]), g[0]


def objective_batch(
    thetas: np.ndarray, form: Form, log_n: np.ndarray, log_d: np.ndarray | None, log_y: np.ndarray,
    loss: str, delta: float,
) -> np.ndarray:
    """Objective at many θ at once, shape (n_theta,): ranks grid starts without a Python loop."""
    r = log_predict(form, thetas, log_n, log_d) - log_y
    return rho(r, loss, delta).sum(axis=-1)


def theta_to_params(form: Form, theta) -> dict[str, float]:
    """Log-space θ to the reported linear parameters (E, A[, B], α[, β])."""
    theta = np.asarray(theta, dtype=float)
    return {
        p: float(np.exp(v)) if t in ("e", "a", "b") else float(v)
        for p, t, v in zip(form.param_names, form.theta_names, theta)
    }


def params_to_theta(form: Form, params: dict[str, float], floor: float = 1e-300) -> np.ndarray:
    """Linear parameters to θ; zero coefficients (from NNLS) are floored so their log stays finite."""
    return np.array([
        np.log(max(params[p], floor)) if t in ("e", "a", "b") else params[p]
        for p, t in zip(form.param_names, form.theta_names)
    ])
