"""SFT claim records (lmcal.sft.claims): paired item-bootstrap ECE effects and the two paper findings."""

import numpy as np
import pandas as pd
import pytest
from lmcal.core.claims import check_claims
from lmcal.sft.claims import paired_ece_draws, sft_claims


def _items(conf: float, n: int = 100, acc: float = 0.6) -> pd.DataFrame:
    return pd.DataFrame({"item_id": [f"q{i}" for i in range(n)], "conf": conf,
                         "correct": np.arange(n) < int(acc * n)})


def test_paired_ece_known_answer():
    # a: conf 0.9, all wrong -> ECE 0.9 on every resample; b: conf 0.5, half right -> ECE 0, >= 0 resampled
    a = _items(0.9, acc=0.0)
    b = _items(0.5, acc=0.5).sample(frac=1.0, random_state=1)  # order must not matter: joined on item_id
    point, draws = paired_ece_draws(a, b, 10, "width", n_boot=200)
    assert point == pytest.approx(0.9) and len(draws) == 200
    assert np.all(draws <= 0.9 + 1e-12) and draws.min() < 0.9
    with pytest.raises(ValueError, match="share no item_id"):
        paired_ece_draws(a, b.assign(item_id="other"), 10, "width")


RUNS = [dict(name="sft-ce", base="base", kind="main", label_smoothing=0.0, lr=1e-4, seed=0, evalsets=["ev"]),
        dict(name="sft-ls", base="base", kind="main", label_smoothing=0.1, lr=1e-4, seed=0, evalsets=["ev"])]
ITEMS = {("base", "ev"): _items(0.6), ("sft-ce", "ev"): _items(0.9), ("sft-ls", "ev"): _items(0.7)}


def test_findings_without_vd_study():
    c = {r["id"]: r for r in check_claims(sft_claims(RUNS, ITEMS, None, n_bins=10, binning="width", n_boot=300))}
    f1 = c["sft.finding1.sft_raises_ece"]  # ECE 0 -> 0.3 (accuracy 0.6 at conf 0.6, then 0.9)
    assert f1["value"] == pytest.approx(0.3) and f1["ci"][0] > 0 and f1["verdict"] is True
    ls = c["sft.ls_effect.sft-ls.ev"]  # ECE 0.3 -> 0.1
    assert ls["value"] == pytest.approx(0.2) and ls["ci"][0] > 0 and ls["verdict"] is True
    f2 = c["sft.finding2.ls_restores_except_large_vd"]
    assert f2["verdict"] is None and f2["value"] is None and "1 of 1" in f2["claim"]


def test_finding2_reads_the_vd_trend():
    v_over_d = np.array([8.0, 32.0, 64.0, 256.0])
    vd = pd.DataFrame({"vocab_size": [512, 2048, 1024, 4096], "hidden_size": [64, 64, 16, 16], "v_over_d": v_over_d,
                       "log_v_over_d": np.log(v_over_d), "label_smoothing": 0.1,
                       "ece_reduction": [0.05, 0.03, 0.01, -0.02]})
    f2 = sft_claims(RUNS, ITEMS, vd, n_bins=10, binning="width", n_boot=100)[-1]
    assert f2["value"] == pytest.approx(np.polyfit(np.log(v_over_d), vd["ece_reduction"], 1)[0])
    assert f2["ci"][1] < 0 and f2["verdict"] is True
    f2 = sft_claims(RUNS, ITEMS, vd.assign(ece_reduction=[0.01, 0.03, 0.02, 0.05]), n_bins=10, binning="width",
                    n_boot=100)[-1]
    assert f2["value"] > 0 and f2["verdict"] is False
    # with the V/D findings given, finding 2 quotes their slope and interval unchanged
    given = {"0.1": {"ece": {"slope": -0.5, "ci": [-0.7, -0.2]}}}
    f2 = sft_claims(RUNS, ITEMS, vd, n_bins=10, binning="width", n_boot=100, vd_findings=given)[-1]
    assert f2["value"] == -0.5 and f2["ci"] == [-0.7, -0.2] and f2["verdict"] is True
