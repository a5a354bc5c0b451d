"""The SFT study on the knowledge world: per-bucket tables of base and SFT models and the per-method claims."""

import numpy as np
import pandas as pd
import pytest
from lmcal.core.claims import check_claims
from lmcal.data import factworld as fw
from lmcal.sft import fact_buckets


def _items(ids, conf: float, acc: float) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({"item_id": ids, "conf": conf, "correct": np.arange(n) < int(round(acc * n))})


def _runs(seeds=(0, 1, 2), evalsets=("facts", "facts_letter")):
    return [dict(name=f"b--sft-b{beta:g}-lr0.001-s{s}", base="b", kind="main", label_smoothing=beta, lr=1e-3,
                 seed=s, evalsets=list(evalsets)) for beta in (0.0, 0.1) for s in seeds]


def test_method_claims_known_answer():
    ids = [f"q{i}" for i in range(200)]
    runs = _runs()
    items = {}
    for ev in ("facts", "facts_letter"):
        items[("b", ev)] = _items(ids, 0.5, 0.5)                       # ECE 0
        for s in (0, 1, 2):
            items[(f"b--sft-b0-lr0.001-s{s}", ev)] = _items(ids, 0.9, 0.5)   # ECE 0.4
            # beta = 0.1 helps on facts (ECE 0.2), hurts on facts_letter (ECE 0.45)
            conf = 0.7 if ev == "facts" else 0.95
            items[(f"b--sft-b0.1-lr0.001-s{s}", ev)] = _items(ids, conf, 0.5)
    c = {r["id"]: r for r in check_claims(fact_buckets.method_claims(runs, items, n_bins=10, binning="width",
                                                                      n_boot=100))}
    f1 = c["sft.finding1.facts"]
    assert f1["value"] == pytest.approx(0.4) and f1["ci"][0] > 0 and f1["verdict"] is True
    assert f1["seeds_agree"] == "3/3" and f1["n_seeds"] == 3
    assert c["sft.ls_effect.b0.1.facts"]["value"] == pytest.approx(-0.2)
    assert c["sft.ls_effect.b0.1.facts"]["verdict"] is True
    assert c["sft.ls_effect.b0.1.facts_letter"]["value"] == pytest.approx(0.05)
    assert c["sft.ls_effect.b0.1.facts_letter"]["verdict"] is False


def test_bucket_tables_cover_base_and_sft_models():
    items_all = fw.facts_evalset({}, n_items=None)
    ids = items_all["item_id"].tolist()
    runs = _runs(seeds=(0,), evalsets=("facts",))
    rng = np.random.default_rng(0)
    items = {(m, "facts"): pd.DataFrame({"item_id": ids, "conf": rng.uniform(0.3, 1, len(ids)),
                                         "correct": rng.random(len(ids)) < 0.4})
             for m in ["b"] + [r["name"] for r in runs]}
    table = fact_buckets.bucket_tables(runs, items, ["facts"], {}, n_bins=10, binning="width", n_boot=20)
    assert sorted(table["role"].unique()) == ["base", "sft"]
    assert set(table["model"]) == {"b", *[r["name"] for r in runs]}
    info = fw.item_buckets(ids)
    base = table[table["model"] == "b"].set_index("bucket")
    for bucket, g in info.groupby("bucket"):
        sel = items[("b", "facts")].set_index("item_id").loc[g["item_id"]]
        assert base.loc[bucket, "n_items"] == len(g)
        assert base.loc[bucket, "accuracy"] == pytest.approx(sel["correct"].mean())
    # extra bases (every ladder size the calibration study scores) join as base rows
    items[("other", "facts")] = items[("b", "facts")]
    with_extra = fact_buckets.bucket_tables(runs, items, ["facts"], {}, n_bins=10, binning="width", n_boot=20,
                                            extra_bases=[("other", "facts"), ("other", "elsewhere")])
    extra = with_extra[with_extra["model"] == "other"]
    assert set(extra["role"]) == {"base"} and set(extra["evalset"]) == {"facts"}
    assert extra["accuracy"].tolist() == base.reindex(extra["bucket"])["accuracy"].tolist()
    fig = fact_buckets.bucket_figure(with_extra)
    assert fig.axes
    # a non-facts evaluation set is left out
    assert fact_buckets.bucket_tables(runs, items, [], {}, n_bins=10, binning="width").empty
