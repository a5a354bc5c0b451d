"""KV-cache sampler: exact entropies, ragged EOS, determinism and crash-resume (lmcal.lm.sampling)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lmcal.entropy import runs
from lmcal.lm import sampling
from lmcal.lm.decode import DecodeConfig, entropy
from lmcal.lm.sampling import SAMPLE_COLUMNS, draw_from_log_probs, generate_samples, sample_batch, sample_rng
from transformers import LlamaConfig, LlamaForCausalLM

V = 97
EOS = list(range(90, 97))  # 7 of 97 ids end a sequence: random models stop at ragged, unplanned steps
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19], [20], [21, 22, 23]]


@pytest.fixture(scope="module")
def successor():
    """Deterministic model: after token i it emits i+1 with probability ~1 (layers zeroed, one-hot residual)."""
    n = 32
    cfg = LlamaConfig(vocab_size=n, hidden_size=n, intermediate_size=8, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=False)
    m = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        m.model.embed_tokens.weight.copy_(torch.eye(n))
        m.model.layers[0].self_attn.o_proj.weight.zero_()
        m.model.layers[0].mlp.down_proj.weight.zero_()
        m.lm_head.weight.copy_(torch.roll(torch.eye(n), 1, dims=0) * 10.0)  # row (i+1) picks up token i
    return m


def naive_steps(model, prompt, tokens, decode):
    """Reference: one full forward without cache or padding; distributions at the positions predicting tokens."""
    seq = torch.tensor([list(prompt) + list(tokens)])
    with torch.no_grad():
        logits = model(seq).logits[0]
    lp = decode.apply(logits[len(prompt) - 1:len(prompt) - 1 + len(tokens)])
    return entropy(lp).numpy(), lp.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1).numpy()


@pytest.mark.parametrize("decode", [DecodeConfig(), DecodeConfig(temperature=0.7), DecodeConfig(top_p=0.9, top_k=40)])
def test_entropy_and_logprob_match_naive_full_forward(tiny, decode):
    rows = sample_batch(tiny, PROMPTS, [sample_rng(3, i) for i in range(len(PROMPTS))], decode=decode,
                        max_new_tokens=24, eos_token_ids=EOS)
    lengths = [len(r["tokens"]) for r in rows]
    assert len(set(lengths)) > 1, "fixture should produce ragged lengths"
    for p, r in zip(PROMPTS, rows):
        ent, lp = naive_steps(tiny, p, r["tokens"], decode)
        np.testing.assert_allclose(r["entropy"], ent, atol=1e-5)
        np.testing.assert_allclose(r["logprob"], lp, atol=1e-5)
        assert all(math.isfinite(x) for x in r["logprob"])  # never samples outside the kept set
        assert r["ended_eos"] == (r["tokens"][-1] in EOS)
        assert not any(t in EOS for t in r["tokens"][:-1])  # nothing generated after EOS


def test_ragged_eos_hand_checked(successor):
    eos = [20, 25]
    prompts = [[3, 17], [9], [22, 23], [1]]
    rows = sample_batch(successor, prompts, [sample_rng(0, i) for i in range(4)], decode=DecodeConfig(),
                        max_new_tokens=6, eos_token_ids=eos)
    assert rows[0]["tokens"] == [18, 19, 20] and rows[0]["ended_eos"]
    assert rows[1]["tokens"] == [10, 11, 12, 13, 14, 15] and not rows[1]["ended_eos"]
    assert rows[2]["tokens"] == [24, 25] and rows[2]["ended_eos"]
    assert rows[3]["tokens"] == [2, 3, 4, 5, 6, 7] and not rows[3]["ended_eos"]
    for r in rows:
        assert len(r["entropy"]) == len(r["logprob"]) == len(r["tokens"])
        assert max(r["entropy"]) < 1e-6 and min(r["logprob"]) > -1e-6  # near-deterministic model
    # without stopping, the same rows run to max_new_tokens
    full = sample_batch(successor, prompts, [sample_rng(0, i) for i in range(4)], decode=DecodeConfig(),
                        max_new_tokens=6, eos_token_ids=eos, stop_at_eos=False)
    assert full[0]["tokens"] == [18, 19, 20, 21, 22, 23] and not full[0]["ended_eos"]


def test_inverse_cdf_draw_known_answers():
    lp = torch.tensor([[0.1, 0.0, 0.3, 0.6]]).log().expand(6, 4)
    u = torch.tensor([0.0, 0.05, 0.1, 0.39, 0.4, 0.9999])
    assert draw_from_log_probs(lp, u).tolist() == [0, 0, 2, 2, 3, 3]  # the zero-probability token 1 is never hit


def test_seeded_and_independent_of_batch_size(tiny, tmp_path):
    kw = dict(decode=DecodeConfig(temperature=0.9), max_new_tokens=12, eos_token_ids=EOS, seed=7, progress=False)
    ids = [f"d{i}" for i in range(len(PROMPTS))]
    a = generate_samples(tiny, PROMPTS, ids, batch_size=1, shard_dir=tmp_path / "a", **kw)
    b = generate_samples(tiny, PROMPTS, ids, batch_size=3, shard_dir=tmp_path / "b", **kw)
    c = generate_samples(tiny, PROMPTS, ids, batch_size=3, shard_dir=tmp_path / "c", **kw)
    pd.testing.assert_frame_equal(b, c)  # same settings: bit-identical
    for x, y in zip(a.itertuples(), b.itertuples()):
        assert list(x.tokens) == list(y.tokens)
        np.testing.assert_allclose(x.entropy, y.entropy, atol=1e-5)
    d = generate_samples(tiny, PROMPTS, ids, batch_size=3, shard_dir=tmp_path / "d", **{**kw, "seed": 8})
    assert any(list(x) != list(y) for x, y in zip(b.tokens, d.tokens))


def test_output_contract(tiny, tmp_path):
    df = generate_samples(tiny, PROMPTS, ["a", "b", "c", "d", "e"], decode=DecodeConfig(), max_new_tokens=6,
                          eos_token_ids=EOS, seed=0, batch_size=2, samples_per_prompt=2, shard_dir=tmp_path / "s",
                          progress=False)
    assert list(df.columns) == SAMPLE_COLUMNS
    assert df["sample_idx"].tolist() == list(range(10))
    assert df["doc_id"].tolist() == [d for d in "abcde" for _ in range(2)]
    assert df["prompt_len"].tolist() == [len(p) for p in PROMPTS for _ in range(2)]
    assert (df["gen_len"] == df["tokens"].map(len)).all() and (df["gen_len"] == df["entropy"].map(len)).all()
    assert df["entropy"].iloc[0].dtype == np.float64 and df["tokens"].iloc[0].dtype == np.int64
    assert not (tmp_path / "s").exists()  # shards are removed after the merge by default


def test_resume_after_crash_is_identical(tiny, tmp_path, monkeypatch):
    prompts = PROMPTS + [[30, 31], [40]]
    ids = [f"d{i}" for i in range(len(prompts))]
    kw = dict(decode=DecodeConfig(temperature=1.1), max_new_tokens=10, eos_token_ids=EOS, seed=1, batch_size=2,
              shard_size=2, progress=False)
    reference = generate_samples(tiny, prompts, ids, shard_dir=tmp_path / "ref", **kw)

    real, calls = sampling.sample_batch, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # die inside the third shard, after two complete shards
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_batch", crashing)
    with pytest.raises(KeyboardInterrupt):
        generate_samples(tiny, prompts, ids, shard_dir=tmp_path / "run", **kw)
    assert sorted(p.name for p in (tmp_path / "run").glob("shard-*.parquet")) == [
        "shard-00000.parquet", "shard-00001.parquet"]

    resumed_calls = []
    monkeypatch.setattr(sampling, "sample_batch", lambda *a, **k: resumed_calls.append(1) or real(*a, **k))
    resumed = generate_samples(tiny, prompts, ids, shard_dir=tmp_path / "run", **kw)
    assert len(resumed_calls) == 2  # only shards 2 and 3 were sampled again
    pd.testing.assert_frame_equal(resumed, reference)


def test_stale_shards_from_other_settings_are_discarded(tiny, tmp_path):
    kw = dict(max_new_tokens=5, eos_token_ids=EOS, seed=0, batch_size=2, keep_shards=True, progress=False)
    ids = [f"d{i}" for i in range(len(PROMPTS))]
    generate_samples(tiny, PROMPTS, ids, decode=DecodeConfig(temperature=0.5), shard_dir=tmp_path / "s", **kw)
    fresh = generate_samples(tiny, PROMPTS, ids, decode=DecodeConfig(), shard_dir=tmp_path / "s", **kw)
    again = generate_samples(tiny, PROMPTS, ids, decode=DecodeConfig(), shard_dir=tmp_path / "t", **kw)
    pd.testing.assert_frame_equal(fresh, again)


def test_bad_arguments(tiny, tmp_path):
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample_batch(tiny, [[1]], [sample_rng(0, 0)], decode=DecodeConfig(), max_new_tokens=0, eos_token_ids=[])
    with pytest.raises(ValueError, match="doc_ids"):
        generate_samples(tiny, [[1]], [], decode=DecodeConfig(), max_new_tokens=2, eos_token_ids=[], seed=0,
                         shard_dir=tmp_path)
    with pytest.raises(ValueError, match="prompts"):
        sample_batch(tiny, [[]], [sample_rng(0, 0)], decode=DecodeConfig(), max_new_tokens=2, eos_token_ids=[])


def test_workflow_steps_end_to_end(tiny_model_dir, tmp_path):
    """prompts -> samples -> human scores through the functions the rules call, with the output contract."""
    from lmcal.core import io
    from lmcal.lm.scoring import HUMAN_COLUMNS

    text = "the quick brown fox jumps over the lazy dog. " * 12
    docs = pd.DataFrame({"doc_id": ["short", "a", "b", "c"], "text": ["too short", text, text.upper(), text[5:]]})
    io.write_parquet(docs, tmp_path / "docs.parquet")
    root = tmp_path / "results" / "entropy"
    prompt_out = [root / "prompts" / "model~tiny" / "data~toy.parquet"]
    summary = runs.run_prompts(tiny_model_dir, {"toy": tmp_path / "docs.parquet"}, prompt_out, n=3,
                                   prompt_tokens=8, max_new_tokens=6, min_continuation=6, max_context=4096)
    assert summary["toy"]["n"] == 3
    assert io.read_json(prompt_out[0].with_suffix(".json"))["doc_ids"] == ["a", "b", "c"]
    decodes = {"t1.0": {"temperature": 1.0}, "k5": {"top_k": 5, "temperature": 0.9}}
    samples = [root / "samples" / "model~tiny" / "data~toy" / f"decode~{k}.parquet" for k in decodes]
    runs.run_sampling(tiny_model_dir, prompt_out, samples, decodes=decodes, seed=0, max_new_tokens=6,
                            batch_size=2, shard_root=root / "shards" / "model~tiny")
    human = [root / "human" / "model~tiny" / "data~toy" / f"decode~{k}.parquet" for k in decodes]
    runs.run_scoring(tiny_model_dir, prompt_out, human, decodes=decodes, batch_size=2, vocab_chunk=64)
    assert not (root / "shards" / "model~tiny").exists()
    for s, h in zip(samples, human):
        sdf, hdf = pd.read_parquet(s), pd.read_parquet(h)
        assert list(sdf.columns) == SAMPLE_COLUMNS and list(hdf.columns) == HUMAN_COLUMNS
        assert sdf["doc_id"].tolist() == hdf["doc_id"].tolist() == ["a", "b", "c"]
        assert (hdf["n_tokens"] == 6).all() and (sdf["gen_len"] <= 6).all()
        s_meta, h_meta = io.read_json(s.with_suffix(".json")), io.read_json(h.with_suffix(".json"))
        assert s_meta["dtype"] == h_meta["dtype"] == "torch.float32"
        assert s_meta["weight_files"] == h_meta["weight_files"] and s_meta["weight_files"]
        assert s_meta["decode"]["temperature"] == h_meta["decode"]["temperature"]
    k5 = pd.read_parquet(human[1])
    assert (np.concatenate(k5["entropy"].to_list()) <= math.log(5) + 1e-6).all()
