"""Multiple-choice scoring with any Hugging Face causal LM: option likelihood or letter-token logits.

Option likelihood (the calibration spec's protocol): each choice is a continuation of the prompt; its score is the
log-likelihood of the continuation tokens given the prompt (``normalization="sum"``), that sum divided by the
number of continuation tokens (``"mean"``) or by its UTF-8 byte length (``"byte"``, lm-eval's acc_norm). A softmax
over an item's choice scores gives the choice probabilities; with ``"sum"`` this is exactly P(choice | prompt)
renormalised over the offered choices.

Letter tokens: the choices are listed as "A. ...", "B. ..." in the prompt and the probabilities are the next-token
distribution restricted to the letter tokens and renormalised over them.

Log-probabilities come from the shared engine ``lmcal.lm.likelihood.LikelihoodEngine``: by default an item's
prompt runs once and its KV cache is shared by all its choices (``shared_context_token_logprobs``); otherwise one
full sequence runs per choice (``token_logprobs``). Letter scores use its last-position variant
(``next_token_logprobs``). Prompt text (templates, chat, lettered choices) lives in ``lmcal.calibration.prompts``;
its names are re-exported here. Scores agree with an unbatched per-choice loop (tests/test_mcq.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lmcal.calibration.prompts import (  # noqa: F401 (re-exported: callers format prompts through mcq)
    CHAT_MODES,
    DEFAULT_TEMPLATE,
    PLAIN,
    PromptFormat,
    encode_context,
    letter_question,
    letter_token_ids,
    render_prompt,
    use_chat,
)
from lmcal.lm.likelihood import LikelihoodEngine

NORMALIZATIONS = ("sum", "mean", "byte")
METHODS = ("option", "letter")


def normalize_choice_scores(scores: np.ndarray) -> np.ndarray:
    """Softmax of one item's choice scores (log-domain) → probabilities summing to 1."""
    scores = np.asarray(scores, dtype=np.float64)
    z = scores - scores.max()
    p = np.exp(z)
    return p / p.sum()


def option_scores(
    model,
    tokenizer,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    normalization: str = "sum",
    fmt: PromptFormat = PLAIN,
    batch_size: int = 16,
    share_context: bool = True,
    progress: bool = True,
) -> list[np.ndarray]:
    """Choice scores (log-domain, nats) of each item by option likelihood; see the module docstring.

    ``share_context`` runs each prompt once for all its choices (``shared_context_logprobs``); False runs one
    full sequence per choice (``continuation_logprobs``), for models without a reorderable KV cache.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization: expected one of {NORMALIZATIONS}, got {normalization!r}")
    if len(questions) != len(choices):
        raise ValueError(f"choices: {len(choices)} choice lists for {len(questions)} questions")
    prefix = "" if fmt.chat else fmt.choice_prefix
    encoded, texts = [], []
    for i, (q, opts) in enumerate(zip(questions, choices)):
        if len(opts) < 2:
            raise ValueError(f"choices: item {i} has {len(opts)} choices; need at least 2")
        ctx = encode_context(tokenizer, render_prompt(tokenizer, q, fmt), fmt.chat)
        conts = [prefix + str(opt) for opt in opts]
        encoded.append((ctx, [list(tokenizer.encode(c, add_special_tokens=False)) for c in conts]))
        texts.append(conts)
    engine = LikelihoodEngine(model, tokenizer, batch_size=batch_size, progress=progress)
    if share_context:
        lps = engine.shared_context_token_logprobs(encoded)
    else:
        pairs = [(ctx, c) for ctx, conts in encoded for c in conts]
        flat = iter(engine.token_logprobs(pairs, desc="option likelihood"))
        lps = [[next(flat) for _ in conts] for _, conts in encoded]
    scores = []
    for item_lps, item_texts in zip(lps, texts):
        if normalization == "sum":
            scores.append([lp.sum() for lp in item_lps])
        elif normalization == "mean":
            scores.append([lp.mean() for lp in item_lps])
        else:
            scores.append([lp.sum() / max(len(t.encode("utf-8")), 1) for lp, t in zip(item_lps, item_texts)])
    return [np.array(s) for s in scores]


def letter_scores(
    model,
    tokenizer,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    fmt: PromptFormat = PLAIN,
    batch_size: int = 16,
    progress: bool = True,
) -> list[np.ndarray]:
    """Choice scores (log-probabilities of the letter tokens, nats) of each item by next-token logits."""
    if len(questions) != len(choices):
        raise ValueError(f"choices: {len(choices)} choice lists for {len(questions)} questions")
    prefix = "" if fmt.chat else " "
    contexts = [encode_context(tokenizer, render_prompt(tokenizer, letter_question(q, opts), fmt), fmt.chat)
                for q, opts in zip(questions, choices)]
    letters = [letter_token_ids(tokenizer, len(opts), prefix) for opts in choices]
    engine = LikelihoodEngine(model, tokenizer, batch_size=batch_size, progress=progress)
    return engine.next_token_logprobs(contexts, letters)


def score_items(
    model,
    tokenizer,
    items: pd.DataFrame,
    *,
    method: str = "option",
    normalization: str = "sum",
    fmt: PromptFormat = PLAIN,
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Score an evaluation set (columns ``item_id, question, choices, gold``; see ``lmcal.evalsets``).

    Returns one row per item: ``item_id, source, gold, scores`` (log-domain choice scores), ``probs`` (softmax
    over the choices), ``pred`` (argmax, lowest index on ties), ``conf`` (max prob) and ``correct``.
    """
    missing = {"item_id", "question", "choices", "gold"} - set(items.columns)
    if missing:
        raise ValueError(f"items: missing columns {sorted(missing)}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    questions = items["question"].astype(str).tolist()
    choices = [[str(c) for c in opts] for opts in items["choices"]]
    if method == "option":
        scores = option_scores(
            model, tokenizer, questions, choices, normalization=normalization, fmt=fmt,
            batch_size=batch_size, progress=progress,
        )
    else:
        scores = letter_scores(model, tokenizer, questions, choices, fmt=fmt, batch_size=batch_size,
                               progress=progress)
    probs = [normalize_choice_scores(s) for s in scores]
    pred = np.array([int(np.argmax(p)) for p in probs])
    gold = items["gold"].to_numpy().astype(np.int64)
    out = pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(),
            "source": items["source"].to_numpy() if "source" in items else "",
            "gold": gold,
            "scores": [s.tolist() for s in scores],
            "probs": [p.tolist() for p in probs],
            "pred": pred,
            "conf": [float(p.max()) for p in probs],
        }
    )
    out["correct"] = out["pred"].to_numpy() == gold
    return out


def evaluate_calibration(
    model,
    tokenizer,
    items: pd.DataFrame,
    *,
    method: str = "option",
    normalization: str = "sum",
    template: str = DEFAULT_TEMPLATE,
    chat_template: str = "never",
    n_bins: int = 10,
    binning: str = "width",
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Score ``items`` and measure calibration: ``(scored items, metrics, reliability table)``.

    ``metrics`` holds ``lmcal.calibration.metrics.calibration_metrics`` plus the settings that produced it
    (method, normalization, chat, template) and per-category accuracy under ``accuracy_by_category``.
    """
    from lmcal.calibration import metrics as calibration

    chat = use_chat(tokenizer, chat_template)
    fmt = PromptFormat(template=template, chat=chat)
    scored = score_items(model, tokenizer, items, method=method, normalization=normalization, fmt=fmt,
                         batch_size=batch_size, progress=progress)
    if "category" in items:
        scored.insert(2, "category", items["category"].astype(str).to_numpy())
    metrics = calibration.calibration_metrics(scored["probs"].tolist(), scored["gold"].to_numpy(), n_bins, binning)
    metrics.update({"method": method, "normalization": normalization, "chat": chat, "template": template})
    if "category" in scored:
        metrics["accuracy_by_category"] = scored.groupby("category")["correct"].mean().astype(float).to_dict()
    table = calibration.reliability_table(scored["conf"].to_numpy(), scored["correct"].to_numpy(), n_bins, binning)
    return scored, metrics, table
