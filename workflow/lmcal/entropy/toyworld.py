"""An exact toy world for future-entropy calibration (spec entropy-calibration §6, paper §5 / Algorithm 1).

The language p* is a finite-state machine: a state s emits token v with probability p*(v|s) and moves to the
deterministic state ``next_state[s, v]``; text has a fixed horizon of T tokens and starts from ``start`` (a
distribution over states). A model p^ shares the machine but makes the paper's error: it puts a little too
much probability on "derail" tokens that lead into a high-entropy junk state (see `derailing_world`).

Because the state is a sufficient statistic of the prefix, every quantity is an exact dynamic program over
(step, state) instead of a sum over V^T sequences:

* a (possibly step-dependent) model is an array ``Q[t, s, v]`` of shape (T, S, V);
* ``future_entropy(Q)[t, s]`` is the entropy of the rest of the text Y_t..Y_{T-1} when Q starts in s at step t
  (chain rule: H(Q[t,s]) + E_v G[t+1, next[s, v]]); F(c, v) for a prefix c in state s at step t is then
  ``G[t+1, next[s, v]]`` (`token_future_entropy`);
* per-step entropy H_t averages H(Q[t, s]) over Q's *own* state marginal at step t, per-step log loss L_t
  averages -log Q[t, s, Y] over p*'s state marginal and p*'s tokens; EntCE_t = H_t - L_t (nats, paper sign).

`enumerate_sequences` is the brute-force reference the tests compare these against on a tiny world.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ToyWorld:
    """p* and p^ on one finite-state machine; all probability arrays are float64 and rows sum to 1."""

    next_state: np.ndarray  # (S, V) int: the state after emitting v in s
    p_star: np.ndarray  # (S, V) the true language
    p_hat: np.ndarray  # (S, V) the model
    start: np.ndarray  # (S,) distribution of the state before the first token
    horizon: int  # T tokens per text

    def __post_init__(self) -> None:
        S, V = self.p_star.shape
        if self.p_hat.shape != (S, V) or self.next_state.shape != (S, V):
            raise ValueError(f"p_hat {self.p_hat.shape} and next_state {self.next_state.shape} must be {(S, V)}")
        if self.start.shape != (S,):
            raise ValueError(f"start must have shape ({S},), got {self.start.shape}")
        if self.next_state.min() < 0 or self.next_state.max() >= S:
            raise ValueError(f"next_state must hold state ids in [0, {S}), got {self.next_state.min()}..."
                             f"{self.next_state.max()}")
        for name, arr in (("p_star", self.p_star), ("p_hat", self.p_hat), ("start", self.start)):
            if (arr < 0).any() or not np.allclose(arr.sum(-1), 1.0, atol=1e-10):
                raise ValueError(f"{name} must be non-negative with rows summing to 1")
        if ((self.p_star > 0) & (self.p_hat <= 0)).any():
            raise ValueError("p_hat gives zero probability to a token p* can emit (infinite log loss)")
        if int(self.horizon) != self.horizon or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon!r}")

    @property
    def n_states(self) -> int:
        return self.p_star.shape[0]

    @property
    def vocab(self) -> int:
        return self.p_star.shape[1]

    def tiled(self, p: np.ndarray) -> np.ndarray:
        """A time-homogeneous model (S, V) as the (T, S, V) array every DP here takes."""
        return np.broadcast_to(p, (self.horizon, *p.shape)).copy()


def derailing_world(n_states: int = 6, vocab: int = 16, horizon: int = 12, n_derail: int = 2,
                    eps_hat: float = 0.03, eps_star: float = 0.01, concentration: float = 0.3,
                    seed: int = 0) -> ToyWorld:
    """A random world whose model over-weights the tokens that derail text into a junk state.

    States 0..S-2 are "normal", state S-1 is junk. From a normal state the last ``n_derail`` tokens lead to junk
    and the others to random normal states; junk emits every token uniformly (entropy log V) and never leaves.
    p* gives the derail tokens total mass ``eps_star`` (rare human derailments, so log loss is finite and junk
    prefixes exist in human text); p^ keeps p*'s normal-token shape but gives them ``eps_hat > eps_star``.
    Normal-state distributions are Dirichlet(``concentration``), i.e. fairly peaked, so junk is far more
    entropic than normal text and sampling from p^ accumulates entropy that its log loss does not show.
    The defaults give a world where cooling p^ until EntCE is 0 *raises* log loss (the paper's trade-off).
    """
    if not 2 <= n_states or not 1 <= n_derail < vocab:
        raise ValueError(f"need n_states >= 2 and 1 <= n_derail < vocab, got {n_states}, {n_derail}, {vocab}")
    if not 0 <= eps_star < 1 or not 0 < eps_hat < 1:
        raise ValueError(f"eps_star must be in [0, 1) and eps_hat in (0, 1), got {eps_star}, {eps_hat}")
    rng = np.random.default_rng(seed)
    S, V, junk, n_norm = n_states, vocab, n_states - 1, vocab - n_derail
    nxt = np.full((S, V), junk, dtype=np.int64)
    nxt[:junk, :n_norm] = rng.integers(0, junk, size=(junk, n_norm))
    shape = rng.dirichlet(np.full(n_norm, concentration), size=junk)
    shape = (shape + 1e-3) / (shape + 1e-3).sum(1, keepdims=True)  # no token exactly impossible

    def with_derail_mass(eps: float) -> np.ndarray:
        p = np.full((S, V), 1.0 / V)
        p[:junk, :n_norm] = (1 - eps) * shape
        p[:junk, n_norm:] = eps / n_derail
        return p

    start = np.zeros(S)
    start[0] = 1.0
    return ToyWorld(nxt, with_derail_mass(eps_star), with_derail_mass(eps_hat), start, int(horizon))


# ---------------------------------------------------------------- exact dynamic programs

def row_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) along the last axis; 0 log 0 = 0."""
    return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=-1)


def _check_model(world: ToyWorld, Q: np.ndarray) -> None:
    want = (world.horizon, world.n_states, world.vocab)
    if Q.shape != want:
        raise ValueError(f"model array must have shape (T, S, V) = {want}, got {Q.shape}")


def future_entropy(world: ToyWorld, Q: np.ndarray) -> np.ndarray:
    """G[t, s] = entropy of Y_t..Y_{T-1} under Q from state s at step t; shape (T+1, S), G[T] = 0."""
    _check_model(world, Q)
    G = np.zeros((world.horizon + 1, world.n_states))
    for t in range(world.horizon - 1, -1, -1):
        G[t] = row_entropy(Q[t]) + np.sum(Q[t] * G[t + 1][world.next_state], axis=-1)
    return G


def token_future_entropy(world: ToyWorld, G: np.ndarray) -> np.ndarray:
    """F[t, s, v] = G[t+1, next[s, v]]: the entropy still to come after choosing v in s at step t."""
    return G[1:][:, world.next_state]


def state_marginals(world: ToyWorld, Q: np.ndarray) -> np.ndarray:
    """d[t, s] = P(state s before token t) when text is generated by Q; shape (T, S)."""
    _check_model(world, Q)
    d = np.zeros((world.horizon, world.n_states))
    d[0] = world.start
    flat_next = world.next_state.ravel()
    for t in range(world.horizon - 1):
        d[t + 1] = np.bincount(flat_next, weights=(d[t][:, None] * Q[t]).ravel(), minlength=world.n_states)
    return d


def star_marginals(world: ToyWorld) -> np.ndarray:
    """State marginals of human (p*) text."""
    return state_marginals(world, world.tiled(world.p_star))


def per_step_entropy(world: ToyWorld, Q: np.ndarray) -> np.ndarray:
    """H_t = E[H(Q[t, S_t])] along Q's own generations; shape (T,)."""
    return np.sum(state_marginals(world, Q) * row_entropy(Q), axis=-1)


def step_log_loss(log_q: np.ndarray, p_star: np.ndarray, d_star_t: np.ndarray) -> float:
    """One step's log loss E_{S~d*, Y~p*(.|S)}[-log q(Y|S)] for log-probabilities ``log_q`` of shape (S, V)."""
    w = d_star_t[:, None] * p_star
    return float(-np.sum(np.where(w > 0, w * log_q, 0.0)))


def per_step_log_loss(world: ToyWorld, Q: np.ndarray) -> np.ndarray:
    """L_t = teacher-forced log loss of Q on p* text at step t; shape (T,)."""
    _check_model(world, Q)
    d_star = star_marginals(world)
    with np.errstate(divide="ignore"):
        log_q = np.log(Q)
    return np.array([step_log_loss(log_q[t], world.p_star, d_star[t]) for t in range(world.horizon)])


def calibration_report(world: ToyWorld, Q: np.ndarray) -> dict[str, float | np.ndarray]:
    """Exact per-step entropy, log loss and EntCE of a model, plus their totals over the horizon."""
    H, L = per_step_entropy(world, Q), per_step_log_loss(world, Q)
    return {"entropy_t": H, "log_loss_t": L, "entce_t": H - L, "entropy": float(H.sum()),
            "log_loss": float(L.sum()), "entce": float(H.sum() - L.sum()),
            "max_abs_entce_t": float(np.abs(H - L).max())}


# ---------------------------------------------------------------- brute force (tests only; V^T sequences)

def enumerate_sequences(world: ToyWorld, Q: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step entropy, log loss and future entropy by summing over every token sequence (tiny worlds only).

    Future entropy here is computed as the entropy of the *joint* distribution of the continuation
    (-Σ q(y) log q(y) over whole continuations), not by the chain rule, so it checks `future_entropy`.
    """
    _check_model(world, Q)
    T, S, V = Q.shape
    if V ** T > 200_000:
        raise ValueError(f"enumerate_sequences is for tiny worlds; V^T = {V ** T} sequences")
    H, L = np.zeros(T), np.zeros(T)
    for s0 in range(S):
        for ys in itertools.product(range(V), repeat=T):
            s, pq, ps = s0, world.start[s0], world.start[s0]
            for t, y in enumerate(ys):
                H[t] += pq * row_entropy(Q[t, s]) / V ** (T - t)  # prefix y_<t recurs in V^(T-t) sequences
                if ps > 0 and world.p_star[s, y] > 0:
                    L[t] -= ps * world.p_star[s, y] * np.log(Q[t, s, y]) / V ** (T - 1 - t)  # y_<=t: V^(T-1-t)
                pq, ps, s = pq * Q[t, s, y], ps * world.p_star[s, y], world.next_state[s, y]
    G = np.zeros((T + 1, S))
    for t in range(T):
        for s0 in range(S):
            for ys in itertools.product(range(V), repeat=T - t):
                s, q = s0, 1.0
                for u, y in enumerate(ys):
                    q, s = q * Q[t + u, s, y], world.next_state[s, y]
                if q > 0:
                    G[t, s0] -= q * np.log(q)
    return {"entropy_t": H, "log_loss_t": L, "future": G}
