"""Per-step entropy curves of the calibrated samples (spec entropy-calibration §6, Figure 2-style).

Per (model, dataset) on the held-out eval documents of the calibrated run: the per-step entropy of the τ = 1
samples of the entropy study (its reference decode), of each method's calibrated samples, and the human per-step
log loss under p^ (the study's human scoring at τ = 1). Each curve is the mean over the sequences alive at a step
(`lmcal.entropy.analysis.alive_mean_curve`) and is EMA-smoothed with the entropy study's one factor
(``entropy_analysis.smoothing``), exactly like the study's own curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lmcal.entropy.analysis import alive_mean_curve, ema

CURVE_COLUMNS = ["model", "dataset", "series", "step", "mean", "n_alive", "smoothed"]
TAU1, HUMAN = "tau=1 entropy", "human log loss"


def calibrated_series(method: str) -> str:
    return f"{method} entropy"


def _eval_rows(df: pd.DataFrame, eval_ids: Sequence[str], what: str) -> pd.DataFrame:
    keep = {str(d) for d in eval_ids}
    sub = df[df["doc_id"].astype(str).isin(keep)]
    missing = keep - set(sub["doc_id"].astype(str))
    if missing:
        raise ValueError(f"{what} lacks eval document(s) {sorted(missing)[:3]}")
    return sub


def step_curves(records: Sequence[Mapping[str, Any]], calibrated: Mapping[tuple[str, str, str], pd.DataFrame],
                tau1: Mapping[tuple[str, str], pd.DataFrame], human: Mapping[tuple[str, str], pd.DataFrame], *,
                max_len: int | None, smoothing: float) -> pd.DataFrame:
    """Long table `CURVE_COLUMNS`: per (model, dataset) the τ = 1 and human curves once and one calibrated curve
    per method. ``records`` are the calibrated runs (their ``eval_doc_ids``); ``calibrated`` maps (model,
    dataset, method) to their samples, ``tau1``/``human`` map (model, dataset) to the study's tables."""
    parts, done = [], set()

    def add(model, dataset, series, values):
        curve = alive_mean_curve(values, max_len, name=f"{model}/{dataset}/{series}")
        curve["smoothed"] = ema(curve["mean"].to_numpy(), smoothing) if len(curve) else []
        parts.append(curve.assign(model=model, dataset=dataset, series=series))

    for r in records:
        key, ids = (r["model"], r["dataset"]), r["eval_doc_ids"]
        for table, what in ((calibrated, "calibrated samples"), (tau1, "tau=1 samples"), (human, "human scores")):
            if (key + (r["method"],) if table is calibrated else key) not in table:
                raise ValueError(f"step curves: no {what} for {'/'.join(key)} ({r['method']})")
        if key not in done:
            done.add(key)
            add(*key, TAU1, _eval_rows(tau1[key], ids, f"{key} tau=1 samples")["entropy"].tolist())
            add(*key, HUMAN, _eval_rows(human[key], ids, f"{key} human scores")["logloss"].tolist())
        add(*key, calibrated_series(r["method"]), calibrated[key + (r["method"],)]["entropy"].tolist())
    if not parts:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(parts, ignore_index=True)[CURVE_COLUMNS]


def curve_numbers(curves: pd.DataFrame, model: str, dataset: str, method: str) -> dict[str, float]:
    """Table columns from the raw per-step means: each series' mean over the first and the last quarter of its
    steps and the drift last − first (a curve that climbs is the derailing the calibration should damp)."""
    out = {}
    for prefix, series in (("tau1", TAU1), ("calibrated", calibrated_series(method)), ("human_logloss", HUMAN)):
        c = curves[(curves["model"] == model) & (curves["dataset"] == dataset) & (curves["series"] == series)]
        m = c.sort_values("step")["mean"].to_numpy(dtype=float)
        q = max(1, len(m) // 4)
        first, last = (float(np.mean(m[:q])), float(np.mean(m[-q:]))) if len(m) else (float("nan"),) * 2
        out.update({f"{prefix}_first_quarter": first, f"{prefix}_last_quarter": last,
                    f"{prefix}_drift": last - first})
    return out
