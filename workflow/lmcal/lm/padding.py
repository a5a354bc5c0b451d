"""Padding token rows into batches: the one pad-id fallback, left padding (prompts that continue) and right padding.

Padded positions are always masked out (``attention_mask`` = 0, never read), so the pad id only has to be a valid
token id; it never changes a log-probability (tests/test_likelihood.py checks 0 vs EOS vs the tokenizer's own).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id (always a valid id), else 0."""
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def _check_rows(rows: Sequence[Sequence[int]], name: str) -> None:
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError(f"{name}: need a non-empty list of non-empty token lists")


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) for left-padded rows; positions count real tokens only.

    Every row ends at the last column, so generation and last-position scoring read one column for all rows, and
    position ids from the mask keep padding from shifting a row's positions.
    """
    _check_rows(prompts, "prompts")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    pos = (mask.cumsum(dim=1) - 1).clamp_(min=0)
    return ids, mask, pos


def right_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) for right-padded rows (row i starts at column 0)."""
    _check_rows(rows, "rows")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask
