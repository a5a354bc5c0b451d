"""Instruction data for supervised fine-tuning: conversations in, (input_ids, labels) out.

A conversation is a list of ``{"role": "system"|"user"|"assistant", "content": str}`` messages (the Tulu 3
``messages`` format). Loss is on assistant tokens only: every other position gets the label ``IGNORE_INDEX``.

Sources:
- offline, templated from facts the evaluation never asks about: country facts from the SFT side of
  ``lmcal.data.evalsets.synthetic.split_facts`` and seeded arithmetic with the evaluation's questions excluded;
- hub or local instruction sets in three formats: ``messages`` (allenai/tulu-3-sft-mixture), ``alpaca``
  (``instruction``/``input``/``output``, e.g. arazd/tulu_stanford_alpaca) and ``conversations``
  (ShareGPT ``from``/``value`` turns, teknium/OpenHermes-2.5), read with ``datasets.load_dataset``.

Rendering: the tokenizer's chat template when it has one, else a plain template (``PlainTemplate``). Labels come
from character spans of the assistant turns in the rendered text, mapped onto tokens with the fast tokenizer's
offsets, so prompt and response are tokenized together exactly as the model will see them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lmcal.data import arithmetic

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")
FORMATS = ("messages", "alpaca", "conversations")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}

Conversation = list[dict[str, str]]


# ------------------------------------------------------------------------------------------ record formats


def alpaca_to_messages(record: dict[str, Any]) -> Conversation:
    """Alpaca ``instruction``/``input``/``output`` → one user and one assistant turn.

    A non-empty ``input`` follows the instruction after a blank line (the Alpaca prompt's layout).
    """
    for key in ("instruction", "output"):
        if key not in record:
            raise ValueError(f"record: alpaca format needs {key!r}, got keys {sorted(record)}")
    user = str(record["instruction"]).strip()
    extra = str(record.get("input") or "").strip()
    if extra:
        user = f"{user}\n\n{extra}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": str(record["output"])}]


def sharegpt_to_messages(record: dict[str, Any]) -> Conversation:
    """ShareGPT ``conversations`` ([{"from": "human"|"gpt"|"system", "value": ...}]) → messages."""
    turns = record.get("conversations")
    if turns is None:
        raise ValueError(f"record: conversations format needs 'conversations', got keys {sorted(record)}")
    out = []
    for i, turn in enumerate(_as_list(turns)):
        who = str(turn.get("from", "")).lower()
        if who not in SHAREGPT_ROLES:
            raise ValueError(f"record: turn {i} has unknown speaker {turn.get('from')!r}")
        out.append({"role": SHAREGPT_ROLES[who], "content": str(turn.get("value") or "")})
    return out


def messages_to_messages(record: dict[str, Any]) -> Conversation:
    """Tulu ``messages`` ([{"role", "content"}]) → messages (copied, roles checked)."""
    msgs = record.get("messages")
    if msgs is None:
        raise ValueError(f"record: messages format needs 'messages', got keys {sorted(record)}")
    return [{"role": str(m["role"]), "content": str(m["content"] or "")} for m in _as_list(msgs)]


CONVERTERS = {"messages": messages_to_messages, "alpaca": alpaca_to_messages,
              "conversations": sharegpt_to_messages}


def detect_format(columns: Iterable[str]) -> str:
    """Which of ``FORMATS`` a table's columns hold (messages wins when several are present)."""
    cols = set(columns)
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "conversations"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    raise ValueError(f"columns: cannot tell the instruction format from {sorted(cols)} (expected one of {FORMATS})")


def check_conversation(messages: Conversation) -> Conversation:
    """Raise ValueError unless roles are known and at least one assistant turn follows a user turn."""
    if not messages:
        raise ValueError("messages: empty conversation")
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise ValueError(f"messages: turn {i} has role {m.get('role')!r}, expected one of {ROLES}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("messages: no assistant turn, so nothing would carry a label")
    return messages


def _as_list(value: Any) -> list:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, str):
        return json.loads(value)
    return list(value)


def load_instruction_data(source: str, *, fmt: str = "auto", split: str = "train", revision: str | None = None,
                          name: str | None = None, max_examples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Instruction conversations from a hub dataset id (pinned ``revision``) or a local json/jsonl/parquet file.

    Returns a DataFrame ``conv_id, messages`` (messages as a JSON string) in dataset order, or a seeded sample of
    ``max_examples`` rows kept in dataset order.
    """
    import datasets

    path = Path(os.path.expanduser(source))
    if path.exists():
        files = [str(path)] if path.is_file() else sorted(
            str(p) for p in path.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet"))
        if not files:
            raise ValueError(f"source: no json/jsonl/parquet files under {source}")
        builder = "parquet" if files[0].endswith(".parquet") else "json"
        ds = datasets.load_dataset(builder, data_files=files, split="train")
    else:
        ds = datasets.load_dataset(source, name, split=split, revision=revision)
    fmt = detect_format(ds.column_names) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected 'auto' or one of {FORMATS}, got {fmt!r}")
    idx = np.arange(len(ds))
    if max_examples is not None and max_examples < len(ds):
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), max_examples, replace=False))
    rows = []
    for i in idx.tolist():
        record = ds[i]
        msgs = check_conversation(CONVERTERS[fmt](record))
        rows.append({"conv_id": str(record.get("id", f"{path.name if path.exists() else source}:{i}")),
                     "messages": json.dumps(msgs, ensure_ascii=False)})
    return pd.DataFrame(rows, columns=["conv_id", "messages"])


# ------------------------------------------------------------------------------------- offline task data


def qa_conversations(questions: Sequence[str], answers: Sequence[str], ids: Sequence[str]) -> pd.DataFrame:
    """Single-turn conversations (user asks, assistant answers with the bare answer)."""
    rows = [{"conv_id": i, "messages": json.dumps([{"role": "user", "content": q},
                                                    {"role": "assistant", "content": a}], ensure_ascii=False)}
            for q, a, i in zip(questions, answers, ids)]
    return pd.DataFrame(rows, columns=["conv_id", "messages"])


def country_fact_conversations(eval_fraction: float = 0.5, split_seed: int = 0,
                               fields: Sequence[str] | None = None, phrasing_seeds: Sequence[int] = (0,),
                               max_examples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Q/A conversations from the SFT side of the country-fact split (no evaluation country appears).

    Each phrasing seed gives every SFT fact one more question wording (``lmcal.data.evalsets.synthetic.country_facts``); the
    answer is the fact's primary answer, exactly the string the evaluation offers as a choice.
    """
    from lmcal.data.evalsets import synthetic as evalsets

    fields = tuple(fields or evalsets.DEFAULT_FIELDS)
    frames = []
    for s in phrasing_seeds:
        sft, _ = evalsets.split_facts(evalsets.country_facts(int(s), fields), eval_fraction, split_seed)
        frames.append(sft.assign(conv_id=sft["fact_id"] + f"#p{s}"))
    facts = pd.concat(frames, ignore_index=True).drop_duplicates(subset=["question", "answer"])
    facts = _sample(facts, max_examples, seed)
    out = qa_conversations(facts["question"].tolist(), facts["answer"].astype(str).tolist(), facts["conv_id"].tolist())
    out["country"] = facts["country"].to_numpy()
    return out


def arithmetic_conversations(n_examples: int, seed: int = 0, max_operand: int = 99,
                             ops: Sequence[str] = arithmetic.OP_NAMES,
                             exclude_questions: Iterable[str] = ()) -> pd.DataFrame:
    """Seeded "What is a op b?" → "c" pairs from the evaluation's distribution, minus ``exclude_questions``.

    Problems are drawn as in ``lmcal.data.evalsets.synthetic.arithmetic_evalset`` (``lmcal.data.arithmetic``:
    operands 1..max_operand, subtraction non-negative); questions are unique and never one the evaluation asks.
    """
    if n_examples < 1:
        raise ValueError(f"n_examples: expected >= 1, got {n_examples}")
    if max_operand < 2:
        raise ValueError(f"max_operand: expected >= 2, got {max_operand}")
    ops = arithmetic.check_ops(ops)
    excluded = set(exclude_questions)
    possible = {arithmetic.symbol_question(op, max(a, b), min(a, b)) if op == "sub" else
                arithmetic.symbol_question(op, a, b)
                for op in ops for a in range(1, max_operand + 1) for b in range(1, max_operand + 1)}
    available = len(possible - excluded)
    if n_examples > available:
        raise ValueError(f"n_examples: {n_examples} is more than the {available} questions left after excluding "
                         f"the evaluation's (max_operand={max_operand}, ops={list(ops)})")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    questions, answers = [], []
    while len(questions) < n_examples:
        op, a, b = arithmetic.draw_problem(rng, ops, 1, max_operand + 1)
        q = arithmetic.symbol_question(op, a, b)
        if q in excluded or q in seen:
            continue
        seen.add(q)
        questions.append(q)
        answers.append(str(arithmetic.apply_op(op, a, b)))
    return qa_conversations(questions, answers, [f"arith:{seed}:{i}" for i in range(n_examples)])


def _sample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or n >= len(df):
        return df.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(df), n, replace=False))
    return df.iloc[keep].reset_index(drop=True)


def build_instruction_data(spec: dict[str, Any], eval_items: pd.DataFrame | None = None) -> pd.DataFrame:
    """Conversations for one ``sft.instruction_data`` entry (see ``workflow/schemas/sft.schema.yaml``).

    ``kind``: ``countries`` (needs the evaluation split's ``eval_fraction``/``split_seed``/``fields``), ``facts``
    (the knowledge world's SFT side; ``settings``),
    ``arithmetic`` (``eval_items``' questions are excluded) or ``hub`` (``path`` or ``hub_id``).
    """
    kind = spec.get("kind")
    n, seed = spec.get("max_examples"), int(spec.get("seed", 0))
    if kind == "countries":
        return country_fact_conversations(
            eval_fraction=float(spec.get("eval_fraction", 0.5)), split_seed=int(spec.get("split_seed", 0)),
            fields=spec.get("fields"), phrasing_seeds=spec.get("phrasing_seeds", [0]), max_examples=n, seed=seed)
    if kind == "facts":  # SFT side of the knowledge world (lmcal.data.factworld); settings = the facts: block
        from lmcal.data import factworld

        return factworld.fact_conversations(spec.get("settings"), phrasing_seeds=spec.get("phrasing_seeds", [0]),
                                            max_examples=n, seed=seed)
    if kind == "arithmetic":
        exclude = [] if eval_items is None else eval_items["question"].astype(str).tolist()
        return arithmetic_conversations(int(n or 2000), seed=seed, max_operand=int(spec.get("max_operand", 99)),
                                        ops=spec.get("ops", arithmetic.OP_NAMES), exclude_questions=exclude)
    if kind == "hub":
        source = spec.get("path") or spec.get("hub_id")
        if not source:
            raise ValueError("path/hub_id: hub instruction data needs a local path or a hub id")
        return load_instruction_data(str(source), fmt=spec.get("format", "auto"), split=spec.get("split", "train"),
                                     revision=spec.get("revision"), name=spec.get("hub_config"),
                                     max_examples=n, seed=seed)
    raise ValueError(f"kind: expected countries, facts, arithmetic or hub, got {kind!r}")


# ----------------------------------------------------------------------------------------- tokenization


@dataclass(frozen=True)
class PlainTemplate:
    """Turn formats for tokenizers without a chat template; ``{content}`` is the message text.

    The assistant turn is followed by the EOS token (labelled, so the model learns to stop).
    """

    system: str = "{content}\n\n"
    user: str = "### Instruction:\n{content}\n\n### Response:\n"
    assistant: str = "{content}"
    separator: str = "\n\n"

    def __post_init__(self) -> None:
        for role in ROLES:
            if "{content}" not in getattr(self, role):
                raise ValueError(f"template.{role}: must contain '{{content}}', got {getattr(self, role)!r}")


def render_plain(messages: Conversation, template: PlainTemplate, eos: str) -> tuple[str, list[tuple[int, int]]]:
    """Text of a conversation under ``template`` and the character spans of its assistant turns (with EOS)."""
    text, spans = "", []
    for i, m in enumerate(messages):
        piece = getattr(template, m["role"]).format(content=m["content"])
        if m["role"] == "assistant":
            piece += eos
            spans.append((len(text), len(text) + len(piece)))
        text += piece
        if m["role"] == "assistant" and i + 1 < len(messages):
            text += template.separator
    return text, spans


def render_chat(tokenizer, messages: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """Text under the tokenizer's chat template and the spans of the assistant turns.

    A turn's span runs from the end of the prefix rendered with the generation prompt to the end of the prefix
    that includes the turn (so it holds the end-of-turn marker). Each prefix must be a prefix of the full text;
    templates that rewrite earlier turns are refused.
    """
    def render(msgs: Conversation, gen: bool) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    text = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start_text = render(messages[:i], True) if i else ""
        end_text = render(messages[: i + 1], False)
        if not text.startswith(start_text) or not text.startswith(end_text):
            raise ValueError("chat template: a rendered prefix is not a prefix of the full conversation")
        spans.append((len(start_text), len(end_text)))
    return text, spans


def tokenize_with_spans(tokenizer, text: str, spans: Sequence[tuple[int, int]], add_special_tokens: bool,
                        max_length: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels copy the ids of tokens overlapping a span and are IGNORE_INDEX elsewhere.

    Overlap (rather than containment) labels a token such as " Paris" whose leading space belongs to the prompt:
    it is the token the model must produce. Special tokens written in the text (EOS, ``<|im_end|>``) carry their
    character offsets, so they are labelled like any other token inside a span; ones the tokenizer adds itself
    (BOS) have empty offsets and never are. Sequences longer than ``max_length`` are cut at the end.
    """
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for k, (a, b) in enumerate(offsets):
        if b > a and any(a < e and b > s for s, e in spans):
            labels[k] = ids[k]
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


def encode_conversation(tokenizer, messages: Conversation, *, template: PlainTemplate | None = None,
                        max_length: int | None = None, use_chat_template: bool | None = None
                        ) -> tuple[list[int], list[int]]:
    """Token ids and labels of one conversation (loss on assistant turns only).

    ``use_chat_template=None`` uses the tokenizer's chat template when it has one, else ``template``
    (default ``PlainTemplate()``).
    """
    check_conversation(messages)
    chat = bool(getattr(tokenizer, "chat_template", None)) if use_chat_template is None else use_chat_template
    if chat:
        text, spans = render_chat(tokenizer, messages)
        return tokenize_with_spans(tokenizer, text, spans, add_special_tokens=False, max_length=max_length)
    if tokenizer.eos_token is None:
        raise ValueError("tokenizer: no EOS token to end assistant turns with")
    text, spans = render_plain(messages, template or PlainTemplate(), tokenizer.eos_token)
    return tokenize_with_spans(tokenizer, text, spans, add_special_tokens=True, max_length=max_length)


def encode_dataset(tokenizer, conversations: pd.DataFrame, *, template: PlainTemplate | None = None,
                   max_length: int | None = None, use_chat_template: bool | None = None) -> list[dict]:
    """Encode every conversation (``messages`` column, JSON strings or lists); drop ones left without labels
    after truncation. Returns dicts ``{"input_ids", "labels"}``."""
    out = []
    for msgs in conversations["messages"]:
        msgs = json.loads(msgs) if isinstance(msgs, str) else _as_list(msgs)
        ids, labels = encode_conversation(tokenizer, msgs, template=template, max_length=max_length,
                                          use_chat_template=use_chat_template)
        if any(x != IGNORE_INDEX for x in labels[1:]):  # position 0 is never a prediction target
            out.append({"input_ids": ids, "labels": labels})
    if not out:
        raise ValueError("conversations: no example keeps a labelled token (max_length too small?)")
    return out


def collate(examples: Sequence[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids`` (pad_id), ``attention_mask`` and ``labels`` (IGNORE_INDEX)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
        labels[i, :n] = torch.tensor(e["labels"], dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
