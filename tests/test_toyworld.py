"""The exact toy world for future-entropy calibration (lmcal.entropy.toyworld / toycalib; spec §6)."""

from __future__ import annotations

import numpy as np
import pytest
from lmcal.entropy import toycalib as tc
from lmcal.entropy.toyworld import (
    ToyWorld,
    calibration_report,
    derailing_world,
    enumerate_sequences,
    future_entropy,
    per_step_entropy,
    per_step_log_loss,
    token_future_entropy,
)


@pytest.fixture(scope="module")
def tiny():
    return derailing_world(n_states=3, vocab=4, horizon=4, n_derail=1, eps_hat=0.2, eps_star=0.05, seed=3)


@pytest.fixture(scope="module")
def world():
    return derailing_world()


def random_model(world, seed):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(world.vocab), size=(world.horizon, world.n_states))


@pytest.mark.parametrize("which", ["p_hat", "random"])
def test_dynamic_programs_match_brute_force_enumeration(tiny, which):
    Q = tiny.tiled(tiny.p_hat) if which == "p_hat" else random_model(tiny, 1)  # random: step-dependent
    brute = enumerate_sequences(tiny, Q)
    np.testing.assert_allclose(per_step_entropy(tiny, Q), brute["entropy_t"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(per_step_log_loss(tiny, Q), brute["log_loss_t"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(future_entropy(tiny, Q), brute["future"], rtol=1e-10, atol=1e-12)


def test_model_on_its_own_text_has_zero_entce(world):
    # p* scored on p* text: entropy and log loss are the same number at every step
    r = calibration_report(world, world.tiled(world.p_star))
    np.testing.assert_allclose(r["entce_t"], 0.0, atol=1e-12)


def test_the_derailing_model_is_underconfident_and_cooling_it_costs_log_loss(world):
    base = calibration_report(world, world.tiled(world.p_hat))
    assert base["entce"] > 1.0 and (base["entce_t"] > 0).all()
    tau = tc.temperature_zeroing_entce(world)
    cooled = calibration_report(world, tc.tempered(world, tau))
    assert 0.5 < tau < 1 and abs(cooled["entce"]) < 1e-9
    assert cooled["log_loss"] > base["log_loss"] + 1e-3  # the paper's trade-off holds in the default world


def test_adjusted_probabilities_match_the_formula_elementwise():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=3)
    F = rng.uniform(0, 4, size=(3, 5))
    a = 0.37
    got = np.exp(tc.adjusted_log_probs(np.log(p), F, a))
    for s in range(3):  # naive loop over the formula
        w = [p[s, v] ** (1 + a) * np.exp(-a * F[s, v]) for v in range(5)]
        np.testing.assert_allclose(got[s], np.array(w) / sum(w), rtol=1e-12)
    np.testing.assert_allclose(np.exp(tc.adjusted_log_probs(np.log(p), F, 0.0)), p, rtol=1e-12)
    with pytest.raises(ValueError, match="alpha must be > -1"):
        tc.adjusted_log_probs(np.log(p), F, -1.0)


@pytest.mark.parametrize("kind", ["exact", "lookahead", "rollout"])
def test_log_loss_is_convex_in_a_for_fixed_future_and_the_fit_never_loses(world, kind):
    base = world.tiled(world.p_hat)
    F = {"exact": lambda: token_future_entropy(world, future_entropy(world, base)),
         "lookahead": lambda: tc.lookahead_future(world),
         "rollout": lambda: tc.rollout_future_all(world, base, 4, seed=1)}[kind]()
    grid = np.linspace(-0.4, 3.0, 61)
    ll = np.array([tc.fixed_future_log_loss(world, F, a) for a in grid])
    assert (np.diff(ll, 2) >= -1e-10).all()
    a = tc.fit_fixed_future(world, F)
    best = tc.fixed_future_log_loss(world, F, a)
    assert best <= tc.fixed_future_log_loss(world, F, 0.0) and best <= ll.min() + 1e-6


def test_fit_falls_back_to_zero_when_every_alpha_hurts():
    # a loss with its minimum at alpha = -2, outside the bounds' reach: 0 is not beaten by the bounded optimum
    assert tc.minimise_on_interval(lambda a: (a + 0.2) ** 2, bounds=(-0.1, 5.0)) == pytest.approx(-0.1, abs=1e-6)
    assert tc.minimise_on_interval(lambda a: a ** 2 + 1.0) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="contain 0"):
        tc.minimise_on_interval(lambda a: a ** 2, bounds=(0.1, 1.0))


def test_algorithm1_zeroes_entce_without_raising_log_loss_at_any_step(world):
    base = calibration_report(world, world.tiled(world.p_hat))
    out = tc.algorithm1(world)
    r = calibration_report(world, out["Q"])
    assert abs(r["entce"]) < 1e-6  # the telescoping identity: Σ_t L_t = Σ_t H_t at stationary α_t
    assert r["max_abs_entce_t"] < 0.5 * base["max_abs_entce_t"]
    assert (r["log_loss_t"] <= base["log_loss_t"] + 1e-12).all() and r["log_loss"] < base["log_loss"]
    assert (out["alpha"] > 0).all()  # it cools: every step penalises high-entropy futures
    np.testing.assert_allclose(out["F_used"], out["F_exact"], atol=1e-12)  # F is the model's own


def test_algorithm1_stationarity_identity_per_step(world):
    # L_t + E*[F_t(S_t, Y_t)] = E*[G_t(S_t)] at each step (G: the adjusted model's future entropy)
    from lmcal.entropy.toyworld import star_marginals
    out = tc.algorithm1(world)
    G = future_entropy(world, out["Q"])
    d = star_marginals(world)
    L = per_step_log_loss(world, out["Q"])
    EF = np.einsum("ts,sv,tsv->t", d, world.p_star, out["F_exact"])
    np.testing.assert_allclose(L + EF, np.sum(d * G[:-1], axis=1), atol=1e-6)


def test_rollout_estimate_converges_to_exact_future(world):
    base = world.tiled(world.p_hat)
    F = token_future_entropy(world, future_entropy(world, base))
    err = [tc.future_error(world, tc.rollout_future_all(world, base, m, seed=2), F) for m in (4, 64)]
    assert err[1] < err[0] / 2.5  # Monte Carlo error falls like 1/sqrt(m): 4 -> 64 is a factor 4
    truncated = tc.rollout_future_all(world, base, 1, seed=0, horizon=1)  # one step, exact entropies
    np.testing.assert_allclose(truncated, tc.lookahead_future(world), atol=1e-12)


def test_toy_study_rows(world):
    rows = {r["method"].split(" tau=")[0]: r for r in tc.toy_study(world, n_rollouts=8)}
    base, alg = rows["base (tau=1)"], rows["algorithm1 exact F"]
    assert alg["log_loss"] < rows["temperature"]["log_loss"] and alg["log_loss"] < base["log_loss"]
    for r in rows.values():
        assert r["log_loss"] <= base["log_loss"] + 1e-9 or r["method"].startswith("temperature")


def test_bad_worlds_are_rejected():
    w = derailing_world(n_states=3, vocab=4, horizon=2, n_derail=1)
    with pytest.raises(ValueError, match="zero probability"):
        p_hat = w.p_hat.copy()
        p_hat[0] = np.eye(4)[1]
        ToyWorld(w.next_state, w.p_star, p_hat, w.start, 2)
    with pytest.raises(ValueError, match="shape"):
        per_step_entropy(w, w.p_hat)
