"""The one schema of multiple-choice evaluation sets: columns, checks, seeded subsampling.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCHEMA = ("item_id", "question", "choices", "gold", "source", "category")
KINDS = ("countries", "facts", "arithmetic", "mmlu", "hellaswag", "arc")


def subsample(items: pd.DataFrame, n_items: int | None, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of ``n_items`` rows in their original order (all rows when ``n_items`` is None)."""
    if n_items is None or n_items >= len(items):
        return items.reset_index(drop=True)
    if n_items < 1:
        raise ValueError(f"n_items: expected >= 1, got {n_items}")
    keep = np.sort(np.random.default_rng(seed).choice(len(items), n_items, replace=False))
    return items.iloc[keep].reset_index(drop=True)


def check_items(items: pd.DataFrame) -> pd.DataFrame:
    """Validate the evaluation-set schema (columns, unique ids, ≥ 2 choices, gold in range); return it."""
    missing = [c for c in SCHEMA if c not in items.columns]
    if missing:
        raise ValueError(f"items: missing columns {missing}")
    if items["item_id"].duplicated().any():
        raise ValueError(f"items: duplicate item_id {items['item_id'][items['item_id'].duplicated()].iloc[0]!r}")
    for row in items.itertuples(index=False):
        if len(row.choices) < 2 or not 0 <= int(row.gold) < len(row.choices):
            raise ValueError(f"items: {row.item_id!r} has gold {row.gold} for {len(row.choices)} choices")
    return items[list(SCHEMA)].reset_index(drop=True)
