"""Teacher-forced scoring against a naive full-logits loop (lmcal.scoring)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lmcal.lm.decode import DecodeConfig, entropy
from lmcal.lm.likelihood import rolling_windows
from lmcal.lm.scoring import (
    HUMAN_COLUMNS,
    Scorer,
    chunked_temperature_stats,
    score_documents,
)
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

V = 97
PROMPTS = [[1, 5, 6, 7], [1, 9], [1, 12, 13, 14, 15, 16, 17]]
CONTS = [[20, 21, 22, 23, 24, 25], [30], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + [f"w{i}" for i in range(V - 4)])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def naive(model, prompt, cont, decode):
    """Reference: one unpadded forward, full logits, the transform, explicit shift by one."""
    seq = torch.tensor([prompt + cont])
    with torch.no_grad():
        logits = model(seq).logits[0]
    lp = decode.apply(logits)
    base = decode.tempered(logits)
    rows = torch.arange(len(prompt) - 1, len(prompt) + len(cont) - 1)
    tgt = torch.tensor(cont)
    return {"logloss": -lp[rows, tgt].double().numpy(), "entropy": entropy(lp[rows]).double().numpy(),
            "base": base[rows, tgt].double().numpy()}


@pytest.mark.parametrize("decode", [DecodeConfig(), DecodeConfig(temperature=0.8), DecodeConfig(temperature=1.3)])
@pytest.mark.parametrize("vocab_chunk", [13, 8192, None])
def test_matches_naive_loop(tiny, decode, vocab_chunk):
    df = score_documents(tiny, PROMPTS, CONTS, ["a", "b", "c"], decode=decode, batch_size=2,
                         vocab_chunk=vocab_chunk, progress=False)
    assert list(df.columns) == HUMAN_COLUMNS
    for row, p, c in zip(df.itertuples(), PROMPTS, CONTS):
        ref = naive(tiny, p, c, decode)
        assert row.n_tokens == len(c) == len(row.logloss)
        np.testing.assert_allclose(row.logloss, ref["logloss"], atol=1e-5)
        np.testing.assert_allclose(row.entropy, ref["entropy"], atol=1e-5)
        np.testing.assert_array_equal(row.logloss_finite, row.logloss)
        assert not row.outside_kept.any()


def test_token_zero_is_scored_from_last_prompt_position(tiny):
    prompt, cont = [1, 5, 6, 7], [20, 21, 22]
    df = score_documents(tiny, [prompt], [cont], ["x"], decode=DecodeConfig(), progress=False)
    with torch.no_grad():
        last = torch.log_softmax(tiny(torch.tensor([prompt])).logits[0, -1], -1)  # prompt alone
    assert df.n_tokens[0] == 3
    assert math.isclose(df.logloss[0][0], -float(last[20]), abs_tol=1e-5)
    assert math.isclose(df.entropy[0][0], float(entropy(last)), abs_tol=1e-5)


def test_truncating_decode_flags_and_finite_variant(tiny):
    decode, eps = DecodeConfig(top_k=5, temperature=0.9), 1e-2
    df = score_documents(tiny, PROMPTS, CONTS, ["a", "b", "c"], decode=decode, batch_size=3, mixture_eps=eps,
                         progress=False)
    n_out = 0
    for row, p, c in zip(df.itertuples(), PROMPTS, CONTS):
        ref = naive(tiny, p, c, decode)
        outside = np.isinf(ref["logloss"])
        np.testing.assert_array_equal(row.outside_kept, outside)
        np.testing.assert_array_equal(np.isinf(row.logloss), outside)
        np.testing.assert_allclose(row.logloss[~outside], ref["logloss"][~outside], atol=1e-5)
        np.testing.assert_allclose(row.entropy, ref["entropy"], atol=1e-5)
        expected = -np.log((1 - eps) * np.exp(-ref["logloss"]) + eps * np.exp(ref["base"]))
        np.testing.assert_allclose(row.logloss_finite, expected, atol=1e-5)
        assert np.isfinite(row.logloss_finite).all()
        assert (np.asarray(row.entropy) <= math.log(5) + 1e-6).all()
        n_out += int(outside.sum())
    assert n_out > 0, "random human tokens should often fall outside a top-5 set"


def test_batch_composition_does_not_change_scores(tiny):
    decode = DecodeConfig(temperature=0.9)
    alone = score_documents(tiny, PROMPTS[1:2], CONTS[1:2], ["b"], decode=decode, progress=False)
    batched = score_documents(tiny, PROMPTS, CONTS, ["a", "b", "c"], decode=decode, batch_size=3, progress=False)
    np.testing.assert_allclose(alone.logloss[0], batched.logloss[1], atol=1e-5)


def test_chunked_stats_chunk_size_invariant():
    torch.manual_seed(1)
    h, w = torch.randn(7, 16), torch.randn(50, 16) * 3
    b = torch.randn(50)
    t = torch.randint(0, 50, (7,))
    z = (h @ w.T + b) / 0.7
    lp = torch.log_softmax(z.double(), -1)
    for chunk in (1, 7, 50, 64):
        st = chunked_temperature_stats(h, t, w, b, temperature=0.7, vocab_chunk=chunk)
        np.testing.assert_allclose(st["logloss"], -lp[torch.arange(7), t], atol=1e-5)
        np.testing.assert_allclose(st["entropy"], -(lp.exp() * lp).sum(-1), atol=1e-5)
        assert torch.equal(st["is_argmax"], t == z.argmax(-1))
    capped = chunked_temperature_stats(h, t, w, b, cap=2.0, vocab_chunk=8)  # Gemma-style softcap
    lpc = torch.log_softmax(torch.tanh((h @ w.T + b).double() / 2.0) * 2.0, -1)
    np.testing.assert_allclose(capped["logloss"], -lpc[torch.arange(7), t], atol=1e-5)


def test_loglikelihood_interface(tiny, tokenizer):
    scorer = Scorer(tiny, tokenizer, batch_size=2)
    res = scorer.loglikelihood([("w1 w2 w3", " w4 w5"), ("w7", " w8")])
    ref = naive(tiny, [5, 6, 7], [8, 9], DecodeConfig())
    assert math.isclose(res[0][0], -ref["logloss"].sum(), abs_tol=1e-5)
    # greedy continuation built from the model's own argmax is flagged greedy
    ctx = [5, 6, 7]
    with torch.no_grad():
        nxt = int(tiny(torch.tensor([ctx])).logits[0, -1].argmax())
    greedy = scorer.loglikelihood([("w1 w2 w3", f" w{nxt - 4}")])
    assert greedy[0][1] is True
    assert res[1][1] == (int(tiny(torch.tensor([[11]])).logits[0, -1].argmax()) == 12)


def test_loglikelihood_rolling_scores_every_token_once(tiny, tokenizer):
    text = " ".join(f"w{i}" for i in range(10, 40))  # 30 tokens
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    full = Scorer(tiny, tokenizer).loglikelihood_rolling([text])[0]
    ref = naive(tiny, [1], ids, DecodeConfig())
    assert math.isclose(full, -ref["logloss"].sum(), abs_tol=1e-4)
    windows = rolling_windows(ids, [1], 8)
    assert [t for _, c in windows for t in c] == ids
    assert all(1 <= len(x) and len(x) + len(c) <= 8 for x, c in windows)
    windowed = Scorer(tiny, tokenizer, max_length=8).loglikelihood_rolling([text])[0]
    assert windowed < 0 and math.isfinite(windowed)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="same length"):
        score_documents(tiny, PROMPTS, CONTS[:2], ["a", "b", "c"], decode=DecodeConfig(), progress=False)
    with pytest.raises(ValueError, match="prompts"):
        score_documents(tiny, [[]], [[3]], ["a"], decode=DecodeConfig(), progress=False)
    with pytest.raises(ValueError, match="vocab_chunk"):
        chunked_temperature_stats(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), torch.zeros(5, 4),
                                  vocab_chunk=0)


def test_shared_forward_for_several_decodes_matches_single_decode(tiny):
    from lmcal.lm.scoring import score_documents_multi

    decodes = {"a": DecodeConfig(temperature=0.8), "b": DecodeConfig(top_p=0.7)}
    multi = score_documents_multi(tiny, PROMPTS, CONTS, ["a", "b", "c"], decodes=decodes, batch_size=2,
                                  progress=False)
    for name, decode in decodes.items():
        single = score_documents(tiny, PROMPTS, CONTS, ["a", "b", "c"], decode=decode, batch_size=2,
                                 progress=False)
        pd.testing.assert_frame_equal(multi[name], single)
