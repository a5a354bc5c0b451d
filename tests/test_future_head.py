"""The learned future-entropy head (kind ``head``; lmcal.lm.future_head, lmcal.entropy.calibrate_head; spec §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lmcal.entropy import calibrate as ecal
from lmcal.entropy.calibrate_head import HEAD_DEFAULTS, head_settings, train_head
from lmcal.lm.decode import DecodeConfig, entropy
from lmcal.lm.future import FutureCalibration, adjust_log_probs, calibrated_nll_grid, candidate_future
from lmcal.lm.future_head import FutureHead, collect_pairs, fit_head, head_values, load_head, save_head
from lmcal.lm.sampling import generate_samples
from lmcal.workflow import entropy_calibrate as wf
from workflow_utils import REPO, job_counts, snakemake

PROMPTS = [[5, 9, 13], [7, 2], [11, 3, 8, 1]]
EOS = [96]


def random_head(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = FutureHead.like(model)
    with torch.no_grad():
        head.proj.weight.copy_(torch.randn(head.proj.weight.shape, generator=g))
        head.proj.bias.copy_(torch.rand(head.proj.bias.shape, generator=g) * 3)
    return head


@torch.no_grad()
def naive_step(model, seq):
    """log p^ and the final hidden state (last layer after the final norm) of one unpadded sequence, no cache."""
    out = model(input_ids=torch.tensor([seq]), output_hidden_states=True)
    return torch.log_softmax(out.logits[0, -1].float(), -1), out.hidden_states[-1][0, -1].float()


def naive_head_F(head, h):
    W, b = head.proj.weight.detach().double(), head.proj.bias.detach().double()
    return torch.tensor([sum(float(h[d]) * float(W[v, d]) for d in range(W.shape[1])) + float(b[v])
                         for v in range(W.shape[0])], dtype=torch.float64)


def naive_adjusted(lp, F, a):
    w = np.array([float(lp[v].exp()) ** (1 + a) * np.exp(-a * float(F[v])) for v in range(len(lp))])
    return np.log(w / w.sum())


def test_head_is_the_linear_map_of_a_naive_loop_and_survives_a_round_trip(tiny, tmp_path):
    head = random_head(tiny)
    h = torch.randn(3, tiny.config.hidden_size, generator=torch.Generator().manual_seed(1))
    F = head(h)
    assert F.shape == (3, tiny.config.vocab_size)
    for i in range(3):
        torch.testing.assert_close(F[i].double(), naive_head_F(head, h[i]), atol=1e-4, rtol=1e-5)
    save_head(head, tmp_path / "head.safetensors", {"note": "x"})
    again = load_head(tmp_path / "head.safetensors")
    torch.testing.assert_close(again(h), F)
    assert again.describe() == head.describe() and random_head(tiny, 1).describe() != head.describe()


def test_fit_head_recovers_a_planted_linear_target_and_leaves_unlabelled_tokens_at_the_mean():
    rng = np.random.default_rng(0)
    N, D, V, k = 400, 6, 12, 3
    hidden = rng.normal(size=(N, D)).astype(np.float32)
    W, b = rng.normal(size=(V, D)), rng.normal(size=V) + 5
    cand = np.stack([rng.choice(V - 1, k, replace=False) for _ in range(N)])  # token V-1 is never labelled
    labels = (np.einsum("nkd,nd->nk", W[cand], hidden) + b[cand]).astype(np.float32)
    head = FutureHead(D, V)
    hist = fit_head(head, hidden, cand, labels, epochs=800, lr=0.05)
    assert hist["train_mse_history"][-1] < 1e-3 * hist["train_mse_history"][0]
    assert hist["train_mse"] < 1e-3
    torch.testing.assert_close(head.proj.weight[:-1].detach().double(), torch.tensor(W[:-1]), atol=0.03, rtol=0)
    torch.testing.assert_close(head.proj.bias[:-1].detach().double(), torch.tensor(b[:-1]), atol=0.03, rtol=0)
    assert torch.all(head.proj.weight[-1] == 0) and float(head.proj.bias[-1].detach()) == pytest.approx(labels.mean())
    np.testing.assert_allclose(head_values(head, hidden[:5], cand[:5]), labels[:5], atol=0.05)
    chunked = FutureHead(D, V)
    fit_head(chunked, hidden, cand, labels, epochs=50, lr=0.05, l2=0.01, chunk=7)  # accumulation = full batch
    whole = FutureHead(D, V)
    fit_head(whole, hidden, cand, labels, epochs=50, lr=0.05, l2=0.01)
    torch.testing.assert_close(chunked.proj.weight, whole.proj.weight, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="want hidden"):
        fit_head(head, hidden, cand[:, :2], labels, epochs=1, lr=0.1)


def run(tiny, tmp_path, name, cal=None):
    ids = [f"d{i}" for i in range(len(PROMPTS))]
    return generate_samples(tiny, PROMPTS, ids, shard_dir=tmp_path / name, calibration=cal, decode=DecodeConfig(),
                            max_new_tokens=6, eos_token_ids=EOS, seed=3, batch_size=2, progress=False)


def test_kind_head_at_a_zero_is_the_plain_sampler_and_samples_the_adjusted_distribution(tiny, tmp_path):
    head = random_head(tiny)
    plain = run(tiny, tmp_path, "plain")
    pd.testing.assert_frame_equal(run(tiny, tmp_path, "zero", FutureCalibration(a=0.0, kind="head", head=head)),
                                  plain)
    a = 0.7
    df = run(tiny, tmp_path, "cal", FutureCalibration(a=a, kind="head", head=head))
    assert not df["tokens"].map(list).equals(plain["tokens"].map(list))
    for _, row in df.iterrows():
        seq = PROMPTS[int(row["doc_id"][1:])]
        for t, tok in enumerate(row["tokens"][:3]):
            lp, h = naive_step(tiny, seq + row["tokens"][:t].tolist())
            adj = naive_adjusted(lp, naive_head_F(head, h), a)
            assert row["logprob"][t] == pytest.approx(adj[tok], abs=1e-4)
            assert row["entropy"][t] == pytest.approx(-(np.exp(adj) * adj).sum(), abs=1e-4)


def test_head_log_loss_grid_matches_the_formula_in_a_naive_loop(tiny):
    head, responses = random_head(tiny, 2), [[4, 6, 8], [1, 2], [9]]
    grid = [0.0, 0.5, 1.0]
    nll, n = calibrated_nll_grid(tiny, PROMPTS, responses, FutureCalibration(kind="head", head=head), grid)
    assert n == 6
    for g, a in enumerate(grid):
        ref = 0.0
        for p, r in zip(PROMPTS, responses):
            for t, y in enumerate(r):
                lp, h = naive_step(tiny, p + r[:t])
                ref -= naive_adjusted(lp, naive_head_F(head, h), a)[y]
        assert nll[g] == pytest.approx(ref, abs=1e-3)
    F = torch.rand(2, 5, dtype=torch.float64)
    lp = torch.log_softmax(torch.randn(2, 5, dtype=torch.float64), -1)
    np.testing.assert_allclose(adjust_log_probs(lp, F, 0.4)[1].numpy(), naive_adjusted(lp[1], F[1], 0.4), atol=1e-9)


def test_collected_pairs_hold_the_naive_hidden_state_and_one_step_rollouts_equal_lookahead(tiny):
    seqs = [[4, 6, 8], [1, 2]]
    pairs = collect_pairs(tiny, PROMPTS[:2], seqs, [np.random.default_rng(i) for i in range(2)], top_k=3,
                          n_rollouts=2, horizon=1)
    assert len(pairs["hidden"]) == 5 and pairs["cand"].shape == pairs["rollout"].shape == (5, 3)
    np.testing.assert_allclose(pairs["rollout"], pairs["lookahead"], atol=1e-5)
    order = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]  # (sequence, position) of each context, step-major
    for n, (i, t) in enumerate(order):
        lp, h = naive_step(tiny, PROMPTS[i] + seqs[i][:t])
        assert pairs["row"][n] == i
        np.testing.assert_allclose(pairs["hidden"][n], h.numpy(), atol=1e-5)
        assert pairs["cand"][n].tolist() == torch.topk(lp, 3).indices.tolist()
        want = [float(entropy(naive_step(tiny, PROMPTS[i] + seqs[i][:t] + [int(v)])[0][None])[0])
                for v in pairs["cand"][n]]
        np.testing.assert_allclose(pairs["lookahead"][n], want, atol=1e-4)


def _prompt_set(n=6, vocab=97):
    rng = np.random.default_rng(1)
    ids = [f"d{i}" for i in range(n)]
    return pd.DataFrame({"doc_id": ids, "prompt_ids": [rng.integers(3, vocab, 5).tolist() for _ in ids],
                         "continuation_ids": [rng.integers(3, vocab, 9).tolist() for _ in ids]})


def test_head_training_uses_the_fit_half_only_and_is_deterministic_for_a_seed(tiny):
    prompts = _prompt_set(8)
    settings = {"k": 3, "m": 2, "h": 2, "n_steps": 4, "epochs": 40, "lr": 0.05}
    kw = {"fit_fraction": 0.5, "split_seed": 0, "samples_per_prompt": 1, "batch_size": 3, "pad_token_id": 0,
          "eos_token_ids": EOS}
    h1, r1 = train_head(tiny, {"kjv": prompts}, settings, seed=4, **kw)
    h2, r2 = train_head(tiny, {"kjv": prompts}, settings, seed=4, **kw)
    _, r3 = train_head(tiny, {"kjv": prompts}, settings, seed=5, **kw)
    assert h1.describe() == h2.describe()
    assert all(r1[k] == r2[k] for k in ("train_mse", "val_mse", "val_rmse_vs_rollout", "val_rmse_vs_lookahead"))
    assert r3["val_rmse_vs_rollout"] != r1["val_rmse_vs_rollout"]  # other rollout and sampling streams
    fit, ev = ecal.split_documents(prompts["doc_id"].tolist(), 0.5, 0)
    docs = r1["documents"]["kjv"]
    assert sorted(docs["train"] + docs["val"]) == sorted(fit) and not set(docs["train"] + docs["val"]) & set(ev)
    assert docs["train"] and docs["val"]
    assert r1["n_contexts"]["train"] == 2 * 4 * len(docs["train"])  # human + model prefix, 4 positions each
    assert len(r1["train_mse_history"]) == len(r1["val_mse_history"]) == 40 // r1["history_stride"]
    assert r1["val_rmse_constant_vs_rollout"] > 0 and r1["settings"] == {**HEAD_DEFAULTS, **settings}


def test_method_head_runs_in_the_study_and_bad_head_settings_are_refused(tiny):
    prompts = _prompt_set(6)
    sums = pd.DataFrame({"doc_id": prompts["doc_id"], "ent_sum": 7.0, "ent_n": 7.0, "ll_sum": 21.0,
                         "llf_sum": 21.0, "ll_n": 7.0})
    rec, samples = ecal.calibrate_one(
        tiny, prompts, {"t1.0": sums}, method="head", settings={}, a_grid=[0.0, 0.5], fit_fraction=0.5,
        split_seed=0, seed=5, max_new_tokens=4, samples_per_prompt=1, batch_size=4, max_len=None,
        reference_decode="t1.0", pad_token_id=0, eos_token_ids=EOS, head=random_head(tiny))
    assert rec["method"] == "head" and rec["calibration"]["head"]["vocab_size"] == tiny.config.vocab_size
    assert len(samples) == len(rec["eval_doc_ids"])
    with pytest.raises(ValueError, match="no trained head"):
        ecal.calibration_for("head", {})
    with pytest.raises(ValueError, match="kind 'head'"):
        FutureCalibration(kind="head")
    with pytest.raises(ValueError, match="exactly when kind"):
        FutureCalibration(kind="lookahead", head=random_head(tiny))
    with pytest.raises(ValueError, match="no top-k"):
        candidate_future(tiny, None, None, None, torch.zeros(1, 97), FutureCalibration(kind="head",
                                                                                         head=random_head(tiny)))
    with pytest.raises(ValueError, match="unknown key"):
        head_settings({"horizon": 3})
    with pytest.raises(ValueError, match="n_steps must be"):
        head_settings({"n_steps": 0})


def test_parse_time_checks_name_bad_methods_and_head_settings():
    assert set(wf.HEAD_KEYS) == set(HEAD_DEFAULTS) and wf.METHODS == ecal.METHODS
    cfg = {"studies": ["entropy"], "entropy": {"models": ["m1"], "datasets": ["kjv"], "n_samples": 12},
           "entropy_calibrate": {"models": ["m1"], "datasets": ["kjv"], "methods": {"head": {"k": 2}},
                                 "a_grid": [0, 1]}}
    assert wf.head_input(wf.settings(cfg)) == [wf.HEAD]
    assert wf.head_input({"methods": {"lookahead": {}}}) == []

    def with_cal(**kw):
        return {**cfg, "entropy_calibrate": {**cfg["entropy_calibrate"], **kw}}

    with pytest.raises(ValueError, match=r"unknown method\(s\) \['lookahaed'\]"):
        wf.settings(with_cal(methods={"lookahaed": {"k": 2}}))
    with pytest.raises(ValueError, match=r"methods.head: unknown key\(s\) \['steps'\]"):
        wf.settings(with_cal(methods={"head": {"steps": 3}}))
    with pytest.raises(ValueError, match="fit half holds 1 document"):
        wf.settings({**with_cal(), "entropy": {**cfg["entropy"], "n_samples": 2}})


def test_tiny_dag_plans_one_head_job_per_model_before_the_calibrated_run(tmp_path):
    tiny_cfg = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
    assert "head" in tiny_cfg["entropy_calibrate"]["methods"]
    res = snakemake(tmp_path, "-n", "--cores", "1", "results/entropy/calibrated/summary.json")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    counts = job_counts(res.stdout)
    assert counts["entropy_calibrate_head"] == counts["entropy_calibrate_run"] == len(
        tiny_cfg["entropy_calibrate"]["models"])
    assert "head.safetensors" in res.stdout and "step_curves.png" in res.stdout


def test_a_bad_head_key_fails_before_any_job_naming_the_key(tmp_path):
    cfg = yaml.safe_load((REPO / "tests" / "config" / "tiny.yaml").read_text())
    cfg["entropy_calibrate"]["methods"]["head"]["steps"] = 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(tmp_path, "-n", "--cores", "1", config=tmp_path / "bad.yaml")
    assert res.returncode != 0 and "entropy_calibrate.methods.head.steps" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()
