"""The calibrated-sampler study (lmcal.entropy.calibrate*): split by document id, eval-half decode points, the
frontier and verdict rule on planted numbers, a real fit-and-sample run on a tiny model, the toy-world table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lmcal.entropy.calibrate import calibrate_one, decode_points, split_documents
from lmcal.entropy.calibrate_summary import (
    beats_reference,
    calibrated_summary,
    dominates,
    pareto_frontier,
    toyworld_table,
    verdict_row,
)
from lmcal.workflow import entropy_calibrate as wf


def test_split_is_disjoint_covering_deterministic_and_order_free():
    ids = [f"doc{i}" for i in range(11)]
    fit, ev = split_documents(ids, 0.5, seed=3)
    assert set(fit).isdisjoint(ev) and set(fit) | set(ev) == set(ids)
    assert len(fit) == round(0.5 * 11)
    assert [d for d in ids if d in set(fit)] == fit  # input order kept
    assert split_documents(ids, 0.5, seed=3) == (fit, ev)
    fit_r, ev_r = split_documents(ids[::-1], 0.5, seed=3)
    assert set(fit_r) == set(fit) and set(ev_r) == set(ev)
    assert set(split_documents(ids, 0.5, seed=4)[0]) != set(fit)  # the seed matters (11 choose 6 splits)
    assert split_documents(["a", "b"], 0.99)[1] and split_documents(["a", "b"], 0.01)[0]  # both halves non-empty


@pytest.mark.parametrize("ids, frac, match", [(["a", "a", "b"], 0.5, "duplicate"), (["a"], 0.5, "at least 2"),
                                              (["a", "b"], 1.0, "fit_fraction")])
def test_split_rejects_bad_input(ids, frac, match):
    with pytest.raises(ValueError, match=match):
        split_documents(ids, frac)


def test_decode_points_are_token_weighted_over_the_chosen_documents():
    sums = pd.DataFrame({"doc_id": ["a", "b", "c"], "ent_sum": [10.0, 30.0, 99.0], "ent_n": [5.0, 15.0, 1.0],
                         "ll_sum": [4.0, 12.0, 50.0], "llf_sum": [4.0, 13.0, 50.0], "ll_n": [2.0, 6.0, 1.0]})
    p = decode_points({"t1.0": sums}, ["a", "b"])["t1.0"]
    assert p["entropy"] == pytest.approx(40 / 20) and p["logloss"] == pytest.approx(16 / 8)
    assert p["logloss_finite"] == pytest.approx(17 / 8) and p["entce"] == pytest.approx(0.0)
    assert p["n_tokens_generated"] == 20 and p["n_tokens_human"] == 8
    with pytest.raises(ValueError, match="lack document"):
        decode_points({"t1.0": sums}, ["a", "zzz"])


def test_verdict_rule_on_planted_numbers():
    assert beats_reference(0.1, 3.0, -0.2, 3.0)  # lower |EntCE|, equal log loss
    assert not beats_reference(0.1, 3.0 + 1e-6, 0.2, 3.0)  # log loss went up
    assert not beats_reference(-0.3, 2.0, 0.2, 3.0)  # |EntCE| went up although log loss fell
    assert dominates({"entce": 0.1, "logloss": 2.0}, {"entce": -0.1, "logloss": 2.5})
    assert not dominates({"entce": 0.1, "logloss": 2.0}, {"entce": 0.1, "logloss": 2.0})


def test_frontier_keeps_the_undominated_finite_points_by_log_loss():
    pts = {"t1.0": {"entce": 0.5, "logloss": 3.0}, "t0.9": {"entce": 0.2, "logloss": 3.1},
           "t0.8": {"entce": -0.1, "logloss": 3.4}, "t0.7": {"entce": -0.4, "logloss": 3.9},  # dominated by t0.9
           "p0.9": {"entce": 0.0, "logloss": math.inf}}  # truncation zeroing a human token: on no curve
    assert pareto_frontier(pts) == ["t1.0", "t0.9", "t0.8"]


def _record(model, entce, logloss, tau1_entce, tau1_logloss, a=0.2):
    decodes = {"t1.0": {"entce": tau1_entce, "logloss": tau1_logloss + 1e-4},
               "t0.8": {"entce": tau1_entce / 2, "logloss": tau1_logloss + 0.3}}
    return {"model": model, "dataset": "kjv", "method": "lookahead", "a": a, "entce": entce, "logloss": logloss,
            "entropy": entce + logloss, "reference_decode": "t1.0", "decodes": decodes, "eval_doc_ids": ["x"],
            "tau1": {"entce": tau1_entce, "logloss": tau1_logloss, "logloss_scorer": tau1_logloss + 1e-4},
            "wall_s": {"sampling": 1.0}, "sampled_tokens_per_s": 10.0}


def test_summary_lists_exactly_the_runs_that_meet_the_rule():
    recs = [_record("m1", 0.1, 2.9, 0.4, 3.0), _record("m2", 0.1, 3.2, 0.4, 3.0)]
    s = calibrated_summary(recs, None, {"a_grid": [0, 0.2]})
    assert s["beats_frontier"] == ["m1/kjv/lookahead"]
    row = s["table"][0]
    assert row["d_logloss"] == pytest.approx(-0.1) and row["d_abs_entce"] == pytest.approx(-0.3)
    assert row["frontier"] == ["t1.0", "t0.8"] and row["dominated_by"] == []
    assert verdict_row(recs[1])["dominated_by"] == []  # t1.0 has the lower log loss but the higher |EntCE|
    assert verdict_row(_record("m3", 0.3, 3.5, 0.4, 3.0))["dominated_by"] == ["t0.8"]  # 0.2 <= 0.3, 3.3 <= 3.5
    assert "does not beat" in s["verdicts"]["m2/kjv/lookahead"] and "verdict_rule" in s


def _tiny_model(vocab=48):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _prompts(n=6, vocab=48):
    rng = np.random.default_rng(1)
    ids = [f"d{i}" for i in range(n)]
    return pd.DataFrame({"doc_id": ids, "prompt_ids": [rng.integers(3, vocab, 5).tolist() for _ in ids],
                         "continuation_ids": [rng.integers(3, vocab, 7).tolist() for _ in ids]})


@torch.inference_mode()
def _naive_logloss(model, prompts, ids):
    """Mean teacher-forced -log p^(y) of the continuations by one full forward per document."""
    total, n = 0.0, 0
    for p, c in zip(prompts.set_index("doc_id").loc[ids, "prompt_ids"], prompts.set_index("doc_id").loc[ids,
                                                                                                         "continuation_ids"]):
        x = torch.tensor([list(p) + list(c)])
        lp = torch.log_softmax(model(x).logits[0].double(), -1)
        total -= float(lp[len(p) - 1:-1].gather(1, torch.tensor(c).unsqueeze(1)).sum())
        n += len(c)
    return total / n


def test_calibrate_one_fits_on_one_half_and_samples_the_other_at_the_study_seeds():
    from lmcal.lm.decode import DecodeConfig

    torch.set_num_threads(1)
    model, prompts = _tiny_model(), _prompts()
    sums = pd.DataFrame({"doc_id": prompts["doc_id"], "ent_sum": 7.0, "ent_n": 7.0, "ll_sum": 21.0,
                         "llf_sum": 21.0, "ll_n": 7.0})
    kw = {"method": "lookahead", "settings": {"k": 3}, "fit_fraction": 0.5, "split_seed": 0, "seed": 5,
          "max_new_tokens": 6, "samples_per_prompt": 1, "batch_size": 4, "max_len": None,
          "reference_decode": "t1.0", "pad_token_id": 0, "eos_token_ids": [2]}
    grid = [-0.2, 0.0, 0.4, 1.0]
    rec, samples = calibrate_one(model, prompts, {"t1.0": sums}, a_grid=grid, **kw)
    fit, ev = split_documents(prompts["doc_id"].tolist(), 0.5, 0)
    assert rec["fit_doc_ids"] == fit and rec["eval_doc_ids"] == ev and list(samples["doc_id"]) == ev
    assert rec["a"] in grid and min(rec["fit_logloss_grid"]) == rec["fit_logloss_grid"][grid.index(rec["a"])]
    assert rec["tau1"]["logloss"] == pytest.approx(_naive_logloss(model, prompts, ev), rel=1e-5)
    assert rec["logloss"] == pytest.approx(rec["eval_logloss_grid"][grid.index(rec["a"])])
    assert rec["tau1"]["entropy"] == pytest.approx(1.0) and rec["decodes"]["t1.0"]["logloss"] == pytest.approx(3.0)

    # a = 0 (grid {0}) is the plain τ = 1 sampler of the entropy study at the same sample indices and seeds
    rec0, s0 = calibrate_one(model, prompts, {"t1.0": sums}, a_grid=[0.0], **kw)
    assert rec0["a"] == 0.0 and rec0["entce"] == pytest.approx(rec0["entropy"] - rec0["tau1"]["logloss"])
    from lmcal.lm.sampling import sample_batch, sample_rng

    rows = sample_batch(model, [list(p) for p in prompts["prompt_ids"]], [sample_rng(5, i) for i in range(6)],
                        decode=DecodeConfig(), max_new_tokens=6, eos_token_ids=[2], pad_token_id=0)
    want = [rows[i]["tokens"] for i, d in enumerate(prompts["doc_id"]) if d in set(ev)]
    assert [list(t) for t in s0["tokens"]] == want


def test_toyworld_table_algorithm1_zeroes_entce_without_raising_log_loss():
    toy = toyworld_table({"n_states": 4, "vocab": 6, "horizon": 4, "n_derail": 1}, n_rollouts=4, seed=0)
    rows = {r["method"]: r for r in toy["table"]}
    base, alg = rows["base (tau=1)"], rows["algorithm1 exact F"]
    assert base["entce"] > 0.01 and abs(alg["entce"]) < 1e-6 and alg["log_loss"] <= base["log_loss"] + 1e-12
    temp = toy["table"][1]
    assert abs(temp["entce"]) < 1e-9 and temp["log_loss"] == pytest.approx(base["log_loss"] + toy["temperature_logloss_cost"])
    assert len(toy["per_step_entce"]["algorithm1 exact F"]) == 4 and len(toy["algorithm1_alpha_t"]) == 4


def test_parse_time_settings_check_the_entropy_study():
    cfg = {"studies": ["entropy"], "entropy": {"models": ["m1"], "datasets": ["kjv"]},
           "entropy_calibrate": {"models": ["m1"], "datasets": ["kjv"], "methods": {"lookahead": {}}, "a_grid": [0, 1]}}
    assert wf.summary_targets(cfg) == [wf.SUMMARY]
    assert wf.summary_targets({**cfg, "studies": ["ladder"]}) == []
    assert wf.summary_targets({**cfg, "entropy_calibrate": {**cfg["entropy_calibrate"], "enabled": False}}) == []
    with pytest.raises(ValueError, match="entropy_calibrate.models"):
        wf.settings({**cfg, "entropy_calibrate": {**cfg["entropy_calibrate"], "models": ["m2"]}})
    with pytest.raises(ValueError, match="must contain 0"):
        wf.settings({**cfg, "entropy_calibrate": {**cfg["entropy_calibrate"], "a_grid": [0.5]}})
