"""Emergence verdicts over seeds (lmcal.emergence.verdicts) and the claim record shape (lmcal.core.claims)."""

import json

import numpy as np
import pandas as pd
import pytest
from lmcal.core.claims import KEYS, check_claims, claim
from lmcal.emergence import verdicts
from lmcal.emergence.report import emergence_table, seed_means

SIZES = [1000, 2000, 4000, 8000, 16000, 32000]


def _points(threshold_index: dict[int, int]) -> pd.DataFrame:
    """Final ladder rows: EM steps from 0 to 1 at SIZES[threshold_index[seed]]; edit distance and log-prob
    improve linearly in ln N (early share 0.5 = smooth)."""
    rows = []
    for seed, k in threshold_index.items():
        for i, n in enumerate(SIZES):
            frac = i / (len(SIZES) - 1)
            rows.append(dict(component="c", size=f"s{i}", seed=seed, n_params=n,
                             exact_match=float(i >= k), norm_edit_distance=1 - frac,
                             target_logprob=-5 + 4 * frac + 0.01 * seed))
    return pd.DataFrame(rows)


def _table(p: pd.DataFrame) -> pd.DataFrame:
    return emergence_table(seed_means(p), metrics=["exact_match", "norm_edit_distance", "target_logprob"])


def _claims(points: pd.DataFrame) -> dict[str, dict]:
    pooled = verdicts.sharp_vs_smooth(_table(points))
    seeds = verdicts.per_seed(points, _table)
    return {c["id"]: c for c in verdicts.curve_claims(points, pooled, seeds)}


def test_verdicts_count_agreeing_seeds():
    # seeds 0 and 1 jump at 16k (early share 0 < 0.5 x 0.5); seed 2 at 8k, whose early share (at the geometric
    # middle, halfway between 4k and 8k) is 0.5: not a jump. Pooled EM [0, 0, 0, 1/3, 1, 1]: early share 1/6.
    points = _points({0: 4, 1: 4, 2: 3})
    c = _claims(points)
    jump, smooth, thr = c["emergence.jump.c"], c["emergence.smooth.c"], c["emergence.threshold.c"]
    assert jump["n_seeds"] == 3 and jump["verdict"] is True and jump["seeds_agree"] == "2/3"
    assert jump["value"] == pytest.approx(1 / 6) and jump["ci"] == pytest.approx([0.0, 0.5])
    assert smooth["verdict"] is True and smooth["seeds_agree"] == "3/3"
    assert smooth["value"] == pytest.approx(0.5, abs=1e-9)
    # seed-mean EM reaches 0.5 at 16k; seed 2's own threshold is 8k
    assert thr["value"] == 16000 and thr["ci"] == [8000, 16000] and thr["seeds_agree"] == "2/3"
    check_claims(list(c.values()))
    json.dumps(list(c.values()), allow_nan=False)


def test_incomplete_seeds_are_not_counted():
    points = _points({0: 4, 1: 4})
    extra = _points({2: 2}).iloc[:2]  # seed 2 trained at the two smallest sizes only
    c = _claims(pd.concat([points, extra], ignore_index=True))
    assert verdicts.complete_seeds(pd.concat([points, extra])) == [0, 1]
    assert c["emergence.jump.c"]["n_seeds"] == 2 and c["emergence.jump.c"]["seeds_agree"] == "2/2"


def test_forecast_claims_cover_per_seed():
    points = _points({0: 4, 1: 4, 2: 4})
    fc = pd.DataFrame(dict(component="c", metric="exact_match", n=SIZES, held_out=[False] * 4 + [True] * 2,
                           predicted=[0, 0, 0, 0, 0.9, 1.0], pred_lo=[0] * 4 + [0.8, 0.95],
                           pred_hi=[0] * 4 + [1.0, 1.0], covered=[True] * 6,
                           abs_error=[0, 0, 0, 0, 0.1, 0.0]))
    (rec,) = verdicts.forecast_claims(fc, points)
    assert rec["verdict"] is True and rec["seeds_agree"] == "3/3"
    assert rec["value"] == pytest.approx(0.05) and rec["ci"] == pytest.approx([0.05, 0.05])
    points.loc[(points["seed"] == 1) & (points["n_params"] == 16000), "exact_match"] = 0.5  # below pred_lo
    (rec,) = verdicts.forecast_claims(fc, points)
    assert rec["seeds_agree"] == "2/3" and rec["ci"] == pytest.approx([0.05, 0.2])


def test_seed_table_gives_mean_and_spread():
    t = verdicts.seed_table(_points({0: 4, 1: 4, 2: 2}))["c"]
    assert [r["n_params"] for r in t] == SIZES and all(r["n_seeds"] == 3 for r in t)
    assert t[2]["exact_match"] == pytest.approx([1 / 3, 0.0, 1.0])


def test_claim_record_shape_and_errors():
    rec = claim("x.y", "text", np.float64(0.5), ci=(0.1, 0.9), interval="95% bootstrap", rule="r",
                verdict=True, seed_verdicts=[True, False, True])
    assert list(rec) == list(KEYS) and rec["seeds_agree"] == "2/3" and rec["ci"] == [0.1, 0.9]
    assert claim("a", "t", float("nan"), rule="r")["value"] is None  # JSON has no NaN
    with pytest.raises(ValueError, match="lower bound"):
        claim("a", "t", 1.0, ci=(2, 1), interval="i", rule="r")
    with pytest.raises(ValueError, match="interval description"):
        claim("a", "t", 1.0, ci=(0, 1), rule="r")
    with pytest.raises(ValueError, match="rule"):
        claim("a", "t", 1.0, rule="")
    with pytest.raises(ValueError, match="duplicate claim id"):
        check_claims([rec, rec])
    with pytest.raises(ValueError, match="exactly the keys"):
        check_claims([{"id": "a"}])
