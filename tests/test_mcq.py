"""Multiple-choice scoring agrees with a naive one-sequence-at-a-time reference on a tiny random Llama.

The likelihood engine underneath (lmcal.lm.likelihood) is also checked here on real BPE-encoded choices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from lmcal.calibration import mcq
from lmcal.lm.likelihood import LikelihoodEngine
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CORPUS = [
    "Question: What is the capital of France?\nA. Paris\nB. Rome\nC. Oslo\nD. Lima\nAnswer: A",
    "Question: Which language is spoken in Peru?\nA. Spanish\nB. Greek\nC. Thai\nD. Dutch\nAnswer: B",
    "The quick brown fox jumps over the lazy dog. 12 + 30 = 42. Answer: C. Answer: D.",
    " A B C D E" * 10,  # frequent enough that BPE merges " A" .. " E" into single tokens
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def _tiny_llama(vocab_size: int, max_position: int = 256) -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    # Random init gives near-uniform next-token distributions; sharpen them so choices really differ.
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    return model


@pytest.fixture(scope="module")
def model(tokenizer):
    return _tiny_llama(len(tokenizer))


QUESTIONS = ["What is the capital of France?", "Which language is spoken in Peru?", "What is 12 + 30?"]
CHOICES = [["Paris", "Rome", "Oslo", "Lima"], ["Spanish", "Greek", "Thai"], ["42", "41", "4 2", "forty two", "0"]]


@torch.no_grad()
def _naive_logprob(model, ctx: list[int], cont: list[int]) -> np.ndarray:
    """Per-token log-probs of ``cont`` after ``ctx``, one unpadded sequence at a time."""
    ids = torch.tensor([ctx + cont])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return np.array([logp[len(ctx) - 1 + t, tok].item() for t, tok in enumerate(cont)])


def _pairs(tok, fmt: mcq.PromptFormat) -> list[tuple[list[int], list[int], str]]:
    """(context ids, continuation ids, continuation text) of every (question, choice), in order."""
    out = []
    prefix = "" if fmt.chat else fmt.choice_prefix
    for q, opts in zip(QUESTIONS, CHOICES):
        ctx = tok.encode(mcq.render_prompt(tok, q, fmt), add_special_tokens=not fmt.chat)
        out.extend((ctx, tok.encode(prefix + opt, add_special_tokens=False), prefix + opt) for opt in opts)
    return out


def _naive_option_scores(model, tok, fmt: mcq.PromptFormat, normalization: str) -> list[np.ndarray]:
    flat = []
    for ctx, cont, text in _pairs(tok, fmt):
        lp = _naive_logprob(model, ctx, cont)
        flat.append(lp.sum() / {"sum": 1, "mean": len(cont), "byte": len(text.encode())}[normalization])
    sizes = np.cumsum([len(c) for c in CHOICES])[:-1]
    return np.split(np.array(flat), sizes)


@pytest.fixture(scope="module")
def naive_scores(model, tokenizer) -> dict[str, list[np.ndarray]]:
    return {n: _naive_option_scores(model, tokenizer, mcq.PromptFormat(), n) for n in ("sum", "mean", "byte")}


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_engine_token_logprobs_match_naive_loop(model, tokenizer, batch_size):
    pairs = _pairs(tokenizer, mcq.PromptFormat())
    got = LikelihoodEngine(model, batch_size=batch_size).token_logprobs([(c, t) for c, t, _ in pairs])
    for (ctx, cont, _), g in zip(pairs, got):
        np.testing.assert_allclose(g, _naive_logprob(model, ctx, cont), rtol=0, atol=2e-4)


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_engine_shared_context_logprobs_match_naive_loop(model, tokenizer, batch_size):
    pairs = _pairs(tokenizer, mcq.PromptFormat())
    items, k = [], 0
    for opts in CHOICES:
        items.append((pairs[k][0], [pairs[k + j][1] for j in range(len(opts))]))
        k += len(opts)
    got = LikelihoodEngine(model, batch_size=batch_size).shared_context_token_logprobs(items)
    flat = [lp for item in got for lp in item]
    assert len(flat) == len(pairs)
    for (ctx, cont, _), g in zip(pairs, flat):
        np.testing.assert_allclose(g, _naive_logprob(model, ctx, cont), rtol=0, atol=2e-4)


@pytest.mark.parametrize("share_context", [True, False])
@pytest.mark.parametrize("normalization", ["sum", "mean", "byte"])
def test_option_scores_match_naive_loop(model, tokenizer, naive_scores, normalization, share_context):
    got = mcq.option_scores(
        model, tokenizer, QUESTIONS, CHOICES, normalization=normalization, batch_size=5,
        share_context=share_context, progress=False,
    )
    want = naive_scores[normalization]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-4)
    # The scores are not all equal: otherwise agreement would prove nothing.
    assert np.ptp(np.concatenate(want)) > 0.5


def test_engine_left_truncates_long_context(tokenizer):
    model = _tiny_llama(len(tokenizer), max_position=12)
    ctx = tokenizer.encode("Question: What is the capital of France? Answer:")
    cont = tokenizer.encode(" Paris", add_special_tokens=False)
    assert len(ctx) + len(cont) > 12
    (got,) = LikelihoodEngine(model).token_logprobs([(ctx, cont)])  # max_length = the model's 12 positions
    want = _naive_logprob(model, ctx[len(ctx) + len(cont) - 12 :], cont)
    np.testing.assert_allclose(got, want, atol=2e-4)
    short = tokenizer.encode(" P", add_special_tokens=False)
    ((got_long, got_short),) = LikelihoodEngine(model).shared_context_token_logprobs([(ctx, [cont, short])])
    np.testing.assert_allclose(got_long, want, atol=2e-4)  # the context is cut for the longest continuation
    np.testing.assert_allclose(got_short, _naive_logprob(model, ctx[len(ctx) + len(cont) - 12 :], short), atol=2e-4)


def test_chat_template_prompts_match_naive_loop(model, tokenizer):
    tok = tokenizer
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
    )
    try:
        fmt = mcq.PromptFormat(chat=True)
        rendered = mcq.render_prompt(tok, "Q?", fmt)
        assert rendered == "<s>user\nQuestion: Q?\nAnswer:</s>\n<s>assistant\n"
        got = mcq.option_scores(model, tok, QUESTIONS, CHOICES, normalization="sum", fmt=fmt, progress=False)
        for g, w in zip(got, _naive_option_scores(model, tok, fmt, "sum")):
            np.testing.assert_allclose(g, w, atol=2e-4)
    finally:
        tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        mcq.render_prompt(tok, "Q?", mcq.PromptFormat(chat=True))


def test_letter_token_ids_are_the_space_letter_tokens(tokenizer):
    ids = mcq.letter_token_ids(tokenizer, 4)
    assert [tokenizer.decode([i]) for i in ids] == [" A", " B", " C", " D"]
    assert ids == tokenizer.convert_tokens_to_ids(["ĠA", "ĠB", "ĠC", "ĠD"])
    with pytest.raises(ValueError, match="not a single token"):
        mcq.letter_token_ids(tokenizer, 26)  # " Z" never appears in the corpus: split into two tokens


@pytest.mark.parametrize("batch_size", [1, 2])
def test_letter_scores_match_naive_next_token_logits(model, tokenizer, batch_size):
    questions, choices = QUESTIONS[:2], [CHOICES[0], CHOICES[1]]
    got = mcq.letter_scores(model, tokenizer, questions, choices, batch_size=batch_size, progress=False)
    for q, opts, g in zip(questions, choices, got):
        prompt = mcq.render_prompt(tokenizer, mcq.letter_question(q, opts), mcq.PromptFormat())
        assert f"\nA. {opts[0]}\nB. {opts[1]}\nC. {opts[2]}\n" in prompt and prompt.endswith("\nAnswer:")
        ids = torch.tensor([tokenizer.encode(prompt)])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        want = logp[mcq.letter_token_ids(tokenizer, len(opts))].numpy()
        np.testing.assert_allclose(g, want, atol=2e-4)


def test_score_items_probabilities_and_predictions(model, tokenizer, naive_scores):
    items = pd.DataFrame(
        {"item_id": ["a", "b", "c"], "question": QUESTIONS, "choices": CHOICES, "gold": [0, 2, 1], "source": "t"}
    )
    out = mcq.score_items(model, tokenizer, items, normalization="sum", progress=False)
    for row, scores in zip(out.itertuples(), naive_scores["sum"]):
        p = np.exp(scores - scores.max())
        np.testing.assert_allclose(row.probs, p / p.sum(), atol=1e-4)
        assert abs(sum(row.probs) - 1) < 1e-9
        assert row.pred == int(np.argmax(scores)) and row.conf == max(row.probs)
        assert row.correct == (row.pred == row.gold)


def test_bad_arguments_raise(model, tokenizer):
    with pytest.raises(ValueError, match="normalization"):
        mcq.option_scores(model, tokenizer, ["q"], [["a", "b"]], normalization="max", progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        mcq.option_scores(model, tokenizer, ["q"], [["a"]], progress=False)
    with pytest.raises(ValueError, match="template"):
        mcq.PromptFormat(template="no placeholder")
    with pytest.raises(ValueError, match="method"):
        mcq.score_items(model, tokenizer, pd.DataFrame(
            {"item_id": ["a"], "question": ["q"], "choices": [["x", "y"]], "gold": [0]}), method="x")


def test_evaluate_calibration_entry_point(model, tokenizer, naive_scores):
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "question": QUESTIONS, "choices": CHOICES, "gold": [0, 2, 1],
                          "category": ["geo", "geo", "math"]})
    scored, metrics, table = mcq.evaluate_calibration(model, tokenizer, items, n_bins=5, progress=False)
    want_pred = [int(np.argmax(s)) for s in naive_scores["sum"]]
    assert scored["pred"].tolist() == want_pred and list(scored["category"]) == ["geo", "geo", "math"]
    correct = np.array(want_pred) == items["gold"].to_numpy()
    assert metrics["accuracy"] == pytest.approx(correct.mean())
    assert metrics["accuracy_by_category"] == {"geo": correct[:2].mean(), "math": correct[2:].mean()}
    assert (metrics["method"], metrics["normalization"], metrics["chat"]) == ("option", "sum", False)
    assert int(table["count"].sum()) == len(items)
