"""Tests of lmcal.scaling: backtests on planted and misspecified laws, fit settings logged as scalars, bad input,
sensitivity tables and figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from lmcal.scaling import (
    FitSettings,
    backtest,
    fit_power_law,
    sensitivity_table,
    summarise_backtest,
)
from planted_laws import (
    SMALL_GRID,
    TRUE_PL,
    planted_power_law,
    power_law,
)

# -------------------------------------------------------------------------------------------- backtest


def test_backtest_default_ks_roll_forward_from_params_plus_one():
    n, y = planted_power_law(0, sigma=0.005, reps=1)
    df = backtest(n[:7], y[:7], settings=FitSettings(n_boot=10, method="varpro"), progress=False)
    assert sorted(df["k"].unique()) == [4, 5, 6]


def test_backtest_on_planted_law_predicts_held_out_sizes():
    n, y = planted_power_law(0, sigma=0.005)
    df = backtest(n, y, ks=[4, 7, 10], settings=FitSettings(n_boot=60, method="varpro"), metric="ce",
                  progress=False)
    sizes = np.unique(n)
    for k, g in df.groupby("k"):
        assert len(g) == int((n > sizes[k - 1]).sum())  # every larger point is predicted once
        assert (g["decades"] > 0).all()
    np.testing.assert_allclose(df["decades"], np.log10(df["n"] / df["n_max_fit"]))
    true_rel = df["predicted"] / power_law(df["n"], **TRUE_PL) - 1
    assert true_rel.abs().max() < 0.1  # even 3 decades out from 4 sizes
    assert true_rel[df["k"] == 10].abs().max() < 0.01  # half a decade out from 10 sizes
    assert (df["pi_lo"] <= df["predicted"]).all() and (df["predicted"] <= df["pi_hi"]).all()
    summary = summarise_backtest(df)
    assert set(summary.columns) >= {"metric", "k", "coverage", "mean_abs_err", "mean_abs_rel_err"}
    assert summary["coverage"].between(0, 1).all()
    assert df["covered"].mean() >= 0.8  # 95% intervals on a correctly specified law cover most points
    err = summary.set_index("k")["mean_abs_err"]
    assert err[10] < err[4]  # more models fitted, closer predictions


def test_backtest_flags_a_misspecified_law_as_poorly_covered():
    """Losses that bend away from the power law at large N: extrapolations miss and coverage falls."""
    n = np.repeat(np.geomspace(1e5, 1e9, 10), 2)
    rng = np.random.default_rng(0)
    y = power_law(n, **TRUE_PL) * np.exp(0.15 * np.clip(np.log10(n) - 7, 0, None) ** 2 + rng.normal(0, 0.005, n.size))
    df = backtest(n, y, ks=[5], settings=FitSettings(n_boot=100, method="varpro"), progress=False)
    assert df["covered"].mean() < 0.5
    assert (df["rel_err"] < 0).all()  # the fitted law under-predicts the bent-up losses


def test_backtest_rejects_bad_arguments():
    n, y = planted_power_law(0)
    with pytest.raises(ValueError, match="n_boot"):
        backtest(n, y, settings=FitSettings(n_boot=0))
    with pytest.raises(ValueError, match="ks"):
        backtest(n, y, ks=[12], settings=FitSettings(n_boot=10))


# ------------------------------------------------------------------------------------ settings and input


def test_fit_settings_as_params_logs_every_choice_as_a_scalar():
    s = FitSettings()
    params = s.as_params()
    import dataclasses

    for f in dataclasses.fields(FitSettings):
        assert f"fit.{f.name}" in params
    assert all(isinstance(v, (str, int, float, bool)) for v in params.values())
    assert params["fit.delta"] == 1e-3 and params["fit.loss"] == "huber" and params["fit.optimizer"] == "L-BFGS-B"
    assert params["fit.grid_alpha"] == "0,0.5,1,1.5,2" and params["fit.n_starts"] == "None"
    assert "sum" in params["fit.objective"]
    assert FitSettings.from_dict({"delta": 0.01, "grid_e": [0, 1], "exponent_bounds": [0, None]}) == FitSettings(
        delta=0.01, grid_e=(0.0, 1.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"loss": "l1"}, "loss"), ({"method": "adam"}, "method"), ({"delta": 0.0}, "delta"), ({"ci": 1.0}, "ci"),
     ({"n_boot": -1}, "n_boot"), ({"grid_alpha": ()}, "grid_alpha"), ({"optimizer": "sgd"}, "optimizer"),
     ({"exponent_bounds": (1.0, 0.5)}, "exponent_bounds")],
)
def test_fit_settings_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FitSettings(**kwargs)


def test_fit_settings_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown"):
        FitSettings.from_dict({"deltaa": 1e-3})


@pytest.mark.parametrize(
    "n, loss, match",
    [([1e5, 1e6, 1e7], [3.0, -2.5, 2.2], "loss"), ([1e5, 0, 1e7], [3.0, 2.5, 2.2], "n"),
     ([1e5, 1e6], [3.0, 2.5], "3 distinct"), ([1e5, 1e6, 1e7], [3.0, 2.5], "same length")],
)
def test_fit_power_law_rejects_bad_input(n, loss, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(n, loss, FitSettings(n_boot=0), progress=False)


def test_fit_power_law_rejects_groups_of_wrong_shape():
    n, y = planted_power_law(0)
    with pytest.raises(ValueError, match="groups"):
        fit_power_law(n, y, FitSettings(n_boot=5), groups=[0, 1], progress=False)


def test_sensitivity_table_refits_one_choice_at_a_time():
    n, y = planted_power_law(0)
    tab = sensitivity_table(n, y, settings=FitSettings(**SMALL_GRID),
                            variations={"delta": [1e-3, 1e-2], "loss": ["huber", "squared"]})
    assert len(tab) == 4 and tab["is_base"].sum() == 2
    assert tab["alpha"].between(0.3, 0.38).all()


def test_as_dict_and_metrics_are_flat_and_complete():
    n, y = planted_power_law(0)
    fit = fit_power_law(n, y, FitSettings(n_boot=30, method="varpro"), progress=False)
    d = fit.as_dict()
    assert set(d["params"]) == {"E", "A", "alpha"} and set(d["ci"]) == {"E", "A", "alpha"}
    assert d["settings"]["method"] == "varpro" and d["n_points"] == len(n)
    import json

    json.dumps(d)  # plain Python types only
    m = fit.as_metrics("f1.")
    assert {"f1.E", "f1.alpha_lo", "f1.alpha_hi", "f1.objective", "f1.converged"} <= set(m)


# --------------------------------------------------------------------------------------------- figures


def test_figures_render(tmp_path):
    from lmcal.core.io import save_figure
    from lmcal.scaling.figures import plot_backtest, plot_corner, plot_loss_scaling

    n, y = planted_power_law(0)
    held = n > 1e8
    fit = fit_power_law(n[~held], y[~held], FitSettings(n_boot=30, method="varpro", **SMALL_GRID), progress=False)
    bt = backtest(n, y, ks=[6, 9], settings=FitSettings(n_boot=10, method="varpro", **SMALL_GRID), progress=False)
    figs = {"f1": plot_loss_scaling(n, y, fit, heldout=held), "f7": plot_backtest(bt), "f8": plot_corner(fit)}
    assert len(figs["f8"].axes) == 9 and len(figs["f7"].axes) == 2
    for name, fig in figs.items():
        save_figure(fig, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="params"):
        plot_corner(fit, params=("E", "B"))
