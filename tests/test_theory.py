"""Known answers of the toy power-law learner (spec §5 table) and the Zipf-α estimator."""

from __future__ import annotations

import numpy as np
import pytest
from lmcal.entropy import theory as th

V = 10**6

# spec §5: alpha -> (slope over 10 log-spaced m in [1e2, v/3], slope over [1e2, 1e3])
SPEC_SLOPES = {1.5: (-0.340, -0.336), 1.114: (-0.187, -0.151), 1.0: (-0.150, -0.099), 0.918: (-0.126, -0.067)}


@pytest.fixture(scope="module")
def slopes():
    return th.theory_slopes(SPEC_SLOPES, v=V, m_lo=1e2, m_hi=None, n_m=10, small_hi=1e3).set_index("alpha")


@pytest.mark.parametrize("alpha", list(SPEC_SLOPES))
def test_exact_sum_slopes_match_spec_table(slopes, alpha):
    wide, small = SPEC_SLOPES[alpha]
    assert slopes.loc[alpha, "slope"] == pytest.approx(wide, abs=0.003)
    assert slopes.loc[alpha, "slope_small"] == pytest.approx(small, abs=0.003)
    assert slopes.loc[alpha, "predicted"] == pytest.approx(1 / alpha - 1)
    # finite v makes the decay steeper than the v -> inf exponent (paper Fig. 4: "slightly steeper")
    assert slopes.loc[alpha, "slope"] < slopes.loc[alpha, "predicted"]


def test_c_alpha_and_asymptotic_vs_exact():
    assert th.c_alpha(1.5) == pytest.approx(0.942, abs=5e-4)
    assert th.c_alpha(1.114) == pytest.approx(1.120, abs=5e-4)
    assert th.singleton_rate_asymptotic(1.5, 1e4)[0] == pytest.approx(0.0437, abs=5e-5)
    assert th.expected_singleton_rate(1.5, 1e4, V)[0] == pytest.approx(0.0430, abs=5e-5)
    # the incomplete-gamma integral sits between: it keeps finite Z but treats ranks as continuous
    assert th.singleton_rate_integral(1.5, 1e4, V)[0] == pytest.approx(0.0437, abs=2e-4)
    with pytest.raises(ValueError, match="alpha"):
        th.c_alpha(1.0)


def test_exact_sum_matches_naive_loop():
    alpha, v = 1.2, 500
    p = np.arange(1, v + 1, dtype=float) ** -alpha
    p /= p.sum()
    for m in (1, 7, 300):
        naive = sum(pi * (1 - pi) ** (m - 1) for pi in p)
        assert th.expected_singleton_rate(alpha, m, v)[0] == pytest.approx(naive, rel=1e-12)
    assert th.expected_singleton_rate(alpha, 1, v)[0] == pytest.approx(1.0)  # one token is always a singleton


def test_monte_carlo_agrees_with_exact_within_standard_error():
    ms = np.array([100, 1000, 20000])
    mean, se = th.singleton_rate_monte_carlo(1.5, ms, V, n_draws=100, seed=0)
    exact = th.expected_singleton_rate(1.5, ms, V)
    assert np.all(se > 0)
    assert np.all(np.abs(mean - exact) < 4 * se), (mean, exact, se)


def test_toy_generator_matches_saturation_formula_and_slope_of_q():
    ms = th.log_spaced_m(1e3, 3e5, 5)
    runs, slopes = th.toy_generator_slopes([1.5], ms, v=V, steps=1, n_seq=4000, n_train=8, seed=1)
    z = (runs["entce"] - runs["entce_predicted"]) / runs["entce_se"]
    assert np.all(np.abs(z) < 4), z.tolist()
    # one-step horizon: EntCE = C_H * q exactly in expectation, so the slopes agree with the exact-sum slope
    row = slopes.iloc[0]
    exact = th.loglog_slope(ms, th.expected_singleton_rate(1.5, ms, V))
    assert row["slope_q"] == pytest.approx(exact, abs=0.02)
    assert row["slope_entce"] == pytest.approx(exact, abs=0.03)
    # a long horizon saturates (EntCE -> C_H) and flattens the slope, as the formula predicts
    _, long = th.toy_generator_slopes([1.5], ms, v=V, steps=64, n_seq=500, n_train=4, seed=1)
    assert long["slope_entce"].iloc[0] > row["slope_entce"] + 0.1
    assert long["slope_entce"].iloc[0] == pytest.approx(long["slope_entce_predicted"].iloc[0], abs=0.02)


@pytest.mark.parametrize("alpha", [0.9, 1.2, 1.5])
def test_zipf_estimator_recovers_planted_alpha(alpha):
    rng = np.random.default_rng(7)
    cdf = np.cumsum(th.zipf_probs(alpha, 20000))
    ids = rng.permutation(20000)[th.sample_zipf(cdf, 400_000, rng)]  # token ids unrelated to rank
    counts = th.unigram_count_matrix(np.array_split(ids, 200))
    res = th.zipf_alpha_with_ci(counts, top_k=300, n_boot=50, seed=0)
    assert res["alpha"] == pytest.approx(alpha, abs=0.02)
    lo, hi = res["alpha_ci"]
    # rank-frequency OLS on empirical ranks is slightly misspecified, so allow 0.01 beyond the narrow CI
    assert lo - 0.01 < alpha < hi + 0.01 and 0 < hi - lo < 0.05
    assert res["k_used"] == 300 and res["n_tokens"] == 400_000


def test_zipf_ci_corrects_undersampled_tail_bias():
    # 30k tokens, top 500 of 3000 types: the tail ranks hold a handful of counts and bias the slope low; the
    # percentile interval then misses the planted alpha, the basic (bias-reversing) interval covers it
    rng = np.random.default_rng(3)
    ids = th.sample_zipf(np.cumsum(th.zipf_probs(1.4, 3000)), 30_000, rng)
    with pytest.warns(UserWarning, match="biased low"):
        res = th.zipf_alpha_with_ci(th.unigram_count_matrix(np.array_split(ids, 100)), top_k=500, n_boot=100,
                                    seed=3)
    assert res["alpha"] < 1.4 and res["boot_bias"] < 0 and res["min_count_top_k"] < 10
    assert res["alpha_ci_percentile"][1] < 1.4
    assert res["alpha_ci"][0] < 1.4 < res["alpha_ci"][1]


def test_zipf_exact_power_law_counts_and_words_tokenizer():
    counts = np.round(1e6 * np.arange(1, 101, dtype=float) ** -1.3)
    assert th.fit_zipf_alpha(counts, top_k=50)["alpha"] == pytest.approx(1.3, abs=2e-3)
    docs, desc = th.tokenize_for_zipf(["The cat, the dog.", "the end"], "words")
    assert [d.tolist() for d in docs] == [[0, 1, 2, 0, 3, 4], [0, 5]] and desc.startswith("words")
    mat = th.unigram_count_matrix(docs)
    assert mat.toarray().sum(axis=0).tolist() == [3, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="model_dir"):
        th.tokenize_for_zipf(["x"], "smollm2")


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="alpha"):
        th.zipf_probs(-1.0, 10)
    with pytest.raises(ValueError, match="m "):
        th.expected_singleton_rate(1.5, 0, 10)
    with pytest.raises(ValueError, match="top_k"):
        th.fit_zipf_alpha(np.ones(10), top_k=1)
