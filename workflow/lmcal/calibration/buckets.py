"""Calibration by fact frequency: accuracy, confidence and ECE per mention-count bucket of the knowledge world.

Scored items (``item_id, conf, correct``) are joined with their buckets (``lmcal.data.factworld.item_buckets``);
each bucket's numbers come with a percentile bootstrap over that bucket's items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from lmcal.calibration.metrics import ece_draws, expected_calibration_error


def bucket_table(scored: pd.DataFrame, buckets: pd.DataFrame, *, order: Sequence[str], n_bins: int = 10,
                 binning: str = "width", n_boot: int = 200, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """One row per bucket of ``order`` that holds items: ``bucket, n_items, mean_mentions, accuracy, confidence,
    ece`` and ``<metric>_lo/_hi`` (``ci`` percentile bootstrap over the bucket's items, ``n_boot`` draws).

    ``scored``: item_id, conf, correct; ``buckets``: item_id, bucket, mentions. Every scored item must have a
    bucket (an unmatched id is an error, not a silent drop).
    """
    for col, df, name in (("conf", scored, "scored"), ("correct", scored, "scored"), ("bucket", buckets, "buckets")):
        if col not in df.columns:
            raise ValueError(f"{name}: missing column {col!r}")
    j = scored[["item_id", "conf", "correct"]].merge(buckets[["item_id", "bucket", "mentions"]], on="item_id",
                                                     how="left", validate="one_to_one")
    if j["bucket"].isna().any():
        raise ValueError(f"buckets: no bucket for item {j.loc[j['bucket'].isna(), 'item_id'].iloc[0]!r}")
    unknown = sorted(set(j["bucket"]) - set(order))
    if unknown:
        raise ValueError(f"buckets: labels {unknown} are not in order {list(order)}")
    rng = np.random.default_rng(seed)
    q = [(1 - ci) / 2, (1 + ci) / 2]
    rows = []
    for label in order:
        g = j[j["bucket"] == label]
        if not len(g):
            continue
        conf, correct = g["conf"].to_numpy(float), g["correct"].to_numpy(bool)
        row = {"bucket": label, "n_items": len(g), "mean_mentions": float(g["mentions"].mean()),
               "accuracy": float(correct.mean()), "confidence": float(conf.mean()),
               "ece": expected_calibration_error(conf, correct, n_bins, binning)}
        idx = rng.integers(0, len(g), size=(n_boot, len(g)))
        draws = {"accuracy": correct[idx].mean(axis=1), "confidence": conf[idx].mean(axis=1),
                 "ece": ece_draws(conf, correct, idx, n_bins, binning)}
        for k, d in draws.items():
            row[f"{k}_lo"], row[f"{k}_hi"] = (float(v) for v in np.quantile(d, q))
        rows.append(row)
    return pd.DataFrame(rows)


def rises_with_frequency(table: pd.DataFrame, order: Sequence[str], metric: str = "accuracy") -> bool:
    """Whether ``metric`` is non-decreasing along ``order`` over the buckets present (the world's sanity check)."""
    values = table.set_index("bucket").reindex([b for b in order if b in set(table["bucket"])])[metric].to_numpy()
    return bool(len(values) >= 2 and np.all(np.diff(values) >= 0))
