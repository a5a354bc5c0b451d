"""How a multiple-choice item becomes model input: prompt templates, chat wrapping, lettered choices, letter ids.

Scoring itself lives in ``lmcal.calibration.mcq`` (which re-exports these names) on top of the shared likelihood
engine ``lmcal.lm.likelihood``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
CHAT_MODES = ("never", "auto", "always")


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


PLAIN = PromptFormat()  # the default: DEFAULT_TEMPLATE, a space before each choice, no chat wrapping


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


def encode_context(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of a rendered prompt: with the tokenizer's special tokens (BOS) for plain prompts only."""
    # A chat-rendered prompt already holds its special tokens; adding them again would double the BOS.
    return list(tokenizer.encode(text, add_special_tokens=not chat))


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


def use_chat(tokenizer, chat_template: str) -> bool:
    """Resolve ``chat_template`` ("never", "auto" = if the tokenizer has one, "always") to a bool."""
    if chat_template not in CHAT_MODES:
        raise ValueError(f"chat_template: expected one of {CHAT_MODES}, got {chat_template!r}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "always" and not has:
        raise ValueError("chat_template: 'always' but the tokenizer has no chat template")
    return has if chat_template == "auto" else chat_template == "always"
