import numpy as np
import pytest
import torch
from lmcal.ladder import study
from lmcal.models import llama, tokenizers


def _stream(n=4000, vocab=50, seed=0):
    # A learnable stream: a noisy cycle, so training loss must fall well below log(vocab).
    rng = np.random.default_rng(seed)
    base = np.arange(n) % 7
    noise = rng.integers(0, vocab, n)
    return np.where(rng.random(n) < 0.1, noise, base).astype(np.int32)


def test_tokenizer_round_trips_and_respects_vocab():
    tok = tokenizers.train_bpe_tokenizer(["hello world, hello there " * 50, "x = 1\n" * 50], vocab_size=280)
    assert len(tok) <= 280
    text = "hello there, x = 1"
    assert tok.decode(tok(text).input_ids) == text
    with pytest.raises(ValueError, match="vocab_size"):
        tokenizers.train_bpe_tokenizer(["a"], vocab_size=100)


def test_tokenize_documents_separates_documents_with_eos():
    tok = tokenizers.train_bpe_tokenizer(["ab cd ef " * 30], vocab_size=270)
    stream = tokenizers.tokenize_documents(tok, ["ab cd", "ef"])
    eos = tok.eos_token_id
    assert (stream == eos).sum() == 2 and stream[-1] == eos


ARCH = {"hidden": 16, "layers": 1, "heads": 2}


def test_train_lm_learns_a_learnable_stream():
    ids = _stream()
    m = llama.build_llama(ARCH, vocab_size=50, seed=1)
    h = llama.train_lm(m, ids, steps=12, batch_size=4, seq_len=16, lr=1e-2, warmup_steps=2, seed=3,
                       eval_ids=ids[:600], progress=False)
    assert h["eval_loss"][-1] < np.log(50) - 0.5, "a learnable stream must be learned"
    assert h["lr"][0] == pytest.approx(5e-3) and h["lr"][1] == pytest.approx(1e-2)  # the default cosine warmup
    # (resume and fingerprint behaviour: tests/test_checkpoint.py)


def test_build_llama_reads_the_config_spelling():
    m = llama.build_llama({"hidden": 24, "layers": 3, "heads": 4, "kv_heads": 2, "name": "h24", "lr": 0.01},
                          vocab_size=60, max_position=64, eos_token_id=1, pad_token_id=0)
    c = m.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (24, 3, 4, 2)
    assert c.intermediate_size == 64 and c.vocab_size == 60 and c.tie_word_embeddings  # 8/3·24 = 64
    with pytest.raises(ValueError, match="hidden_size"):  # the old spelling is named as unknown
        llama.build_llama({"hidden_size": 16, "layers": 1, "heads": 2}, vocab_size=50)
    with pytest.raises(ValueError, match="divisible"):
        llama.build_llama({"hidden": 18, "layers": 1, "heads": 4}, vocab_size=50)


def test_split_documents_is_stable_and_sized():
    ids = [f"doc{i}" for i in range(2000)]
    mask = tokenizers.split_documents(ids, 0.1, seed=0)
    assert 0.07 < mask.mean() < 0.13
    shuffled = ids[::-1]
    assert list(tokenizers.split_documents(shuffled, 0.1, 0)) == list(mask[::-1])


def test_evaluate_lm_matches_manual_cross_entropy():
    m = llama.build_llama(ARCH, vocab_size=50, seed=0)
    ids = _stream(200)
    got = llama.evaluate_lm(m, ids, seq_len=16, batch_size=3)
    n = (len(ids) - 1) // 16
    x = torch.from_numpy(ids[: n * 16 + 1].astype(np.int64))
    losses = []
    with torch.no_grad():
        for i in range(n):
            w = x[i * 16 : i * 16 + 17]
            losses.append(torch.nn.functional.cross_entropy(m(w[None, :-1]).logits[0], w[1:], reduction="sum"))
    assert got == pytest.approx(float(sum(losses)) / (n * 16), rel=1e-5)


def test_ladder_table_flags_non_monotone_losses():
    infos = [{"name": n, "n_params": p * 2, "n_params_non_embedding": p, "hidden_size": 1, "n_layers": 1,
              "vocab_size": 1} for n, p in [("b", 200), ("a", 100), ("c", 300)]]
    t = study.ladder_table(infos, [3.0, 3.5, 3.2])
    assert list(t["name"]) == ["a", "b", "c"]
    assert list(t["loss_decreases"]) == [True, True, False]
    summary, fit = study.ladder_summary(t, n_boot=20)
    assert summary["heldout_loss_monotone"] is False
    assert fit is not None and summary["loss_fit"]["form"] == "power_law"
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["ladder.loss_falls"]["verdict"] is False  # b (3.5) -> c (3.2) rises, then falls: not monotone
    assert claims["ladder.loss_falls"]["value"] == pytest.approx(3.2 - 3.5)
    assert claims["ladder.heldout_loss.a"]["value"] == 3.5 and claims["ladder.heldout_loss.a"]["ci"] is None
    assert set(claims) >= {"ladder.heldout_loss.b", "ladder.heldout_loss.c", "ladder.alpha"}
