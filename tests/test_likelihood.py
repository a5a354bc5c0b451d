"""The likelihood engine (lmcal.lm.likelihood) against one unpadded forward per request, and the pad-id fallback."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from lmcal.lm.likelihood import LikelihoodEngine, rolling_windows
from lmcal.lm.padding import left_pad, pad_token_id, right_pad
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

V = 97
BOS, EOS, PAD = 1, 2, 3
# Ragged on both sides: short/long contexts with short/long continuations.
PAIRS = [([5, 6, 7], [20, 21]), ([9], [30]), ([12, 13, 14, 15, 16, 17, 18], [40, 41, 42, 43, 44, 45]),
         ([50, 51], [60, 61, 62, 63]), ([70, 71, 72, 73, 74], [80])]


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>"] + [f"w{i}" for i in range(V - 4)])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


@torch.no_grad()
def naive_logprobs(model, ctx, cont) -> np.ndarray:
    """Reference: one unpadded forward of ctx + cont, log_softmax at the positions that predict cont."""
    logp = torch.log_softmax(model(torch.tensor([list(ctx) + list(cont)])).logits[0].double(), -1)
    return np.array([logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)])


@torch.no_grad()
def greedy_tokens(model, ctx, n) -> list[int]:
    ids = list(ctx)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(ctx):]


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_token_logprobs_and_loglikelihood_match_naive(tiny, batch_size):
    engine = LikelihoodEngine(tiny, batch_size=batch_size)
    got = engine.token_logprobs(PAIRS)
    sums = engine.loglikelihood(PAIRS)
    for (ctx, cont), lp, (total, _) in zip(PAIRS, got, sums):
        ref = naive_logprobs(tiny, ctx, cont)
        assert lp.shape == (len(cont),) and lp.dtype == np.float64
        np.testing.assert_allclose(lp, ref, rtol=0, atol=1e-5)
        assert total == pytest.approx(ref.sum(), abs=1e-5)
    assert np.ptp([s for s, _ in sums]) > 0.5  # the requests really differ


def test_pad_value_never_changes_a_logprob(tiny):
    """Padding is masked, so 0, EOS or any other id give the same numbers in a ragged batch."""
    by_pad = {p: LikelihoodEngine(tiny, batch_size=8, pad_id=p).token_logprobs(PAIRS) for p in (0, EOS, 55)}
    for p in (EOS, 55):
        for a, b in zip(by_pad[0], by_pad[p]):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_left_truncation_at_the_context_limit(tiny):
    ctx, cont = list(range(10, 30)), [40, 41, 42]
    (got,) = LikelihoodEngine(tiny, max_length=12).token_logprobs([(ctx, cont)])
    np.testing.assert_allclose(got, naive_logprobs(tiny, ctx[-9:], cont), atol=1e-5)  # 9 + 3 = 12 tokens
    assert not np.allclose(got, naive_logprobs(tiny, ctx, cont), atol=1e-3)  # the cut really mattered
    with pytest.raises(ValueError, match="does not fit max_length"):
        LikelihoodEngine(tiny, max_length=3).token_logprobs([(ctx, cont)])


def test_default_limit_is_the_models_context(tiny):
    assert LikelihoodEngine(tiny).max_length == tiny.config.max_position_embeddings == 256


def test_is_greedy(tiny):
    ctx = [5, 6, 7, 8]
    greedy = greedy_tokens(tiny, ctx, 3)
    other = greedy[:2] + [(greedy[2] + 1) % V]
    (lp_g, is_g), (lp_o, is_o) = LikelihoodEngine(tiny, batch_size=2).loglikelihood([(ctx, greedy), (ctx, other)])
    assert is_g is True and is_o is False
    assert lp_g > lp_o


def test_text_requests_encode_jointly_and_empty_context_uses_the_prefix(tiny, tokenizer):
    engine = LikelihoodEngine(tiny, tokenizer)
    (lp, _), (lp_empty, _) = engine.loglikelihood([("w1 w2 w3", " w4 w5"), ("", "w4 w5")])
    assert lp == pytest.approx(naive_logprobs(tiny, [5, 6, 7], [8, 9]).sum(), abs=1e-5)
    assert lp_empty == pytest.approx(naive_logprobs(tiny, [BOS], [8, 9]).sum(), abs=1e-5)


def test_rolling_scores_every_token_once_with_the_window_context(tiny, tokenizer):
    ids = [10 + (7 * i) % 80 for i in range(30)]  # 30 tokens, longer than the 8-token context below
    (whole,) = LikelihoodEngine(tiny, tokenizer).loglikelihood_rolling([ids])
    assert whole == pytest.approx(naive_logprobs(tiny, [BOS], ids).sum(), abs=1e-4)  # fits: one window
    (windowed,) = LikelihoodEngine(tiny, tokenizer, max_length=8, batch_size=3).loglikelihood_rolling([ids])
    # Naive per-token sum: token t gets exactly the left context its window gives it (BOS in the first window).
    ref, start = 0.0, 0
    while start < len(ids):
        end = min(start + 7, len(ids))
        for t in range(start, end):
            ctx = [BOS] + ids[:t] if start == 0 else ids[max(0, end - 8):t]
            ref += naive_logprobs(tiny, ctx, [ids[t]])[0]
        start = end
    assert windowed == pytest.approx(ref, abs=1e-4)
    assert abs(windowed - whole) > 1e-3  # the shorter context changed the sum
    text = " ".join(tokenizer.convert_ids_to_tokens(ids))
    assert LikelihoodEngine(tiny, tokenizer, max_length=8).loglikelihood_rolling([text])[0] == pytest.approx(
        windowed, abs=1e-6)
    windows = rolling_windows(ids, [BOS], 8)
    assert [t for _, c in windows for t in c] == ids
    assert all(1 <= len(x) and len(x) + len(c) <= 8 for x, c in windows)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_next_token_logprobs_match_naive(tiny, batch_size):
    contexts, cands = [c for c, _ in PAIRS], [[20, 21, 22], [5], [40, 90], [1, 2], [60, 61]]
    got = LikelihoodEngine(tiny, batch_size=batch_size).next_token_logprobs(contexts, cands)
    for ctx, cand, g in zip(contexts, cands, got):
        with torch.no_grad():
            logp = torch.log_softmax(tiny(torch.tensor([ctx])).logits[0, -1].double(), -1)
        np.testing.assert_allclose(g, logp[cand].numpy(), atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_shared_context_matches_naive(tiny, batch_size):
    items = [([5, 6, 7], [[20, 21], [22], [23, 24, 25]]), ([9], [[30], [31, 32]]), (list(range(40, 52)), [[60], [61]])]
    got = LikelihoodEngine(tiny, batch_size=batch_size).shared_context_token_logprobs(items)
    for (ctx, conts), lps in zip(items, got):
        assert len(lps) == len(conts)
        for cont, lp in zip(conts, lps):
            np.testing.assert_allclose(lp, naive_logprobs(tiny, ctx, cont), atol=1e-5)
    # Truncation: the context is cut for the item's longest continuation.
    ((long, short),) = LikelihoodEngine(tiny, max_length=10).shared_context_token_logprobs(
        [(list(range(10, 30)), [[40, 41, 42], [43]])])
    np.testing.assert_allclose(long, naive_logprobs(tiny, list(range(23, 30)), [40, 41, 42]), atol=1e-5)
    np.testing.assert_allclose(short, naive_logprobs(tiny, list(range(23, 30)), [43]), atol=1e-5)


def test_generate_is_batched_greedy_and_stops(tiny, tokenizer):
    contexts = [c for c, _ in PAIRS]
    engine = LikelihoodEngine(tiny, tokenizer, batch_size=3)
    batched = engine.generate(contexts, max_new_tokens=6, eos_token_ids=[])
    single = [LikelihoodEngine(tiny, tokenizer, batch_size=1).generate([c], max_new_tokens=6, eos_token_ids=[])[0]
              for c in contexts]
    refs = [greedy_tokens(tiny, c, 6) for c in contexts]
    assert batched == single == [tokenizer.decode(r) for r in refs]
    # A stop string cuts the text before its first occurrence; an EOS id ends the row (decoded like any token
    # that is not special: here a plain word).
    stop = tokenizer.decode(refs[0][2:3])
    (cut,) = engine.generate([contexts[0]], max_new_tokens=6, until=[stop], eos_token_ids=[])
    assert cut == tokenizer.decode(refs[0]).split(stop, 1)[0]
    (ended,) = engine.generate([contexts[0]], max_new_tokens=6, eos_token_ids=[refs[0][1]])
    assert ended == tokenizer.decode(refs[0][:2])


def test_pad_token_id_fallback():
    ns = types.SimpleNamespace
    assert pad_token_id(ns(pad_token_id=PAD, eos_token_id=EOS)) == PAD
    assert pad_token_id(ns(pad_token_id=None, eos_token_id=EOS)) == EOS
    assert pad_token_id(ns(pad_token_id=None, eos_token_id=None)) == 0
    assert pad_token_id(ns()) == 0


def test_padding_layouts():
    ids, mask, pos = left_pad([[7, 8, 9], [4]], 0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]
    ids, mask = right_pad([[7, 8, 9], [4]], 3)
    assert ids.tolist() == [[7, 8, 9], [4, 3, 3]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="non-empty"):
        left_pad([[1], []], 0)


def test_bad_requests(tiny, tokenizer):
    engine = LikelihoodEngine(tiny, tokenizer)
    with pytest.raises(ValueError, match="both be text"):
        engine.loglikelihood([("w1", [5])])
    with pytest.raises(ValueError, match="no tokens"):
        engine.loglikelihood([([5], [])])
    with pytest.raises(ValueError, match="batch_size"):
        LikelihoodEngine(tiny, batch_size=0)
    with pytest.raises(ValueError, match="tokenizer"):
        LikelihoodEngine(tiny).loglikelihood([("a", "b")])
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate([[5]], max_new_tokens=0)
