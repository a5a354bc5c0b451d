"""The V/D study's analysis (lmcal.sft.vd_analysis): confidence bound, per-model table, slope + bootstrap, claims."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from lmcal.core.claims import check_claims
from lmcal.sft import figures as sfigs
from lmcal.sft import vd_analysis as vda
from lmcal.sft.train import optimal_logit_gap


def test_confidence_bound_known_answers():
    assert vda.confidence_bound(0.0, 320, 4) == 1.0  # plain CE: no bound
    assert vda.confidence_bound(0.1, 10**15, 4) == pytest.approx(1.0, abs=1e-12)  # V -> infinity
    assert vda.confidence_bound(1.0, 320, 4) == pytest.approx(0.25)  # uniform target: 1/n
    # by hand: beta 0.1, V 10, n 4 -> (0.9 + 0.01) / (0.9 + 0.04) = 0.91 / 0.94
    assert vda.confidence_bound(0.1, 10, 4) == pytest.approx(0.91 / 0.94)
    # beta 0.2, V 320, n 4 -> (0.8 + 0.000625) / (0.8 + 0.0025)
    assert vda.confidence_bound(0.2, 320, 4) == pytest.approx(0.800625 / 0.8025)
    # monotone: more smoothing or more options lower it, a larger vocabulary raises it
    assert vda.confidence_bound(0.2, 320, 4) < vda.confidence_bound(0.1, 320, 4)
    assert vda.confidence_bound(0.1, 320, 5) < vda.confidence_bound(0.1, 320, 4)
    assert vda.confidence_bound(0.1, 4096, 4) > vda.confidence_bound(0.1, 320, 4)
    with pytest.raises(ValueError, match="label_smoothing"):
        vda.confidence_bound(1.5, 320, 4)
    with pytest.raises(ValueError, match="n_choices"):
        vda.confidence_bound(0.1, 320, 1)


def _rows(cells, seeds=(0, 1), noise=0.0, beta=0.1) -> pd.DataFrame:
    """Cell tables as run_cell writes them: base, SFT β=0 and SFT β per (V, D, seed); benefit given per cell."""
    rng = np.random.default_rng(5)
    rows = []
    for (v, d, benefit) in cells:
        for s in seeds:
            b = benefit + noise * rng.standard_normal()
            common = {"vocab_size": v, "hidden_size": d, "seed": s, "v_over_d": v / d, "n_params_non_embedding": d * 10,
                      "pretrain_loss": 5.0, "gap_mean": 3.0, "n_choices": 4, "conf_mean": 0.4, "conf_max": 0.7}
            rows += [{**common, "kind": "base", "label_smoothing": None, "ece": 0.1, "rms_ce": 0.12, "accuracy": 0.3,
                      "delta_star": None, "conf_bound": 1.0},
                     {**common, "kind": "sft", "label_smoothing": 0.0, "ece": 0.30, "rms_ce": 0.35, "accuracy": 0.4,
                      "delta_star": None, "conf_bound": 1.0},
                     {**common, "kind": "sft", "label_smoothing": beta, "ece": 0.30 - b, "rms_ce": 0.35 - 2 * b,
                      "accuracy": 0.4, "delta_star": optimal_logit_gap(beta, v),
                      "conf_bound": vda.confidence_bound(beta, v, 4), "conf_max": 0.6}]
    return pd.DataFrame(rows)


CELLS = [(320, 64, 0.20), (1024, 32, 0.15), (4096, 64, 0.12), (1024, 16, 0.10), (4096, 16, 0.05)]


def test_vd_table_pairs_models_by_v_d_and_seed():
    table = vda.vd_table(_rows(CELLS))
    assert len(table) == len(CELLS) * 2 and table["v_over_d"].is_monotonic_increasing
    first = table.iloc[0]
    assert (first["vocab_size"], first["hidden_size"]) == (320, 64) and first["v_over_d"] == 5.0
    assert first["ece_reduction"] == pytest.approx(0.20) and first["rms_ce_reduction"] == pytest.approx(0.40)
    assert first["log_v_over_d"] == pytest.approx(math.log(5.0))
    assert first["conf_bound"] == pytest.approx(vda.confidence_bound(0.1, 320, 4))
    assert (first["conf_max_ls"], first["conf_max_ce"], first["ece_base"]) == (0.6, 0.7, 0.1)
    # a seed whose β=0 model is missing has no pair: its β row drops instead of pairing with another seed
    rows = _rows(CELLS)
    rows = rows[~((rows["seed"] == 1) & (rows["label_smoothing"] == 0.0) & (rows["vocab_size"] == 320))]
    assert len(vda.vd_table(rows)) == len(CELLS) * 2 - 1
    with pytest.raises(ValueError, match="seed"):
        vda.vd_table(_rows(CELLS).drop(columns="seed"))


def test_slopes_match_polyfit_on_every_bootstrap_draw():
    rng = np.random.default_rng(0)
    cells = np.repeat(np.arange(6), 3)
    x = np.repeat(np.log([5.0, 10.0, 20.0, 64.0, 128.0, 256.0]), 3)
    y = -0.03 * x + 0.05 * rng.standard_normal(x.size)
    idx = vda.bootstrap_indices(cells, 200, np.random.default_rng(1))
    fast = vda.slopes(x[idx], y[idx])
    for i, row in enumerate(idx):
        if np.ptp(x[row]) == 0:
            assert np.isnan(fast[i])
        else:
            assert fast[i] == pytest.approx(np.polyfit(x[row], y[row], 1)[0], abs=1e-10)
    assert float(vda.slopes(x, y)) == pytest.approx(np.polyfit(x, y, 1)[0])


def test_bootstrap_draws_whole_cells_then_seeds_within_them():
    """Naive reference: draw cells, then rows within each drawn cell, with the same generator calls."""
    cells = np.array(["a", "a", "b", "b", "c", "c"])
    idx = vda.bootstrap_indices(cells, 50, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    members = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    for row in idx:
        expect = []
        for k in rng.integers(0, 3, 3):
            m = members["abc"[k]]
            expect += [m[j] for j in rng.integers(0, 2, 2)]
        assert row.tolist() == expect
        # each drawn pair of rows is from one cell (seeds are resampled inside a cell, never across)
        assert all(cells[row[2 * i]] == cells[row[2 * i + 1]] for i in range(3))


def test_trend_exact_line_has_a_point_interval_and_noise_widens_it():
    exact = vda.vd_table(_rows([(v, d, 0.3 - 0.04 * math.log(v / d)) for v, d, _ in CELLS]))
    t = vda.trend(exact, "ece_reduction", n_boot=300)
    assert t["slope"] == pytest.approx(-0.04) and t["ci"] == pytest.approx([-0.04, -0.04])
    assert t["n_models"] == 10 and t["n_cells"] == 5 and t["n_draws"] <= 300
    noisy = vda.vd_table(_rows([(v, d, 0.3 - 0.04 * math.log(v / d)) for v, d, _ in CELLS], noise=0.03))
    t = vda.trend(noisy, "ece_reduction", n_boot=300)
    assert t["ci"][0] < t["slope"] < t["ci"][1] and t["ci"][1] - t["ci"][0] > 0.005
    one = vda.trend(exact[exact["v_over_d"] == 5.0], "ece_reduction")
    assert one["slope"] is None and one["ci"] is None  # one V/D value: no trend


def test_findings_and_claims_verdicts_and_seed_agreement():
    shrinking = vda.vd_table(_rows(CELLS, noise=0.005))
    f = vda.vd_findings(shrinking, n_boot=300)
    e = f["0.1"]["ece"]
    assert e["slope"] < 0 and e["ci"][1] < 0 and e["verdict"] is True and e["n_reduced"] == 10
    assert set(e["per_seed"]) == {"0", "1"}
    assert f["0.1"]["rms_ce"]["slope"] == pytest.approx(2 * e["slope"], rel=0.2)
    assert f["0.1"]["confidence"]["n_above_bound"] == 0
    claims = {c["id"]: c for c in check_claims(vda.vd_claims(f))}
    c = claims["sft.vd.benefit_slope.b0.1.ece"]
    assert c["verdict"] is True and c["seeds_agree"] == "2/2" and c["n_seeds"] == 2 and c["value"] == e["slope"]
    growing = vda.vd_table(_rows([(v, d, 0.3 - b) for v, d, b in CELLS], noise=0.005))
    g = vda.vd_claims(vda.vd_findings(growing, n_boot=300))[0]
    assert g["value"] > 0 and g["verdict"] is False
    json.dumps(f)  # JSON-ready


def test_mlflow_metrics_name_every_model_and_trend():
    rows = _rows(CELLS[:3], seeds=(0,))
    f = vda.vd_findings(vda.vd_table(rows), n_boot=50)
    m = vda.mlflow_metrics(rows, f)
    assert m["vd.v320_d64_s0.b0.1.conf_bound"] == pytest.approx(vda.confidence_bound(0.1, 320, 4))
    assert m["vd.v4096_d64_s0.b0.1.delta_star"] == pytest.approx(optimal_logit_gap(0.1, 4096))
    assert "vd.v320_d64_s0.base.delta_star" not in m  # infinite at β = 0: not a number to log
    assert m["vd.trend.b0.1.ece.slope"] == f["0.1"]["ece"]["slope"]
    assert {"vd.trend.b0.1.ece.ci_lo", "vd.trend.b0.1.rms_ce.ci_hi"} <= set(m)
    assert all(math.isfinite(v) for v in m.values())


def test_figures_draw_the_bound_and_the_fit():
    rows = _rows(CELLS)
    table = vda.vd_table(rows)
    fig = sfigs.vd_confidence_bound(rows)
    bound_line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "β=0.1: LS bound")
    expect = table.groupby("v_over_d")["conf_bound"].min().sort_index()
    assert list(bound_line.get_ydata()) == pytest.approx(expect.tolist())
    fig = sfigs.vd_benefit_trend(table, vda.vd_findings(table, n_boot=50))
    assert len(fig.axes) == 2 and "slope" in fig.axes[0].get_legend().get_texts()[0].get_text()
    sfigs.vd_confidence_bound(pd.DataFrame(columns=["kind"]))  # empty: a labelled blank panel


def test_summary_vd_section_is_json_ready_and_claims_match_the_findings():
    from lmcal.core import io
    from lmcal.sft import summary as ssum

    sec = ssum.vd_results(_rows(CELLS, noise=0.01))
    assert set(sec["figures"]) == {"vd_effect", "vd_gap", "vd_bound"}
    text = json.dumps(io.jsonable(sec["summary"]), allow_nan=False)
    assert json.loads(text)["findings"]["0.1"]["ece"]["slope"] == sec["findings"]["0.1"]["ece"]["slope"]
    assert len(sec["summary"]["rows"]) == len(CELLS) * 2 * 3 and sec["metrics"]
    off = ssum.vd_results(None)
    assert off["summary"] == {} and off["findings"] == {} and set(off["figures"]) == set(sec["figures"])
