"""Future-entropy calibration in the exact toy world: Algorithm 1, its simpler relatives, and temperature.

Spec entropy-calibration §6. The adjusted model at step t is

    log p~_t(v | s) = (1 + α_t) log p^(v | s) - α_t F_t(s, v) - log Z_t(s)

For a *fixed* F the step-t log loss is a log-sum-exp of functions affine in α minus an affine term, hence
convex in α, and α = 0 gives back p^ exactly, so a minimiser over an interval containing 0 never loses log loss.

* `algorithm1`: the paper's construction. Backward over t; F_t is the exact future entropy of the adjusted
  model itself (its steps > t are already fixed); α_t minimises step-t log loss on p* text. At an interior
  optimum, stationarity gives  L_t + E*[F_t(S_t, Y_t)] = E*[G_t(S_t)]  (G: the adjusted model's future entropy
  at p* prefixes), and these telescope to  Σ_t L_t = Σ_t H_t: total EntCE 0 (`tests/test_toyworld.py`).
  Only the total (hence EntCE/T, the paper's "per-step" bound) is pinned; the individual EntCE_t are not
  constrained by the construction and stay small but non-zero (they are reported, not asserted to vanish).
  With ``future="rollout"`` F_t is instead a Monte Carlo estimate (m rollouts, exact per-step entropies summed
  along each), which is Algorithm 2 of the paper with exact per-step entropy in place of sampled surprisal.
* `fit_fixed_future`: one global ``a`` for a fixed F array (the practical sampler's setting; convex).
* `global_alpha`: one α for all steps with F the adjusted model's own exact future entropy (a fixed point; not
  convex in general, fitted by bounded scalar minimisation).
* `temperature_zeroing_entce`: the τ that makes total EntCE of p^^(1/τ) zero, and what it costs in log loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from lmcal.entropy.toyworld import (
    ToyWorld,
    calibration_report,
    future_entropy,
    row_entropy,
    star_marginals,
    step_log_loss,
    token_future_entropy,
)

ALPHA_BOUNDS = (-0.5, 20.0)


def adjusted_log_probs(log_p: np.ndarray, F: np.ndarray, alpha: float) -> np.ndarray:
    """log p~ = (1+α) log p^ - α F - log Z, normalised over the last axis."""
    if not alpha > -1:
        raise ValueError(f"alpha must be > -1 (1 + alpha is the inverse temperature), got {alpha!r}")
    z = (1.0 + alpha) * log_p - alpha * F
    m = z.max(-1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


def minimise_on_interval(loss: Callable[[float], float], bounds=ALPHA_BOUNDS) -> float:
    """Bounded scalar minimisation of a convex loss, falling back to α = 0 if that is no worse.

    The fallback makes "never worse than α = 0" hold exactly even when the optimiser stops early.
    """
    lo, hi = bounds
    if not lo < 0 < hi:
        raise ValueError(f"alpha bounds must contain 0 (the base model), got {bounds}")
    res = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-9})
    return float(res.x) if loss(float(res.x)) <= loss(0.0) else 0.0


def algorithm1(world: ToyWorld, *, future: str = "exact", n_rollouts: int = 16, seed: int = 0,
               bounds=ALPHA_BOUNDS) -> dict:
    """The paper's Algorithm 1 (t = T-1..0): per-step α_t, F = the adjusted model's own future entropy."""
    if future not in ("exact", "rollout"):
        raise ValueError(f"future must be 'exact' or 'rollout', got {future!r}")
    T = world.horizon
    rng = np.random.default_rng(seed)
    log_p, d_star = _log(world.p_hat), star_marginals(world)
    Q = world.tiled(world.p_hat)
    F_used = np.zeros((T, world.n_states, world.vocab))
    alphas = np.zeros(T)
    for t in range(T - 1, -1, -1):
        if future == "exact":
            F = token_future_entropy(world, future_entropy(world, Q))[t]
        else:
            F = rollout_future(world, Q, t, n_rollouts, rng)

        def loss(a, F=F, t=t):
            return step_log_loss(adjusted_log_probs(log_p, F, a), world.p_star, d_star[t])

        alphas[t] = minimise_on_interval(loss, bounds)
        Q[t] = np.exp(adjusted_log_probs(log_p, F, alphas[t]))
        F_used[t] = F
    return {"Q": Q, "alpha": alphas, "F_used": F_used,
            "F_exact": token_future_entropy(world, future_entropy(world, Q))}


def adjusted_model(world: ToyWorld, F: np.ndarray, alpha: float) -> np.ndarray:
    """The (T, S, V) adjusted model for one global α and a fixed F of shape (T, S, V)."""
    return np.exp(adjusted_log_probs(_log(world.p_hat)[None], F, alpha))


def fixed_future_log_loss(world: ToyWorld, F: np.ndarray, alpha: float) -> float:
    """Total p* log loss of the adjusted model with one α and a fixed F (convex in α)."""
    log_q = adjusted_log_probs(_log(world.p_hat)[None], F, alpha)
    d_star = star_marginals(world)
    return sum(step_log_loss(log_q[t], world.p_star, d_star[t]) for t in range(world.horizon))


def fit_fixed_future(world: ToyWorld, F: np.ndarray, bounds=ALPHA_BOUNDS) -> float:
    """The global ``a`` minimising p* log loss for a fixed F; 0 if nothing beats the base model."""
    return minimise_on_interval(lambda a: fixed_future_log_loss(world, F, a), bounds)


def self_consistent_model(world: ToyWorld, alpha: float) -> np.ndarray:
    """One α at every step, F_t the exact future entropy of this same adjusted model (built backwards)."""
    log_p = _log(world.p_hat)
    Q = world.tiled(world.p_hat)
    G_next = np.zeros(world.n_states)
    for t in range(world.horizon - 1, -1, -1):
        Q[t] = np.exp(adjusted_log_probs(log_p, G_next[world.next_state], alpha))
        G_next = row_entropy(Q[t]) + np.sum(Q[t] * G_next[world.next_state], axis=-1)
    return Q


def global_alpha(world: ToyWorld, bounds=ALPHA_BOUNDS) -> float:
    """One α for all steps with self-consistent exact F, fitted on total p* log loss."""
    return minimise_on_interval(
        lambda a: calibration_report(world, self_consistent_model(world, a))["log_loss"], bounds)


def tempered(world: ToyWorld, tau: float) -> np.ndarray:
    """p^ at temperature τ: p^^(1/τ) renormalised (= the adjusted model with α = 1/τ - 1 and F = 0)."""
    return world.tiled(np.exp(adjusted_log_probs(_log(world.p_hat), np.zeros_like(world.p_hat), 1 / tau - 1)))


def temperature_zeroing_entce(world: ToyWorld, lo: float = 0.05) -> float:
    """The τ in [lo, 1] at which the total EntCE of p^ at temperature τ is 0 (p^ must start underconfident)."""
    def entce(tau):
        return calibration_report(world, tempered(world, tau))["entce"]

    if entce(1.0) <= 0 or entce(lo) >= 0:
        raise ValueError(f"EntCE does not change sign on τ in [{lo}, 1]: {entce(lo):.4g}, {entce(1.0):.4g}")
    return float(brentq(entce, lo, 1.0, xtol=1e-12))


# ---------------------------------------------------------------- estimated future entropy

def lookahead_future(world: ToyWorld) -> np.ndarray:
    """Braverman et al.'s one-step F: the next step's entropy H(p^(.|next[s, v])), 0 after the last token."""
    F = np.zeros((world.horizon, world.n_states, world.vocab))
    F[:-1] = row_entropy(world.p_hat)[world.next_state]
    return F


def rollout_future(world: ToyWorld, Q: np.ndarray, t: int, n_rollouts: int, rng: np.random.Generator,
                   horizon: int | None = None) -> np.ndarray:
    """Monte Carlo F_t(s, v): mean over ``n_rollouts`` continuations sampled from Q of Σ_u H(Q[u, S_u]).

    Every (s, v) gets its own independent rollouts from state next[s, v] at step t+1, for ``horizon`` steps
    (default: to the end of the text, which makes the estimate unbiased for the exact F).
    """
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    T = Q.shape[0]
    end = T if horizon is None else min(T, t + 1 + int(horizon))
    state = np.repeat(world.next_state[:, :, None], n_rollouts, axis=2)  # (S, V, m)
    total = np.zeros(state.shape)
    H = row_entropy(Q)
    for u in range(t + 1, end):
        total += H[u][state]
        cdf = np.cumsum(Q[u][state], axis=-1)
        tok = (rng.random(state.shape)[..., None] * cdf[..., -1:] < cdf).argmax(-1)
        state = world.next_state[state, tok]
    return total.mean(axis=2)


def rollout_future_all(world: ToyWorld, Q: np.ndarray, n_rollouts: int, seed: int = 0,
                       horizon: int | None = None) -> np.ndarray:
    """`rollout_future` for every step: an estimate of the (T, S, V) F of the fixed model Q."""
    rng = np.random.default_rng(seed)
    return np.stack([rollout_future(world, Q, t, n_rollouts, rng, horizon) for t in range(world.horizon)])


def future_error(world: ToyWorld, F_est: np.ndarray, F_true: np.ndarray) -> float:
    """Root mean squared error of an F estimate, weighted by how often (t, s, v) occurs under p* text."""
    w = star_marginals(world)[:, :, None] * world.p_star[None]
    return float(np.sqrt(np.sum(w * (F_est - F_true) ** 2) / np.sum(w)))


def toy_study(world: ToyWorld, n_rollouts: int = 16, seed: int = 0) -> list[dict]:
    """Every method on one world: exact totals of entropy, log loss and EntCE (nats over the horizon).

    ``f_rmse`` is the p*-weighted RMSE of the F a method used against the exact F it stands for: the exact
    future entropy of p^ for the fixed-F methods, of the final adjusted model for Algorithm 1.
    """
    base = world.tiled(world.p_hat)
    F_base = token_future_entropy(world, future_entropy(world, base))
    rows = []

    def add(method, Q, alpha, f_rmse=0.0):
        r = calibration_report(world, Q)
        rows.append({"method": method, "entropy": r["entropy"], "log_loss": r["log_loss"], "entce": r["entce"],
                     "max_abs_entce_t": r["max_abs_entce_t"], "alpha": alpha, "f_rmse": f_rmse})

    add("base (tau=1)", base, 0.0)
    tau = temperature_zeroing_entce(world)
    add(f"temperature tau={tau:.4f}", tempered(world, tau), 1 / tau - 1)
    for name, out in (("algorithm1 exact F", algorithm1(world)),
                      (f"algorithm1 rollout F (m={n_rollouts})",
                       algorithm1(world, future="rollout", n_rollouts=n_rollouts, seed=seed))):
        add(name, out["Q"], float(np.abs(out["alpha"]).max()), future_error(world, out["F_used"], out["F_exact"]))
    a = global_alpha(world)
    add("global alpha, self-consistent exact F", self_consistent_model(world, a), a)
    for name, F in (("global a, exact F of p^", F_base), ("global a, lookahead F", lookahead_future(world)),
                    (f"global a, rollout F of p^ (m={n_rollouts})",
                     rollout_future_all(world, base, n_rollouts, seed))):
        a = fit_fixed_future(world, F)
        add(name, adjusted_model(world, F, a), a, future_error(world, F, F_base))
    return rows
