"""The entropy-calibration protocol (spec §3): which documents, which prompt, which human continuation.

Selection: the **first** ``n`` documents in dataset order (no shuffle) whose human text has at least
``prompt_tokens + min_continuation`` tokens and whose prompt leaves room for ``max_new_tokens`` (the prompt plus
``max_new_tokens`` must be ``< max_context`` as in the reference, and must also fit the model's own position limit,
which fixes repo defect 6). Each model's tokenizer decides, so the selected documents can differ across
families; ``doc_ids=`` gives a shared-id mode (`shared_doc_ids` finds ids that qualify for several tokenizers).

Prompt = special prefix + optional context + the first ``prompt_tokens`` human tokens, as token ids:

* no context (WikiText, the default corpora): the tokenizer's own special prefix (e.g. BOS) + human tokens;
* context, base model: ``"Q: {context}\\nA: "`` encoded with special tokens (reference ``encode_prompt``);
* context, instruct model with a chat template: the user turn ``context`` rendered with
  ``add_generation_prompt=True``. Documents without context stay plain, as in the reference.

The human text is encoded on its own without special tokens and appended, so the token boundary between prompt
and continuation is exact. The continuation scored and compared against is the next ``max_new_tokens`` human
tokens. Differences from the reference: its WikiText prompt counts BOS among the 128 tokens; here BOS is extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

PROMPT_COLUMNS = ["doc_id", "prompt_ids", "continuation_ids", "prompt_len", "n_continuation", "n_human_tokens",
                  "chat"]


# --------------------------------------------------------------------------------------------- tokenisation


def _ids(encoded: Any) -> list[int]:
    """Token ids from whatever a tokenizer call returned (list, BatchEncoding, dict)."""
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    if hasattr(encoded, "tolist"):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return [int(i) for i in encoded]


def _strip_eos(ids: list[int], tokenizer) -> list[int]:
    eos = tokenizer.eos_token_id
    # a tokenizer whose EOS equals its BOS (some GGUF conversions) must keep a lone BOS prefix
    if ids and eos is not None and ids[-1] == eos and not (len(ids) == 1 and eos == tokenizer.bos_token_id):
        return ids[:-1]
    return ids


def encode_human(tokenizer, text: str) -> list[int]:
    """Human text on its own: no special tokens, so it can be appended to any prompt prefix."""
    return _ids(tokenizer(text, add_special_tokens=False))


def encode_context(tokenizer, context: str | None, *, chat: bool) -> list[int]:
    """Prompt prefix before the human tokens (see module doc); never ends in EOS."""
    if not context:
        return _strip_eos(_ids(tokenizer("", add_special_tokens=True)), tokenizer)
    if chat:
        msgs = [{"role": "user", "content": context}]
        return _ids(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
    return _strip_eos(_ids(tokenizer(f"Q: {context}\nA: ", add_special_tokens=True)), tokenizer)


def use_chat(tokenizer, chat_template: str, context: str | None) -> bool:
    """Whether a document's prompt is rendered with the chat template (``auto`` | ``never``)."""
    if chat_template not in ("auto", "never"):
        raise ValueError(f"chat_template must be 'auto' or 'never', got {chat_template!r}")
    return chat_template == "auto" and bool(context) and bool(getattr(tokenizer, "chat_template", None))


# ------------------------------------------------------------------------------------------------ selection


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def make_prompt(
    tokenizer,
    text: str,
    context: str | None,
    *,
    prompt_tokens: int,
    max_new_tokens: int,
    min_continuation: int,
    max_context: int | None,
    model_max_positions: int | None,
    chat_template: str = "auto",
) -> tuple[dict[str, Any] | None, str]:
    """(prompt row, "") for a qualifying document, else (None, reason)."""
    chat = use_chat(tokenizer, chat_template, context)
    human = encode_human(tokenizer, text)
    prompt = encode_context(tokenizer, context, chat=chat) + human[:prompt_tokens]
    if len(human) < prompt_tokens + min_continuation:
        return None, f"{len(human)} human tokens < {prompt_tokens} + {min_continuation}"
    if not prompt:
        return None, "empty prompt"
    if max_context and len(prompt) + max_new_tokens >= max_context:
        return None, f"prompt {len(prompt)} + {max_new_tokens} new tokens >= max_context {max_context}"
    if model_max_positions and len(prompt) + max_new_tokens > model_max_positions:
        return None, f"prompt {len(prompt)} + {max_new_tokens} new tokens > model limit {model_max_positions}"
    cont = human[prompt_tokens:prompt_tokens + max_new_tokens]
    return {"prompt_ids": np.asarray(prompt, dtype=np.int64), "continuation_ids": np.asarray(cont, dtype=np.int64),
            "prompt_len": len(prompt), "n_continuation": len(cont), "n_human_tokens": len(human),
            "chat": chat}, ""


def build_prompts(
    documents: pd.DataFrame,
    tokenizer,
    *,
    n: int,
    prompt_tokens: int = 128,
    max_new_tokens: int = 2048,
    min_continuation: int = 1024,
    max_context: int | None = 4096,
    model_max_positions: int | None = None,
    chat_template: str = "auto",
    instruction: str | None = None,
    doc_ids: Sequence[str] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Select documents and build prompts; one row per selected document with `PROMPT_COLUMNS`.

    ``documents`` needs ``doc_id`` and ``text`` and may have ``context``; ``instruction`` is the context of
    documents that have none. With ``doc_ids`` exactly those documents are used, in that order, and each must
    qualify. Raises ValueError if fewer than ``n`` documents qualify (the reference asserts the same).
    """
    _check_int("n", n, 1)
    _check_int("prompt_tokens", prompt_tokens, 1)
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("min_continuation", min_continuation, 0)
    missing = {"doc_id", "text"} - set(documents.columns)
    if missing:
        raise ValueError(f"documents: missing column(s) {sorted(missing)}")
    docs = documents
    if doc_ids is not None:
        by_id = documents.set_index(documents["doc_id"].astype(str), drop=False)
        unknown = [d for d in doc_ids if str(d) not in by_id.index]
        if unknown:
            raise ValueError(f"doc_ids: {len(unknown)} id(s) not in documents, e.g. {unknown[:3]}")
        docs, n = by_id.loc[[str(d) for d in doc_ids]].reset_index(drop=True), len(doc_ids)
    contexts = docs["context"] if "context" in docs.columns else pd.Series([None] * len(docs))
    settings = dict(prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, min_continuation=min_continuation,
                    max_context=max_context, model_max_positions=model_max_positions, chat_template=chat_template)
    rows: list[dict[str, Any]] = []
    it = zip(docs["doc_id"], docs["text"], contexts)
    for doc_id, text, context in tqdm(it, total=len(docs), desc="selecting", disable=not progress):
        row, reason = make_prompt(tokenizer, text, (context or None) or instruction, **settings)
        if row is None:
            if doc_ids is not None:
                raise ValueError(f"doc_ids: document {doc_id!r} does not qualify: {reason}")
            continue
        rows.append({"doc_id": str(doc_id), **row})
        if len(rows) == n:
            break
    if len(rows) < n:
        raise ValueError(f"n: only {len(rows)} of {len(documents)} documents qualify, {n} requested "
                         f"(settings {settings})")
    return pd.DataFrame.from_records(rows, columns=PROMPT_COLUMNS)


def shared_doc_ids(documents: pd.DataFrame, tokenizers: Sequence[Any], *, n: int,
                   instruction: str | None = None, **settings) -> list[str]:
    """First ``n`` doc ids (dataset order) that qualify under every tokenizer (shared-id mode).

    ``settings`` are `make_prompt`'s keyword arguments; ``model_max_positions`` may be a list, one per tokenizer.
    """
    if not tokenizers:
        raise ValueError("tokenizers: need at least one")
    limits = settings.pop("model_max_positions", None)
    limits = limits if isinstance(limits, (list, tuple)) else [limits] * len(tokenizers)
    contexts = documents["context"] if "context" in documents.columns else pd.Series([None] * len(documents))
    ids: list[str] = []
    for doc_id, text, context in zip(documents["doc_id"], documents["text"], contexts):
        if all(make_prompt(tok, text, (context or None) or instruction, model_max_positions=lim, **settings)[0]
               is not None for tok, lim in zip(tokenizers, limits)):
            ids.append(str(doc_id))
            if len(ids) == n:
                return ids
    raise ValueError(f"n: only {len(ids)} documents qualify for all {len(tokenizers)} tokenizers, {n} requested")


def context_limit(info) -> int | None:
    """Positions a model can use: its position table, or the context it was trained on if recorded
    (``extra.seq_len``; a RoPE model trained on short windows is not evaluated beyond them)."""
    limits = [x for x in (getattr(info, "max_position", 0), (getattr(info, "extra", {}) or {}).get("seq_len")) if x]
    return int(min(limits)) if limits else None
