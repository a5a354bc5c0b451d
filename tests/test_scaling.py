"""Tests of lmcal.scaling fits: planted laws recovered inside their intervals, the summed objective, VarPro vs
multi-start agreement, the vectorised L-BFGS against scipy (backtests and settings: test_scaling_backtest.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest
from lmcal.scaling import (
    FitSettings,
    fit_chinchilla,
    fit_loglog,
    fit_power_law,
    grid_starts,
    huber,
    log_huber_objective,
    resample_indices,
)
from lmcal.scaling.fit import single_threaded_blas
from lmcal.scaling.lbfgs import batched_lbfgs
from lmcal.scaling.objective import CHINCHILLA, POWER_LAW, log_predict, objective_and_grad
from planted_laws import (
    SMALL_GRID,
    TRUE_CH,
    TRUE_PL,
    chinchilla,
    planted_chinchilla,
    planted_power_law,
    power_law,
)
from scipy.optimize import minimize
from scipy.special import huber as scipy_huber

# ---------------------------------------------------------------------------------------------- fit_loglog


def test_fit_loglog_exact_on_noise_free_power_law():
    x = np.geomspace(1e3, 1e7, 9)
    out = fit_loglog(x, 5.0 * x**-0.25, n_boot=50)
    assert out["slope"] == pytest.approx(-0.25, abs=1e-12)
    assert out["intercept"] == pytest.approx(np.log(5.0), abs=1e-10)
    assert out["r2"] == pytest.approx(1.0)
    assert out["slope_lo"] == pytest.approx(-0.25, abs=1e-10) and out["slope_hi"] == pytest.approx(-0.25, abs=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_fit_loglog_ci_covers_planted_slope(seed):
    rng = np.random.default_rng(seed)
    x = np.geomspace(1e4, 1e8, 20)
    y = 3.0 * x**-0.3 * np.exp(rng.normal(0, 0.05, x.size))
    out = fit_loglog(x, y, n_boot=500, seed=seed)
    assert out["slope_lo"] <= -0.3 <= out["slope_hi"]
    assert out["slope_hi"] - out["slope_lo"] < 0.05  # the interval is informative, not trivially wide
    assert out["n"] == 20 and 0.9 < out["r2"] <= 1.0


def test_fit_loglog_matches_numpy_polyfit_and_is_seeded():
    rng = np.random.default_rng(7)
    x, y = np.geomspace(1, 1e4, 15), np.exp(rng.normal(size=15))
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    a, b = fit_loglog(x, y, n_boot=100, seed=3), fit_loglog(x, y, n_boot=100, seed=3)
    assert a["slope"] == pytest.approx(slope) and a["intercept"] == pytest.approx(intercept)
    assert a == b
    assert fit_loglog(x, y, n_boot=100, seed=4)["slope_lo"] != a["slope_lo"]


def test_fit_loglog_nested_groups_of_unequal_size():
    rng = np.random.default_rng(0)
    x = np.tile(np.geomspace(1e3, 1e6, 6), 3)[:16]  # groups of 6, 6 and 4 points
    groups = np.repeat([0, 1, 2], [6, 6, 4])
    y = 2.0 * x**-0.2 * np.exp(rng.normal(0, 0.02, 3)[groups] + rng.normal(0, 0.01, 16))
    out = fit_loglog(x, y, n_boot=200, groups=groups, return_draws=True)
    assert out["draws"].shape == (200, 2) and np.isfinite(out["draws"]).all()
    assert out["slope_lo"] <= -0.2 <= out["slope_hi"]


@pytest.mark.parametrize(
    "x, y, match",
    [([1, 2, 0], [1, 2, 3], "x"), ([1, 2, 3], [1, -2, 3], "y"), ([1, 2, 3], [1, 2], "same length"),
     ([2, 2, 2], [1, 2, 3], "distinct"), ([1, np.nan, 3], [1, 2, 3], "x")],
)
def test_fit_loglog_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        fit_loglog(x, y)


# ------------------------------------------------------------------------------------------ the objective


def test_huber_matches_hand_values_and_scipy():
    r = np.array([0.0, 5e-4, -2e-3, 1e-2])
    expected = np.array([0.0, 0.5 * 5e-4**2, 1e-3 * (2e-3 - 5e-4), 1e-3 * (1e-2 - 5e-4)])
    np.testing.assert_allclose(huber(r, 1e-3), expected, rtol=1e-12)
    np.testing.assert_allclose(huber(r, 1e-3), scipy_huber(1e-3, r), rtol=1e-12)


def test_objective_is_the_sum_not_the_mean():
    r = np.array([0.0, 5e-4, -2e-3, 1e-2])
    hand_sum = 0.5 * 5e-4**2 + 1e-3 * 1.5e-3 + 1e-3 * 9.5e-3  # = 1.1125e-5
    assert log_huber_objective(r, np.zeros(4), delta=1e-3) == pytest.approx(hand_sum, rel=1e-12)
    # Three copies of the residuals triple the objective (a mean would leave it unchanged).
    assert log_huber_objective(np.tile(r, 3), np.zeros(12), delta=1e-3) == pytest.approx(3 * hand_sum, rel=1e-12)


def test_reported_objective_is_the_summed_huber_at_the_fit_and_doubles_with_duplicated_data():
    n, y = planted_power_law(0)
    s = FitSettings(n_boot=0, method="varpro")
    fit = fit_power_law(n, y, s, progress=False)
    assert fit.objective == pytest.approx(log_huber_objective(np.log(fit.predict(n)), np.log(y), 1e-3), rel=1e-10)
    twice = fit_power_law(np.tile(n, 2), np.tile(y, 2), s, progress=False)
    assert twice.objective == pytest.approx(2 * fit.objective, rel=1e-6)
    for k in TRUE_PL:
        assert twice.params[k] == pytest.approx(fit.params[k], rel=1e-5)


@pytest.mark.parametrize("form", [POWER_LAW, CHINCHILLA])
def test_analytic_gradient_matches_finite_differences(form):
    rng = np.random.default_rng(1)
    log_n, log_d = np.log(np.geomspace(1e6, 1e9, 10)), np.log(np.geomspace(1e9, 1e11, 10))
    log_y = np.log(np.linspace(4.0, 2.5, 10))
    theta = np.array([0.5, 5.0, 0.3]) if form is POWER_LAW else np.array([0.5, 5.0, 6.0, 0.3, 0.35])
    for loss, delta in [("huber", 1e-3), ("squared", 1.0), ("huber", 0.5)]:
        theta_j = theta + rng.normal(0, 0.05, theta.size)
        f, g = objective_and_grad(theta_j, form, log_n, log_d, log_y, loss, delta)
        fd = np.array([
            (objective_and_grad(theta_j + h, form, log_n, log_d, log_y, loss, delta)[0]
             - objective_and_grad(theta_j - h, form, log_n, log_d, log_y, loss, delta)[0]) / 2e-7
            for h in np.eye(theta.size) * 1e-7
        ])
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)
        # and the objective value is the naive sum over points
        naive = sum(scipy_huber(delta, r) if loss == "huber" else 0.5 * r * r
                    for r in log_predict(form, theta_j, log_n, log_d) - log_y)
        assert f == pytest.approx(naive, rel=1e-12)


# ------------------------------------------------------------------------------------- vectorised L-BFGS


def test_batched_lbfgs_matches_scipy_on_random_convex_problems_with_bounds():
    rng = np.random.default_rng(0)
    B, p = 24, 4
    mats = rng.normal(size=(B, p, p))
    H = mats @ mats.transpose(0, 2, 1) + 0.1 * np.eye(p)  # SPD Hessians
    c = rng.normal(size=(B, p))
    lower = np.array([-np.inf, -np.inf, 0.0, 0.0])

    def fun_grad(x, rows):
        diff = x - c[rows]
        hd = np.einsum("bij,bj->bi", H[rows], diff)
        return 0.5 * np.einsum("bi,bi->b", diff, hd) + np.log1p(np.einsum("bi,bi->b", x, x)), hd + 2 * x / (
            1 + np.einsum("bi,bi->b", x, x))[:, None]

    res = batched_lbfgs(fun_grad, rng.normal(size=(B, p)) + 2.0, lower, None, ftol=1e-15, gtol=1e-10)
    assert res["converged"].all()
    assert (res["x"][:, 2:] >= 0).all()
    for b in range(0, B, 4):
        with single_threaded_blas():
            ref = minimize(lambda x, b=b: tuple(v[0] for v in fun_grad(x[None], np.array([b]))), np.zeros(p) + 2.0,
                           jac=True, method="L-BFGS-B", bounds=[(None, None)] * 2 + [(0, None)] * 2,
                           options={"ftol": 1e-15, "gtol": 1e-10})
        assert res["fun"][b] <= ref.fun + 1e-9
        np.testing.assert_allclose(res["x"][b], ref.x, atol=1e-4)


# --------------------------------------------------------------------------------------- power-law fits


def test_default_grid_is_the_spec_grid_and_recovers_clean_law():
    s = FitSettings(n_boot=0)
    assert len(grid_starts(POWER_LAW, s)) == 150  # e (5) × a (6) × α (5): ≥ 100 starts
    assert len(grid_starts(CHINCHILLA, s)) == 4500
    assert s.grid_alpha == (0.0, 0.5, 1.0, 1.5, 2.0) and s.grid_a == (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
    n = np.geomspace(1e5, 1e9, 10)
    fit = fit_power_law(n, power_law(n, **TRUE_PL), s, progress=False)
    assert fit.converged and fit.diagnostics["n_starts"] == 150
    for k, v in TRUE_PL.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-5)
    assert fit.objective < 1e-12


@pytest.mark.parametrize("method", ["lbfgs_grid", "varpro"])
def test_planted_power_law_recovered_inside_95pct_ci(method):
    """Across 5 noise seeds every planted parameter lies inside its 95% percentile-bootstrap interval."""
    s = FitSettings(method=method, n_boot=100, **SMALL_GRID)
    misses = {k: 0 for k in TRUE_PL}
    for seed in range(4):
        n, y = planted_power_law(seed)
        fit = fit_power_law(n, y, s.replace(seed=seed), progress=False)
        assert fit.converged and fit.diagnostics["boot_unidentifiable"] == 0
        for k, v in TRUE_PL.items():
            lo, hi = fit.ci[k]
            misses[k] += not lo <= v <= hi
        assert fit.ci["alpha"][1] - fit.ci["alpha"][0] < 0.1  # informative intervals
        assert fit.params["alpha"] == pytest.approx(TRUE_PL["alpha"], abs=0.03)
    assert misses == {k: 0 for k in TRUE_PL}, misses


def test_varpro_and_multistart_agree_on_clean_data():
    n = np.geomspace(1e5, 1e9, 10)
    y = power_law(n, **TRUE_PL)
    grid = fit_power_law(n, y, FitSettings(n_boot=0, method="lbfgs_grid"), progress=False)
    vp = fit_power_law(n, y, FitSettings(n_boot=0, method="varpro"), progress=False)
    for k, v in TRUE_PL.items():
        assert vp.params[k] == pytest.approx(grid.params[k], rel=1e-6)
        # VarPro alone, before the polish, already lands on the planted law
        assert vp.diagnostics[f"varpro_{k}"] == pytest.approx(v, rel=1e-4)


def test_varpro_and_multistart_agree_on_noisy_data():
    n, y = planted_power_law(3, sigma=0.02)
    grid = fit_power_law(n, y, FitSettings(n_boot=0), progress=False)
    vp = fit_power_law(n, y, FitSettings(n_boot=0, method="varpro"), progress=False)
    assert vp.objective == pytest.approx(grid.objective, rel=1e-6)
    for k in TRUE_PL:
        assert vp.params[k] == pytest.approx(grid.params[k], rel=1e-3)


def test_bootstrap_is_seeded_and_draws_are_corner_ready():
    n, y = planted_power_law(1)
    s = FitSettings(n_boot=60, method="varpro", seed=5)
    a, b = fit_power_law(n, y, s, progress=False), fit_power_law(n, y, s, progress=False)
    np.testing.assert_array_equal(a.draws, b.draws)
    frame = a.draws_frame()
    assert list(frame.columns) == ["E", "A", "alpha"] and len(frame) == 60 and frame.notna().all().all()
    assert (frame["E"] > 0).all() and (frame["A"] > 0).all()
    lo, hi = a.confidence_band([1e6, 1e10])
    plo, phi = a.prediction_interval([1e6, 1e10])
    assert (lo <= a.predict([1e6, 1e10])).all() and (a.predict([1e6, 1e10]) <= hi).all()
    assert (plo <= lo + 1e-12).all() and (phi >= hi - 1e-12).all()  # adding noise only widens


def test_nested_resampling_keeps_groups_together():
    rng = np.random.default_rng(0)
    groups = np.repeat(["s0", "s1", "s2"], [2, 3, 4])
    for _ in range(50):
        idx = resample_indices(rng, 9, groups, resample_within=False)
        # cluster bootstrap: whole groups, so the count of each group's points is a multiple of its size
        counts = pd.Series(groups[idx]).value_counts()
        sizes = pd.Series(groups).value_counts()
        assert all(counts[g] % sizes[g] == 0 for g in counts.index)
        # nested: a concatenation of blocks, each drawn inside one group and as long as that group
        idx = resample_indices(rng, 9, groups)
        pos = 0
        while pos < len(idx):
            g = groups[idx[pos]]
            assert (groups[idx[pos:pos + sizes[g]]] == g).all()
            pos += sizes[g]
        assert pos == len(idx)


def test_grouped_bootstrap_is_wider_for_correlated_replicates():
    """10 seeds × 8 sizes, each seed's curve offset by its own factor: resampling seeds (groups) must give a
    wider band than pretending the 80 points are independent (the design effect of clustered data)."""
    rng = np.random.default_rng(0)
    n = np.tile(np.geomspace(1e5, 1e9, 8), 10)
    seed = np.repeat(np.arange(10), 8)
    y = power_law(n, **TRUE_PL) * np.exp(rng.normal(0, 0.05, 10)[seed] + rng.normal(0, 0.003, n.size))
    s = FitSettings(n_boot=100, method="varpro")
    iid = fit_power_law(n, y, s, progress=False)
    nested = fit_power_law(n, y, s, groups=seed, progress=False)
    width = lambda f: np.diff(f.confidence_band([1e7]), axis=0)[0, 0]
    assert width(nested) > 1.5 * width(iid)


# ------------------------------------------------------------------------------------------ Chinchilla


def test_chinchilla_default_grid_recovers_clean_law():
    n, d, _ = planted_chinchilla(0)
    y = chinchilla(n, d, **TRUE_CH)
    fit = fit_chinchilla(n, d, y, FitSettings(n_boot=0), progress=False)
    assert fit.diagnostics["n_starts"] == 4500 and fit.converged
    for k, v in TRUE_CH.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-4), k
    vp = fit_chinchilla(n, d, y, FitSettings(n_boot=0, method="varpro"), progress=False)
    for k, v in TRUE_CH.items():
        assert vp.params[k] == pytest.approx(v, rel=1e-4), k
        assert vp.diagnostics[f"varpro_{k}"] == pytest.approx(v, rel=1e-2), k


def test_planted_chinchilla_recovered_inside_95pct_ci():
    n, d, y = planted_chinchilla(1)
    fit = fit_chinchilla(n, d, y, FitSettings(n_boot=100, method="varpro", **SMALL_GRID), progress=False)
    for k, v in TRUE_CH.items():
        lo, hi = fit.ci[k]
        assert lo <= v <= hi, (k, lo, v, hi)
    assert fit.predict([1e11], [2e12])[0] == pytest.approx(chinchilla(1e11, 2e12, **TRUE_CH), rel=0.01)


def test_chinchilla_needs_d_to_predict_and_enough_design_points():
    n, d, y = planted_chinchilla(0)
    fit = fit_chinchilla(n, d, y, FitSettings(n_boot=0, **SMALL_GRID), progress=False)
    with pytest.raises(ValueError, match="d"):
        fit.predict([1e9])
    with pytest.raises(ValueError, match="distinct"):
        fit_chinchilla([1e7, 1e8, 1e9], [1e9, 1e9, 1e9], [3.0, 2.8, 2.6], progress=False)
