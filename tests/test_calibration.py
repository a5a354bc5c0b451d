"""Calibration metrics: known answers, a naive reference, and statistical sanity on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lmcal.calibration import metrics as cal


def _naive_ece(conf, correct, n_bins, rms=False):
    """Loop-over-bins reference with explicit interval tests (equal-width bins, last bin closed)."""
    n, total = len(conf), 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = [i for i in range(n) if lo <= conf[i] < hi or (m == n_bins - 1 and conf[i] == 1.0)]
        if not inside:
            continue
        gap = np.mean([correct[i] for i in inside]) - np.mean([conf[i] for i in inside])
        total += len(inside) / n * (gap**2 if rms else abs(gap))
    return math.sqrt(total) if rms else total


def test_ece_and_rms_hand_example():
    conf = np.array([0.05, 0.15, 0.55, 0.65, 0.95, 1.0])
    correct = np.array([0, 0, 1, 0, 1, 1], dtype=bool)
    # bins 0, 1, 5, 6, 9, 9 -> gaps .05, .15, .45, .65 (one item each) and |1 - .975| = .025 (two items)
    assert cal.expected_calibration_error(conf, correct) == pytest.approx((0.05 + 0.15 + 0.45 + 0.65 + 2 * 0.025) / 6)
    want_rms = math.sqrt((0.05**2 + 0.15**2 + 0.45**2 + 0.65**2 + 2 * 0.025**2) / 6)
    assert cal.rms_calibration_error(conf, correct) == pytest.approx(want_rms)
    table = cal.reliability_table(conf, correct)
    assert table["count"].tolist() == [1, 1, 0, 0, 0, 1, 1, 0, 0, 2]
    assert table.loc[9, "confidence"] == pytest.approx(0.975) and table.loc[9, "accuracy"] == 1.0
    assert np.isnan(table.loc[2, "accuracy"])


def test_bin_edges_are_left_closed_and_last_bin_includes_one():
    assert cal.assign_bins(np.array([0.0, 0.1, 0.0999, 0.5, 0.9, 0.99, 1.0]), 10).tolist() == [0, 1, 0, 5, 9, 9, 9]
    assert cal.assign_bins(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), 4).tolist() == [0, 1, 2, 3, 3]


@pytest.mark.parametrize("n_bins", [1, 7, 10, 15])
def test_ece_matches_naive_loop(n_bins):
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.2, 1.0, 300)
    conf[:5] = [1.0, 0.5, 0.2, 0.6, 0.3]  # include exact edges
    correct = rng.random(300) < conf**2
    assert cal.expected_calibration_error(conf, correct, n_bins) == pytest.approx(_naive_ece(conf, correct, n_bins))
    assert cal.rms_calibration_error(conf, correct, n_bins) == pytest.approx(_naive_ece(conf, correct, n_bins, True))


def test_ece_near_zero_when_perfectly_calibrated_and_large_when_not():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.25, 1.0, 200_000)
    calibrated = rng.random(conf.size) < conf  # correct ~ Bernoulli(conf)
    for binning in cal.BINNINGS:
        assert cal.expected_calibration_error(conf, calibrated, 10, binning) < 0.005
        assert cal.rms_calibration_error(conf, calibrated, 10, binning) < 0.006
    # Accuracy conf^2 < conf in every bin, so ECE = E[conf - conf^2] = 0.625 - 0.4375 for conf ~ U(0.25, 1).
    overconfident = rng.random(conf.size) < conf**2
    assert cal.expected_calibration_error(conf, overconfident) == pytest.approx(0.1875, abs=0.005)


def test_equal_mass_bins_hold_equal_counts_and_known_ece():
    conf = np.array([0.9, 0.3, 0.8, 0.4, 0.6, 0.5])
    correct = np.array([1, 0, 0, 1, 1, 0])
    bins = cal.assign_bins(conf, 3, "mass")
    # sorted: .3 .4 | .5 .6 | .8 .9
    assert bins.tolist() == [2, 0, 2, 0, 1, 1]
    table = cal.reliability_table(conf, correct, 3, "mass")
    assert table["count"].tolist() == [2, 2, 2]
    assert table["lower"].tolist() == [0.3, 0.5, 0.8] and table["upper"].tolist() == [0.4, 0.6, 0.9]
    # gaps: |.5 - .35| = .15, |.5 - .55| = .05, |.5 - .85| = .35, equal weights
    assert cal.expected_calibration_error(conf, correct, 3, "mass") == pytest.approx((0.15 + 0.05 + 0.35) / 3)
    sizes = np.bincount(cal.assign_bins(np.random.default_rng(0).random(11), 3, "mass"))
    assert sizes.tolist() == [4, 4, 3]


def test_brier_nll_accuracy_hand_example_with_ragged_choices():
    probs = [[0.7, 0.2, 0.1], [0.5, 0.5], [0.1, 0.6, 0.3]]
    gold = [0, 1, 2]
    # (.3^2 + .2^2 + .1^2) + (.5^2 + .5^2) + (.1^2 + .6^2 + .7^2)
    assert cal.brier_score(probs, gold) == pytest.approx((0.14 + 0.5 + 0.86) / 3)
    assert cal.gold_nll(probs, gold) == pytest.approx(-(math.log(0.7) + math.log(0.5) + math.log(0.3)) / 3)
    conf, pred, correct = cal.top_label(probs, gold)
    assert pred.tolist() == [0, 0, 1]  # the 0.5/0.5 tie goes to the lowest index
    assert conf.tolist() == [0.7, 0.5, 0.6] and correct.tolist() == [True, False, False]
    assert cal.accuracy(probs, gold) == pytest.approx(1 / 3)
    p, is_gold = cal.all_choice_pairs(probs, gold)
    assert p.tolist() == [0.7, 0.2, 0.1, 0.5, 0.5, 0.1, 0.6, 0.3]
    assert is_gold.tolist() == [True, False, False, False, True, False, False, True]


def test_calibration_metrics_bundle():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    gold = np.array([0, 1, 1, 0])
    m = cal.calibration_metrics(probs, gold, n_bins=5)
    conf, _, correct = cal.top_label(probs, gold)
    assert m["n_items"] == 4 and m["n_bins"] == 5 and m["binning"] == "width"
    assert m["accuracy"] == 0.75 and m["chance_accuracy"] == 0.5
    assert m["ece"] == pytest.approx(_naive_ece(conf, correct, 5))
    assert m["brier"] == pytest.approx(np.mean([0.02, 0.72, 0.08, 0.5]))
    assert m["mean_confidence"] == pytest.approx(0.7)


def test_bad_inputs_raise_with_argument_names():
    with pytest.raises(ValueError, match="n_bins"):
        cal.expected_calibration_error(np.array([0.5]), np.array([1]), n_bins=0)
    with pytest.raises(ValueError, match="binning"):
        cal.expected_calibration_error(np.array([0.5]), np.array([1]), binning="quantile")
    with pytest.raises(ValueError, match="conf"):
        cal.expected_calibration_error(np.array([1.5]), np.array([1]))
    with pytest.raises(ValueError, match="correct"):
        cal.expected_calibration_error(np.array([0.5, 0.6]), np.array([1]))
    with pytest.raises(ValueError, match="probs"):
        cal.brier_score([[0.5, 0.6]], [0])
    with pytest.raises(ValueError, match="gold"):
        cal.brier_score([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match="gold"):
        cal.gold_nll([[0.5, 0.5]], [0.0])


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_ece_draws_match_the_per_draw_loop(binning):
    rng = np.random.default_rng(3)
    conf = np.concatenate([rng.uniform(0.25, 1.0, 57), [1.0, 0.25, 0.5]])  # edges: 1.0 closes the last bin
    correct = rng.uniform(size=conf.size) < conf
    idx = rng.integers(0, conf.size, size=(40, conf.size))
    got = cal.ece_draws(conf, correct, idx, n_bins=7, binning=binning)
    want = [cal.expected_calibration_error(conf[i], correct[i], n_bins=7, binning=binning) for i in idx]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got.shape == (40,) and np.ptp(got) > 0  # draws differ, so a broadcast of one value would fail
    with pytest.raises(ValueError, match="idx"):
        cal.ece_draws(conf, correct, idx[0], n_bins=7)
