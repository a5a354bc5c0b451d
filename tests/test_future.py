"""Future-entropy estimators, the calibrated sampler and its teacher-forced log loss (lmcal.lm.future; spec §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lmcal.lm import sampling
from lmcal.lm.decode import DecodeConfig, entropy
from lmcal.lm.future import (
    FutureCalibration,
    adjust_log_probs,
    calibrated_nll_grid,
    candidate_future,
    fill_future,
    fit_a,
)
from lmcal.lm.padding import left_pad
from lmcal.lm.sampling import generate_samples

PROMPTS = [[5, 9, 13], [7, 2], [11, 3, 8, 1]]
EOS = [96]


def last_log_probs(model, seq):
    """Naive reference: a full forward of one unpadded sequence, no cache."""
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)


def naive_lookahead(model, seq, k):
    lp = last_log_probs(model, seq)
    cand = torch.topk(lp, k).indices
    return lp, cand, torch.stack([entropy(last_log_probs(model, seq + [int(v)])[None])[0] for v in cand])


def cache_after_prompts(model, prompts):
    from transformers import DynamicCache
    ids, mask, pos = left_pad(prompts, 0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
    return torch.log_softmax(out.logits[:, -1].float(), -1), cache, mask, pos[:, -1] + 1


def test_lookahead_matches_full_forwards_and_leaves_the_cache_alone(tiny):
    lp, cache, mask, next_pos = cache_after_prompts(tiny, PROMPTS)
    before = [layer.keys.clone() for layer in cache.layers]
    cand, f = candidate_future(tiny, cache, mask, next_pos, lp, FutureCalibration(a=0.5, top_k=5))
    for i, p in enumerate(PROMPTS):
        _, cand_ref, f_ref = naive_lookahead(tiny, p, 5)
        assert cand[i].tolist() == cand_ref.tolist()
        torch.testing.assert_close(f[i], f_ref, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(b, layer.keys) for b, layer in zip(before, cache.layers))


def test_rollout_of_one_step_is_lookahead_and_two_steps_match_a_naive_rollout(tiny):
    lp, cache, mask, next_pos = cache_after_prompts(tiny, PROMPTS)
    look = candidate_future(tiny, cache, mask, next_pos, lp, FutureCalibration(a=1, top_k=3))[1]
    one = candidate_future(tiny, cache, mask, next_pos, lp, FutureCalibration(a=1, kind="rollout", top_k=3,
                           horizon=1), [np.random.default_rng(i) for i in range(3)])[1]
    torch.testing.assert_close(one, look, atol=1e-5, rtol=1e-5)
    k, m = 3, 2
    cal = FutureCalibration(a=1, kind="rollout", top_k=k, n_rollouts=m, horizon=2)
    cand, two = candidate_future(tiny, cache, mask, next_pos, lp, cal, [np.random.default_rng(i) for i in range(3)])
    for i, p in enumerate(PROMPTS):
        u = np.random.default_rng(i).random(k * m)  # the draws the estimator made for row i
        for c in range(k):
            vals = []
            for r in range(m):
                seq = p + [int(cand[i, c])]
                lp1 = last_log_probs(tiny, seq)
                cdf = torch.cumsum(lp1.double().exp(), 0)
                t2 = int(torch.searchsorted(cdf, torch.tensor([u[c * m + r]], dtype=torch.float64) * cdf[-1],
                                            right=True))
                vals.append(float(entropy(lp1[None])[0] + entropy(last_log_probs(tiny, seq + [t2])[None])[0]))
            assert float(two[i, c]) == pytest.approx(np.mean(vals), abs=1e-4)


def test_fill_in_keeps_candidates_and_gives_the_tail_their_weighted_mean():
    lp = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.1]]))
    F = fill_future(lp, torch.tensor([[0, 1]]), torch.tensor([[2.0, 4.0]]))
    fill = (0.5 * 2 + 0.3 * 4) / 0.8
    torch.testing.assert_close(F, torch.tensor([[2.0, 4.0, fill, fill]]))


def test_adjusted_distribution_matches_the_formula_in_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(torch.randn(2, 6, generator=g), -1)
    lp[1, 3] = -float("inf")  # a truncated token stays impossible
    F = torch.rand(2, 6, generator=g) * 3
    got = adjust_log_probs(lp, F, 0.4).exp()
    for i in range(2):
        w = torch.tensor([float(lp[i, v].exp()) ** 1.4 * np.exp(-0.4 * float(F[i, v])) for v in range(6)])
        torch.testing.assert_close(got[i], (w / w.sum()).float(), atol=1e-6, rtol=1e-6)
    assert adjust_log_probs(lp, F, 0.0) is lp


def run(tiny, tmp_path, name, cal=None, **kw):
    ids = [f"d{i}" for i in range(len(PROMPTS))]
    args = {"decode": DecodeConfig(), "max_new_tokens": 6, "eos_token_ids": EOS, "seed": 3, "batch_size": 2, "progress": False}
    return generate_samples(tiny, PROMPTS, ids, shard_dir=tmp_path / name, calibration=cal, **{**args, **kw})


def test_a_zero_reproduces_the_plain_sampler_token_for_token(tiny, tmp_path):
    plain = run(tiny, tmp_path, "plain")
    pd.testing.assert_frame_equal(run(tiny, tmp_path, "zero", FutureCalibration(a=0.0, kind="rollout")), plain)
    hot = run(tiny, tmp_path, "hot", FutureCalibration(a=3.0, top_k=8))
    assert (hot["entropy"].map(np.mean) < plain["entropy"].map(np.mean)).all()  # a > 0 cools every sample


def test_sampled_steps_record_the_adjusted_distribution(tiny, tmp_path):
    a, k = 1.5, 4
    df = run(tiny, tmp_path, "cal", FutureCalibration(a=a, top_k=k))
    for _, row in df.iterrows():
        seq = PROMPTS[int(row["doc_id"][1:])]
        for t, tok in enumerate(row["tokens"]):
            lp, cand, f = naive_lookahead(tiny, seq + row["tokens"][:t].tolist(), k)
            adj = adjust_log_probs(lp[None], fill_future(lp[None], cand[None], f[None]), a)[0]
            assert row["entropy"][t] == pytest.approx(float(entropy(adj[None])[0]), abs=1e-4)
            assert row["logprob"][t] == pytest.approx(float(adj[tok]), abs=1e-4)


def test_kill_and_resume_gives_identical_calibrated_output(tiny, tmp_path, monkeypatch):
    cal = FutureCalibration(a=0.8, kind="rollout", top_k=3, n_rollouts=2, horizon=2)
    reference = run(tiny, tmp_path, "ref", cal, shard_size=2, batch_size=1)
    real, calls = sampling.sample_batch, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(tiny, tmp_path, "run", cal, shard_size=2, batch_size=1)
    monkeypatch.setattr(sampling, "sample_batch", real)
    pd.testing.assert_frame_equal(run(tiny, tmp_path, "run", cal, shard_size=2, batch_size=1), reference)


def test_teacher_forced_log_loss_matches_naive_loop_is_convex_and_fit_never_loses(tiny):
    responses = [[4, 6, 8], [1, 2], [9]]
    grid = np.round(np.linspace(-0.5, 2.0, 26), 10)
    cal = FutureCalibration(top_k=4)
    nll, n = calibrated_nll_grid(tiny, PROMPTS, responses, cal, grid)
    assert n == 6
    for a in (0.0, 1.0):  # naive: full forwards per prefix and per candidate
        ref = 0.0
        for p, r in zip(PROMPTS, responses):
            for t, y in enumerate(r):
                lp, cand, f = naive_lookahead(tiny, p + r[:t], 4)
                ref -= float(adjust_log_probs(lp[None], fill_future(lp[None], cand[None], f[None]), a)[0, y])
        assert nll[list(grid).index(a)] == pytest.approx(ref, abs=1e-3)
    assert (np.diff(nll, 2) >= -1e-4).all()
    a = fit_a(grid, nll)
    assert nll[list(grid).index(a)] <= nll[list(grid).index(0.0)]
    with pytest.raises(ValueError, match="contain 0"):
        fit_a([0.5, 1.0], [1.0, 2.0])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        FutureCalibration(kind="head")
    with pytest.raises(ValueError, match="a must be"):
        FutureCalibration(a=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        FutureCalibration(top_k=0)
