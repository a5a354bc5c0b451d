"""MMLU, HellaSwag and ARC rows → the evaluation-set schema of ``lmcal.evalsets``.

Rows load with ``datasets.load_dataset`` (hub id, config, split, pinned revision) or from local parquet/jsonl
files in the hub's own layout, so the converters are tested offline on files of the same format.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.data.evalsets.schema import check_items


def load_records(
    source: str, *, config: str | None = None, split: str = "test", revision: str | None = None
) -> pd.DataFrame:
    """Raw rows of a dataset from a local file/directory (parquet, jsonl, json) or the Hugging Face hub.

    A local directory is read whole, restricted to files whose name contains ``split`` when any do (the hub's
    parquet export is laid out as ``<config>/<split>-00000-of-00001.parquet``).
    """
    path = Path(os.path.expanduser(source))
    if path.exists():
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json")
        )
        if path.is_dir():
            if config:
                files = [p for p in files if config in p.relative_to(path).parts[:-1]] or files
            files = [p for p in files if split in p.name] or files
        if not files:
            raise ValueError(f"source: no parquet/jsonl/json files under {source}")
        frames = []
        for p in files:
            if p.suffix == ".parquet":
                frames.append(pd.read_parquet(p))
            elif p.suffix in (".jsonl", ".json"):
                frames.append(pd.read_json(p, lines=p.suffix == ".jsonl"))
            else:
                raise ValueError(f"source: unsupported file type {p.suffix!r} ({p})")
        return pd.concat(frames, ignore_index=True)
    import datasets

    ds = datasets.load_dataset(source, config, split=split, revision=revision)
    return ds.to_pandas()


def _as_list(value: Any) -> list:
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value)


def mmlu_items(raw: pd.DataFrame, source: str = "mmlu") -> pd.DataFrame:
    """MMLU rows (``question``, ``choices`` list, ``answer`` int, optional ``subject``) → evaluation schema."""
    _require(raw, ("question", "choices", "answer"), source)
    return check_items(
        pd.DataFrame(
            {
                "item_id": [f"{source}:{i}" for i in range(len(raw))],
                "question": raw["question"].astype(str).str.strip(),
                "choices": [[str(c) for c in _as_list(cs)] for cs in raw["choices"]],
                "gold": raw["answer"].astype(np.int64),
                "source": source,
                "category": raw["subject"].astype(str) if "subject" in raw else "",
            }
        )
    )


def _hellaswag_clean(text: str) -> str:
    # lm-eval-harness preprocessing: WikiHow artefacts "[title]" and other bracketed tags, doubled spaces.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_items(raw: pd.DataFrame, source: str = "hellaswag") -> pd.DataFrame:
    """HellaSwag rows (``ctx_a``/``ctx_b`` or ``ctx``, ``endings``, ``label`` str) → evaluation schema.

    Rows without a label (the hidden test split) are dropped. The context is lm-eval's
    ``activity_label: ctx_a ctx_b.capitalize()``.
    """
    _require(raw, ("endings", "label"), source)
    raw = raw[raw["label"].astype(str).str.strip() != ""].reset_index(drop=True)
    if "ctx_a" in raw and "ctx_b" in raw:
        ctx = raw["ctx_a"].astype(str) + " " + raw["ctx_b"].astype(str).str.capitalize()
    else:
        _require(raw, ("ctx",), source)
        ctx = raw["ctx"].astype(str)
    label = raw["activity_label"].astype(str) if "activity_label" in raw else pd.Series([""] * len(raw))
    question = [_hellaswag_clean(f"{a}: {c}" if a else c) for a, c in zip(label, ctx)]
    ids = raw["ind"].astype(str) if "ind" in raw else pd.Series(range(len(raw))).astype(str)
    return check_items(
        pd.DataFrame(
            {
                "item_id": [f"{source}:{i}" for i in ids],
                "question": question,
                "choices": [[_hellaswag_clean(str(e)) for e in _as_list(es)] for es in raw["endings"]],
                "gold": raw["label"].astype(str).str.strip().astype(np.int64),
                "source": source,
                "category": label.to_numpy(),
            }
        )
    )


def arc_items(raw: pd.DataFrame, source: str = "arc_easy") -> pd.DataFrame:
    """ARC rows (``question``, ``choices`` {text, label}, ``answerKey``) → evaluation schema."""
    _require(raw, ("question", "choices", "answerKey"), source)
    choices, gold = [], []
    for i, (cs, key) in enumerate(zip(raw["choices"], raw["answerKey"])):
        labels = [str(x) for x in _as_list(cs["label"])]
        if str(key) not in labels:
            raise ValueError(f"{source}: row {i} answerKey {key!r} is not among labels {labels}")
        choices.append([str(t) for t in _as_list(cs["text"])])
        gold.append(labels.index(str(key)))
    ids = raw["id"].astype(str) if "id" in raw else pd.Series(range(len(raw))).astype(str)
    return check_items(
        pd.DataFrame(
            {
                "item_id": [f"{source}:{i}" for i in ids],
                "question": raw["question"].astype(str).str.strip(),
                "choices": choices,
                "gold": np.array(gold, dtype=np.int64),
                "source": source,
                "category": "",
            }
        )
    )


def _require(raw: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing} (have {list(raw.columns)})")


HUB_LOADERS = {"mmlu": mmlu_items, "hellaswag": hellaswag_items, "arc": arc_items}
