"""Emergence study: re-scoring metrics, Clopper–Pearson, emergence statistics, Mirage toy model, forecasts and
the report on a planted ladder (model-facing pieces: test_emergence_models.py)."""

import numpy as np
import pandas as pd
import pytest
from lmcal.emergence import analysis as an
from lmcal.emergence import metrics as mt
from lmcal.emergence.forecast import backtest, fit_sigmoid_floor, sigmoid_floor, two_step_forecast
from lmcal.scaling.settings import FitSettings

# ---------------------------------------------------------------- hand-computed metric cases


def test_exact_match_and_edit_distance():
    assert mt.exact_match("125", "125") == 1.0 and mt.exact_match(" 125 ", "125") == 1.0
    assert mt.exact_match("124", "125") == 0.0
    assert mt.token_edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert mt.token_edit_distance([1, 2, 4], [1, 2, 3]) == 1  # substitution
    assert mt.token_edit_distance([1, 3], [1, 2, 3]) == 1  # deletion
    assert mt.token_edit_distance([], [1, 2, 3]) == 3
    assert mt.token_edit_distance([3, 2, 1], [1, 2, 3]) == 2  # kitten/sitting-style: two substitutions


def test_per_digit_accuracy():
    assert mt.per_digit_accuracy("125", "125") == 1.0
    assert mt.per_digit_accuracy("124", "125") == pytest.approx(2 / 3)
    assert mt.per_digit_accuracy("25", "125") == pytest.approx(2 / 3)  # right-aligned: units and tens right
    assert mt.per_digit_accuracy("1125", "125") == pytest.approx(3 / 4)  # an extra digit is an error
    assert mt.per_digit_accuracy("", "125") == 0.0
    assert mt.per_digit_accuracy("-12", "12") == pytest.approx(2 / 3)


def test_brier_mc_grade_and_choice_normalisation():
    p = mt.choice_probabilities(np.log([0.2, 0.1, 0.1]))  # renormalised: 0.5, 0.25, 0.25
    np.testing.assert_allclose(p, [0.5, 0.25, 0.25])
    assert mt.brier(p, 0) == pytest.approx(0.25 + 0.0625 + 0.0625)
    assert mt.brier(p, 1) == pytest.approx(0.25 + 0.5625 + 0.0625)
    assert mt.brier([1, 0, 0], 0) == 0.0 and mt.brier([0, 1, 0], 0) == 2.0
    assert mt.mc_grade(p, 0) == 1.0 and mt.mc_grade(p, 2) == 0.0
    assert mt.mc_grade([0.4, 0.4, 0.2], 1) == 0.0  # ties go to the first index
    with pytest.raises(ValueError, match="gold"):
        mt.brier(p, 3)


def test_clopper_pearson_known_values():
    lo, hi = mt.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.3085, abs=1e-4)  # = 1 − 0.025^(1/10)
    lo, hi = mt.clopper_pearson(10, 10)
    assert lo == pytest.approx(0.6915, abs=1e-4) and hi == 1.0
    lo, hi = mt.clopper_pearson(5, 10)
    assert (lo, hi) == (pytest.approx(0.1871, abs=1e-4), pytest.approx(0.8129, abs=1e-4))
    lo, hi = mt.clopper_pearson([0, 3], [100, 1000], ci=0.9)
    assert hi[0] == pytest.approx(1 - 0.05 ** (1 / 100))
    with pytest.raises(ValueError):
        mt.clopper_pearson(3, 2)


def _outputs_row(**kw):
    row = dict(
        item_id="x",
        format="direct",
        answer="125",
        target="125",
        generation="124",
        gen_ids=[5, 6, 8],
        target_ids=[5, 6, 9],
        target_logprobs=[np.log(0.5)] * 3,
        stop_logprob=np.log(0.8),
        choice_logprobs=[np.log(0.2), np.log(0.1), np.log(0.1)],
        gold=0,
        component="c",
        size="s",
    )
    row.update(kw)
    return row


def test_score_outputs_hand_case():
    out = pd.DataFrame(
        [
            _outputs_row(),
            _outputs_row(
                item_id="y",
                format="scratchpad",
                answer="125",
                generation="7+8=15,5+6+1=12;125",
                choice_logprobs=[],
                gold=-1,
            ),
        ]
    )
    s = mt.score_outputs(out)
    a, b = s.iloc[0], s.iloc[1]
    assert a.exact_match == 0.0 and b.exact_match == 1.0  # scratchpad answer is read after ';'
    assert a.edit_distance == 1 and a.norm_edit_distance == pytest.approx(1 / 3)
    assert a.per_digit_acc == pytest.approx(2 / 3)
    assert a.target_logprob == pytest.approx(3 * np.log(0.5)) and a.per_token_ce == pytest.approx(np.log(2))
    assert a.p_exact == pytest.approx(0.125 * 0.8)
    assert a.mc_grade == 1.0 and a.p_correct == pytest.approx(0.5) and a.brier == pytest.approx(0.375)
    assert a.logp_vocab_correct == pytest.approx(np.log(0.2))
    assert np.isnan(b.mc_grade) and np.isnan(b.brier)
    assert "gen_ids" not in s.columns and s["size"].tolist() == ["s", "s"]
    agg = mt.aggregate_scores(s, by=["size"])
    assert agg["exact_match"].iloc[0] == 0.5 and agg["n_items"].iloc[0] == 2
    lo, hi = mt.clopper_pearson(1, 2)
    assert agg["exact_match_lo"].iloc[0] == pytest.approx(lo) and agg["exact_match_hi"].iloc[
        0
    ] == pytest.approx(hi)
    assert agg["mc_grade"].iloc[0] == 1.0  # only the MC item counts


# ---------------------------------------------------------------- emergence statistics


def test_emergence_score_step_vs_smooth():
    n = np.geomspace(1e3, 1e6, 10)
    smooth = np.linspace(0, 1, 10)
    step = np.r_[np.zeros(6), np.ones(4)] + np.random.default_rng(0).normal(0, 0.01, 10)
    s_smooth, s_step = an.emergence_score(n, smooth), an.emergence_score(n, step)
    # smooth line: range 1 / median diff 1/9 = 9; step: range ~1 over diffs ~0.01
    assert s_smooth == pytest.approx(9.0)
    assert s_step > 10 * s_smooth
    assert an.emergence_score(n, smooth[::-1]) == pytest.approx(-9.0)  # decreasing curve: negative
    assert an.emergence_score(n, np.ones(10)) == 0.0
    assert an.emergence_score(n[::-1], smooth[::-1]) == pytest.approx(9.0)  # points are sorted by x first


def test_mirage_toy_gives_sharp_em_and_smooth_edit_distance():
    n = np.geomspace(1e6, 1e12, 25)
    toy = an.mirage_toy(n, c=1e8, alpha=-0.4, target_len=5)
    em, ed = toy["exact_match"], toy["edit_distance"]
    assert np.all(np.diff(em) > 0) and np.all(np.diff(ed) < 0)  # both monotone improvements
    # smooth: by the middle of the log-size range edit distance has made most of its progress, EM little
    assert an.early_share(n, ed) > 0.6 and an.early_share(n, em) < 0.2
    # edit distance is a power law in N far from saturation: ln(ED) linear in ln N with slope alpha
    slope = np.polyfit(np.log(n[-8:]), np.log(ed[-8:]), 1)[0]
    assert slope == pytest.approx(-0.4, abs=0.05)
    # longer targets: EM later and sharper (larger max slope on log N); ED exactly proportional to L
    longer = an.mirage_toy(n, c=1e8, alpha=-0.4, target_len=10)
    assert an.early_share(n, longer["exact_match"]) < an.early_share(n, em) / 3
    assert an.max_log_slope(n, longer["exact_match"]) > an.max_log_slope(n, em)
    np.testing.assert_allclose(longer["edit_distance"], 2 * ed)
    # for long targets the BIG-bench emergence score also ranks EM above edit distance
    assert an.emergence_score(n, longer["exact_match"]) > 1.5 * an.emergence_score(
        n, -longer["edit_distance"]
    )
    with pytest.raises(ValueError, match="alpha"):
        an.mirage_toy(n, c=1e8, alpha=0.4, target_len=5)


def test_early_share():
    n = np.geomspace(1e2, 1e6, 5)  # midpoint 1e4 is the third size
    assert an.early_share(n, [0, 1, 2, 3, 4]) == pytest.approx(0.5)
    assert an.early_share(n, [0, 0, 0, 0, 1]) == 0.0
    assert an.early_share(n, [4, 1, 0.5, 0.2, 0]) == pytest.approx(0.875)  # decreasing curves too
    assert np.isnan(an.early_share(n, [1, 2, 3, 2, 1]))
    noisy = [0.5, 0.0, 0.2, 0.9, 0.8]  # first point above the start of the rise, last below the peak
    assert an.early_share(n, noisy) < 0 and 0 <= an.early_share(n, noisy, monotone=True) <= 1


def test_pass_until_law_recovers_planted_exponent():
    n = np.geomspace(1e4, 1e7, 8)
    pu = np.exp(-30.0 * n**-0.3)  # log(−log PU) = ln 30 − 0.3 ln N
    fit = an.pass_until_law(np.r_[n, 1e3], np.r_[pu, 0.0])  # a PU = 0 point is dropped
    assert fit["n_dropped"] == 1
    assert fit["pooled"]["slope"] == pytest.approx(-0.3) and fit["pooled"]["intercept"] == pytest.approx(
        np.log(30)
    )
    assert abs(fit["pooled"]["quad"]) < 1e-8
    items = np.repeat([0, 1], 8)
    per = an.pass_until_law(np.r_[n, n], np.r_[pu, np.exp(-10.0 * n**-0.5)], item_ids=items)
    assert per["per_item"]["slope"] == pytest.approx(-0.4) and per["per_item"]["n_items"] == 2


def test_hinge_recovers_planted_threshold():
    rng = np.random.default_rng(0)
    loss = rng.uniform(0.4, 1.2, 80)
    y = an.hinge_predict(loss, 0.8, 0.02, 1.5) + rng.normal(0, 0.01, 80)
    h = an.fit_hinge(loss, y, n_boot=200, seed=0)
    assert h["eta"] == pytest.approx(0.8, abs=0.02) and h["eta_lo"] <= 0.8 <= h["eta_hi"]
    assert h["slope"] == pytest.approx(1.5, rel=0.1) and h["sse"] < h["sse_line"] and not h["eta_at_boundary"]


def test_isotonic_known_answer_and_u_shape():
    np.testing.assert_allclose(an.isotonic([1, 3, 2, 4]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(an.isotonic([3, 1, 2], increasing=False), [3, 1.5, 1.5])
    n = np.geomspace(1e3, 1e6, 9)
    x = np.log(n)
    u = 0.05 * (x - x.mean()) ** 2 + np.random.default_rng(1).normal(0, 0.005, 9)
    res = an.u_shape_test(n, u)
    assert res["u_shaped"] and res["shape"] == "U" and res["vertex_inside"]
    mono = 1 / (1 + np.exp(-(x - x.mean())))
    assert not an.u_shape_test(n, mono)["u_shaped"]


def test_scratchpad_crossover():
    n = np.geomspace(1e3, 1e6, 4)
    # direct: 0.2 everywhere; scratchpad: 0, 0.1, 0.4, 0.8 → crosses between sizes 2 and 3
    direct = [np.r_[np.ones(20), np.zeros(80)] for _ in n]
    scratch = [np.r_[np.ones(k), np.zeros(100 - k)] for k in (0, 10, 40, 80)]
    res = an.scratchpad_crossover(n, direct, scratch, n_boot=200, seed=0)
    ln = np.log(n)
    expected = np.exp(ln[1] + (ln[2] - ln[1]) * 0.1 / 0.3)
    assert res["crossover_n"] == pytest.approx(expected)
    assert res["crossover_lo"] < expected < res["crossover_hi"] and res["p_cross"] > 0.9
    never = an.scratchpad_crossover(n, scratch, direct, n_boot=50)
    assert np.isnan(never["crossover_n"])
    # the last upward crossing counts: ties and a dip at small sizes do not make an early crossover
    assert an.crossing_point(np.log(n), [0.0, 0.1, -0.1, 0.3]) == pytest.approx(
        np.log(n)[2] + 0.25 * np.diff(np.log(n))[0]
    )
    assert np.isnan(an.crossing_point(np.log(n), [0.1, 0.2, 0.1, 0.3]))  # ahead everywhere: no crossover


# ---------------------------------------------------------------- two-step forecast


def _planted_ladder(seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(2e3, 5e5, 8)
    rows, curve = [], []
    for s in sizes:
        for sd in range(2):
            loss = (0.3 + 40 * s**-0.45) * np.exp(rng.normal(0, 0.01))
            metric = sigmoid_floor(loss, 0.6, 0.08, 0.25)
            rows.append(dict(n=s, seed=sd, loss=loss, metric=metric))
            for frac in (1.6, 1.25):  # earlier checkpoints: higher loss, same loss → metric link
                curve.append(
                    dict(n=s, seed=sd, loss=loss * frac, metric=sigmoid_floor(loss * frac, 0.6, 0.08, 0.25))
                )
    final = pd.DataFrame(rows)
    return final, pd.concat([final, pd.DataFrame(curve)], ignore_index=True)


def test_sigmoid_floor_fit_recovers_planted():
    loss = np.linspace(0.2, 1.5, 30)
    fit = fit_sigmoid_floor(loss, sigmoid_floor(loss, 0.7, 0.1, 0.25), chance=0.25)
    assert fit["l0"] == pytest.approx(0.7, abs=1e-4) and fit["width"] == pytest.approx(0.1, rel=1e-3)


def test_two_step_forecast_predicts_held_out_sizes():
    final, curve = _planted_ladder()
    settings = FitSettings(method="varpro", n_boot=30, seed=0)
    sizes = np.sort(final["n"].unique())
    res = two_step_forecast(final, curve, sizes[:6], chance=0.25, settings=settings)
    held = res["table"][res["table"]["held_out"]]
    assert len(held) == 2
    assert held["abs_error"].max() < 0.05  # the planted law extrapolates
    bt = backtest(final, curve, 0.25, settings.replace(n_boot=0), min_k=4)
    assert set(bt["k"]) == {4, 5, 6, 7} and (bt["decades"] > 0).all()
    assert bt.groupby("k")["abs_error"].mean().iloc[-1] < 0.05
    with pytest.raises(ValueError, match="fit_sizes"):
        two_step_forecast(final, curve, sizes[:2], chance=0.25, settings=settings)


# ---------------------------------------------------------------- report on a planted Mirage ladder


def _planted_outputs(seed=0):
    """Stored outputs of a fake ladder whose per-token accuracy follows the Mirage toy model.

    Each target token is right with probability p(N, step) = exp(−(N_eff/c)^α), N_eff growing with the step;
    wrong tokens are substituted, so EM ≈ p^L and edit distance ≈ L(1 − p) hold by construction.
    """
    rng = np.random.default_rng(seed)
    sizes = {f"s{i}": int(n) for i, n in enumerate(np.geomspace(2e3, 6e5, 8))}
    rows, pu_rows = [], []
    for name, n in sizes.items():
        for sd in (0, 1) if n < 1e4 else (0,):
            for step, frac in ((100, 0.3), (200, 0.6), (400, 1.0)):
                ce_tok = (n * frac / 2e4) ** -0.6
                p = np.exp(-ce_tok)
                for comp, L in (("add1-direct", 2), ("add2-direct", 3), ("add2-scratchpad", 8)):
                    for i in range(40):
                        target = list(rng.integers(5, 15, L))
                        ok = rng.random(L) < p
                        gen = [t if o else t + 1 for t, o in zip(target, ok)]
                        ans = "".join(str(t - 5) for t in target)
                        text = "".join(str(t - 5) for t in gen)
                        fmt = comp.split("-")[1]
                        lp_choice = [np.log(p) * L, np.log(1 - p + 1e-9) + np.log(p) * (L - 1), -8.0, -9.0]
                        rows.append(
                            dict(
                                item_id=f"{comp}/{i}",
                                component=comp,
                                task="arithmetic",
                                op="add",
                                n_digits=int(comp[3]),
                                format=fmt,
                                answer=ans,
                                target=ans,
                                generation=(f"x;{text}" if fmt == "scratchpad" else text),
                                gen_ids=gen,
                                target_ids=target,
                                target_logprobs=[np.log(p)] * L,
                                stop_logprob=-0.01,
                                choice_logprobs=lp_choice if fmt == "direct" else [],
                                gold=0 if fmt == "direct" else -1,
                                family="ladder",
                                size=name,
                                seed=sd,
                                step=step,
                                final=step == 400,
                                n_params=n,
                                heldout_ce=0.4 + ce_tok / 3,
                            )
                        )
            pu_rows.append(
                dict(
                    item_id="add2-direct/0",
                    n_samples=512,
                    n_hits=int(rng.binomial(512, p**3)),
                    p_exact=p**3,
                    component="add2-direct",
                    task="arithmetic",
                    op="add",
                    n_digits=2,
                    format="direct",
                    family="ladder",
                    size=name,
                    seed=0,
                    step=400,
                    final=True,
                    n_params=n,
                    heldout_ce=0.4 + ce_tok / 3,
                )
            )
    return pd.DataFrame(rows), pd.DataFrame(pu_rows)


def test_report_on_planted_ladder(tmp_path):
    from lmcal.core import io
    from lmcal.emergence.figures import make_figures
    from lmcal.emergence.report import analyze, headline_metrics, summarize
    from lmcal.emergence.study import rescore

    outputs, samples = _planted_outputs()
    res = rescore([outputs], [samples])
    curves = res["curves"]
    assert set(curves["step"]) == {100, 200, 400} and curves["n_items"].eq(40).all()
    cfg = dict(
        fit=dict(method="varpro", n_boot=10),
        n_holdout=2,
        headline=["add2-direct"],
        n_boot=20,
        backtest_boot=0,
        forecast_metrics=["exact_match", "mc_grade"],
        n_choices=4,
    )
    rep = analyze(curves, res["scores"], res["pass_until"], cfg)
    r = rep["results"]
    assert r["n_sizes"] == 8 and r["n_rungs"] == 10 and r["n_points_with_checkpoints"] == 30
    # the planted law: EM of the 8-token scratchpad target takes off late, its edit distance does not
    sv = r["sharp_vs_smooth"]["add2-scratchpad"]
    assert sv["em_jumps_soft_smooth"] and sv["em_early_share"] < sv["edit_distance_early_share"]
    assert r["mirage"]["add2-direct"]["em_rmse"] < 0.1  # p^L from the fitted per-token CE matches EM
    fc = r["forecast"]["add2-direct/exact_match"]
    assert len(fc["heldout_abs_error"]) == 2 and max(fc["heldout_abs_error"]) < 0.15
    assert "add2-direct" in r["pass_until"] and r["pass_until"]["add2-direct"]["pooled"]["slope"] < 0
    flat = headline_metrics(r)
    assert flat["forecast.add2-direct.exact_match.heldout_mae"] == pytest.approx(
        np.mean(fc["heldout_abs_error"])
    )
    summary = summarize(rep, curves)
    io.write_json(summary, tmp_path / "summary.json")  # JSON-safe (no NaN/inf objects)
    assert "add2-scratchpad" in summary["em_jumps_while_soft_metrics_smooth"]
    assert summary["fit_settings"]["method"] == "varpro"
    figs = make_figures(rep, curves, res["pass_until"])
    assert {
        "F1_loss_scaling.png",
        "F2_mirage_panel.png",
        "F3_axis_artefact.png",
        "F4_pass_until.png",
        "F5_loss_threshold.png",
        "F6_two_step.png",
        "F7_backtest.png",
        "F11_u_shape.png",
    } <= set(figs)
    for name, fig in figs.items():
        io.save_figure(fig, tmp_path / name)
    assert (tmp_path / "F2_mirage_panel.png").stat().st_size > 10_000
