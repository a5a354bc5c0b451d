"""Multiple-choice scoring with any Hugging Face causal LM: option likelihood or letter-token logits.

Option likelihood (the calibration spec's protocol): each choice is a continuation of the prompt; its score is the
log-likelihood of the continuation tokens given the prompt (``normalization="sum"``), that sum divided by the
number of continuation tokens (``"mean"``) or by its UTF-8 byte length (``"byte"``, lm-eval's acc_norm). A softmax
over an item's choice scores gives the choice probabilities; with ``"sum"`` this is exactly P(choice | prompt)
renormalised over the offered choices.

Letter tokens: the choices are listed as "A. ...", "B. ..." in the prompt and the probabilities are the next-token
distribution restricted to the letter tokens and renormalised over them.

Batching: an item's prompt runs once and its KV cache is shared by all its choices (``shared_context_logprobs``);
``continuation_logprobs`` runs one full sequence per choice instead. Prompts are left-padded so every row ends at
the same position and the LM head runs only on the positions that are read (``logits_to_keep``); position ids come
from the attention mask, so padding never shifts positions. Both agree with an unbatched per-choice loop
(tests/test_mcq.py).
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

NORMALIZATIONS = ("sum", "mean", "byte")
METHODS = ("option", "letter")
DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class PromptFormat:
    """How an item becomes text.

    ``template`` formats the question (``{question}``); ``choice_prefix`` precedes each choice continuation
    (a space for plain prompts); ``chat`` wraps the prompt as a user turn with the tokenizer's chat template
    (the choice or letter is then the start of the assistant turn, so no prefix is used).
    """

    template: str = DEFAULT_TEMPLATE
    choice_prefix: str = " "
    chat: bool = False

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise ValueError(f"template: must contain '{{question}}', got {self.template!r}")


def render_prompt(tokenizer, question: str, fmt: PromptFormat) -> str:
    """The prompt text for one question (chat-wrapped when ``fmt.chat``)."""
    text = fmt.template.format(question=question)
    if not fmt.chat:
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat: the tokenizer has no chat template")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def letter_question(question: str, choices: Sequence[str], letters: str = string.ascii_uppercase) -> str:
    """Append the lettered choices ("A. ...", one per line) to the question text."""
    if len(choices) > len(letters):
        raise ValueError(f"choices: {len(choices)} choices but only {len(letters)} letters")
    lines = [f"{letters[k]}. {c}" for k, c in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def letter_token_ids(tokenizer, n: int, prefix: str = " ", letters: str = string.ascii_uppercase) -> list[int]:
    """Token id of ``prefix + letter`` for the first ``n`` letters; each must encode to exactly one token."""
    if n < 1 or n > len(letters):
        raise ValueError(f"n: expected 1..{len(letters)}, got {n}")
    ids = []
    for letter in letters[:n]:
        enc = tokenizer.encode(prefix + letter, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"letter {prefix + letter!r} is not a single token for this tokenizer: {enc}")
        ids.append(enc[0])
    if len(set(ids)) != n:
        raise ValueError(f"letters map to duplicate token ids: {ids}")
    return ids


def _encode_context(tokenizer, text: str, chat: bool) -> list[int]:
    # A chat-rendered prompt already holds its special tokens; adding them again would double the BOS.
    return list(tokenizer.encode(text, add_special_tokens=not chat))


def _model_max_length(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def _pad_left(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, position_ids


def _keeps_logits(model) -> bool:
    """Whether the model's forward can skip the LM head on positions we do not read."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _forward_last(model, rows: list[list[int]], keep: int, pad_id: int) -> torch.Tensor:
    """Float32 logits of the last ``keep`` positions of each (left-padded) row: shape (B, keep, V)."""
    ids, mask, pos = _pad_left(rows, pad_id)
    device = next(model.parameters()).device
    kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device)}
    if _keeps_logits(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits
    return logits[:, -keep:, :].float()


def _truncate(ctx: list[int], cont: list[int], max_length: int | None) -> list[int]:
    if max_length is not None and len(ctx) + len(cont) > max_length:
        if len(cont) >= max_length:
            raise ValueError(f"a continuation of {len(cont)} tokens does not fit max_length={max_length}")
        ctx = ctx[len(ctx) + len(cont) - max_length :]  # drop the oldest context tokens
    return ctx


@torch.no_grad()
def continuation_logprobs(
    model,
    pairs: Sequence[tuple[list[int], list[int]]],
    *,
    batch_size: int = 16,
    pad_id: int = 0,
    max_length: int | None = None,
    progress: bool = True,
    desc: str = "scoring",
) -> list[np.ndarray]:
    """Per-token log-probabilities (nats) of each continuation given its context.

    ``pairs`` are ``(context_ids, continuation_ids)``; the context must be non-empty (it predicts the first
    continuation token). Contexts longer than ``max_length`` minus the continuation are cut from the left.
    Returns one float64 array per pair, of the continuation's length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    seqs = []
    for i, (ctx, cont) in enumerate(pairs):
        if len(ctx) == 0 or len(cont) == 0:
            raise ValueError(f"pairs: item {i} has an empty context or continuation")
        seqs.append((_truncate(list(ctx), list(cont), max_length), list(cont)))
    # Longest first keeps similar lengths together (less padding) and surfaces out-of-memory early.
    order = sorted(range(len(seqs)), key=lambda i: -(len(seqs[i][0]) + len(seqs[i][1])))
    out: list[np.ndarray | None] = [None] * len(seqs)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, unit="batch"):
        idx = order[start : start + batch_size]
        rows = [seqs[i][0] + seqs[i][1] for i in idx]
        keep = max(len(seqs[i][1]) for i in idx) + 1
        logits = _forward_last(model, rows, keep, pad_id)  # position -keep-1+j predicts token -keep+j
        logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
        for b, i in enumerate(idx):
            cont = seqs[i][1]
            pred = logp[b, keep - 1 - len(cont) :, :]
            out[i] = pred.gather(-1, torch.tensor(cont).unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
    return out  # type: ignore[return-value]


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def _item_batches(items: list[tuple[list[int], list[list[int]]]], batch_size: int) -> list[list[int]]:
    """Item indices grouped so each group holds at most ``batch_size`` continuations (one item at least)."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
    groups, current, rows = [], [], 0
    for i in order:
        n = len(items[i][1])
        if current and rows + n > batch_size:
            groups.append(current)
            current, rows = [], 0
        current.append(i)
        rows += n
    return groups + ([current] if current else [])


@torch.no_grad()
def shared_context_logprobs(
    model,
    items: Sequence[tuple[list[int], Sequence[list[int]]]],
    *,
    batch_size: int = 16,
    pad_id: int = 0,
    max_length: int | None = None,
    progress: bool = True,
) -> list[list[np.ndarray]]:
    """Per-token log-probabilities (nats) of every continuation of every item, running each context once.

    ``items`` are ``(context_ids, [continuation_ids, ...])``. The contexts of a batch run left-padded with a KV
    cache; the cache rows are then repeated for each continuation (``reorder_cache``) and the continuations run
    right-padded after them, so the context's cost is paid once per item instead of once per choice (multiple
    choice answers are short next to their question). Equal to ``continuation_logprobs`` on each pair.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    prepared = []
    for i, (ctx, conts) in enumerate(items):
        conts = [list(c) for c in conts]
        if len(ctx) == 0 or not conts or any(len(c) == 0 for c in conts):
            raise ValueError(f"items: item {i} has an empty context or continuation")
        prepared.append((_truncate(list(ctx), max(conts, key=len), max_length), conts))
    device = next(model.parameters()).device
    out: list[list[np.ndarray]] = [[] for _ in prepared]
    for group in tqdm(_item_batches(prepared, batch_size), desc="option likelihood", disable=not progress,
                      unit="batch"):
        ids, mask, pos = _pad_left([prepared[i][0] for i in group], pad_id)
        keep = {"logits_to_keep": 1} if _keeps_logits(model) else {}
        first = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                      use_cache=True, **keep)
        owner = [b for b, i in enumerate(group) for _ in prepared[i][1]]
        conts = [c for i in group for c in prepared[i][1]]
        cache = first.past_key_values
        cache.reorder_cache(torch.tensor(owner, device=device))
        cont_ids, cont_mask = _pad_right(conts, pad_id)
        owner_t = torch.tensor(owner)
        lengths = mask.sum(-1)[owner_t]
        cont_pos = lengths[:, None] + torch.arange(cont_ids.shape[1])[None, :]
        full_mask = torch.cat([mask[owner_t], cont_mask], -1)
        logits = model(input_ids=cont_ids.to(device), attention_mask=full_mask.to(device),
                       position_ids=cont_pos.to(device), past_key_values=cache, use_cache=True).logits
        # Token 0 of a continuation is predicted by its context's last position, token j by continuation j-1.
        logp = torch.log_softmax(torch.cat([first.logits[owner_t, -1:].float(), logits[:, :-1].float()], 1), -1)
        for r, (b, cont) in enumerate(zip(owner, conts)):
            lp = logp[r, : len(cont)].gather(-1, torch.tensor(cont, device=device)[:, None]).squeeze(-1)
            out[group[b]].append(lp.double().cpu().numpy())
    return out


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
    fmt: PromptFormat = PromptFormat(),
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
        ctx = _encode_context(tokenizer, render_prompt(tokenizer, q, fmt), fmt.chat)
        conts = [prefix + str(opt) for opt in opts]
        encoded.append((ctx, [list(tokenizer.encode(c, add_special_tokens=False)) for c in conts]))
        texts.append(conts)
    common = {"batch_size": batch_size, "pad_id": _pad_id(tokenizer), "max_length": _model_max_length(model),
              "progress": progress}
    if share_context:
        lps = shared_context_logprobs(model, encoded, **common)
    else:
        flat = iter(continuation_logprobs(model, [(ctx, c) for ctx, conts in encoded for c in conts], **common))
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


@torch.no_grad()
def letter_scores(
    model,
    tokenizer,
    questions: Sequence[str],
    choices: Sequence[Sequence[str]],
    *,
    fmt: PromptFormat = PromptFormat(),
    batch_size: int = 16,
    progress: bool = True,
) -> list[np.ndarray]:
    """Choice scores (log-probabilities of the letter tokens, nats) of each item by next-token logits."""
    if len(questions) != len(choices):
        raise ValueError(f"choices: {len(choices)} choice lists for {len(questions)} questions")
    prefix = "" if fmt.chat else " "
    max_len = _model_max_length(model)
    rows = []
    for q, opts in zip(questions, choices):
        ctx = _encode_context(tokenizer, render_prompt(tokenizer, letter_question(q, opts), fmt), fmt.chat)
        rows.append(ctx[-max_len:] if max_len else ctx)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    out: list[np.ndarray | None] = [None] * len(rows)
    for start in tqdm(range(0, len(order), batch_size), desc="letter logits", disable=not progress):
        idx = order[start : start + batch_size]
        logp = torch.log_softmax(_forward_last(model, [rows[i] for i in idx], 1, _pad_id(tokenizer))[:, 0], -1)
        for b, i in enumerate(idx):
            ids = letter_token_ids(tokenizer, len(choices[i]), prefix)
            out[i] = logp[b, ids].double().cpu().numpy()
    return out  # type: ignore[return-value]


def _pad_id(tokenizer) -> int:
    # Padded positions are masked out, so any valid id works; prefer the tokenizer's own.
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def score_items(
    model,
    tokenizer,
    items: pd.DataFrame,
    *,
    method: str = "option",
    normalization: str = "sum",
    fmt: PromptFormat = PromptFormat(),
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


CHAT_MODES = ("never", "auto", "always")


def use_chat(tokenizer, chat_template: str) -> bool:
    """Resolve ``chat_template`` ("never", "auto" = if the tokenizer has one, "always") to a bool."""
    if chat_template not in CHAT_MODES:
        raise ValueError(f"chat_template: expected one of {CHAT_MODES}, got {chat_template!r}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "always" and not has:
        raise ValueError("chat_template: 'always' but the tokenizer has no chat template")
    return has if chat_template == "auto" else chat_template == "always"


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

    ``metrics`` holds ``lmcal.calibration.calibration_metrics`` plus the settings that produced it
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
