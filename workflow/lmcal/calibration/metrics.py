"""Calibration metrics for multiple-choice predictions (numpy only).

Inputs are per-item probability vectors over the item's answer choices (``probs``; items may have different
numbers of choices, e.g. ARC has 3-5) and the gold choice index (``gold``). The top-label confidence of an item
is ``conf = max_k p_k`` and the item is correct when ``argmax_k p_k == gold`` (ties go to the lowest index).

Binning convention. ``binning="width"``: ``n_bins`` equal-width bins on [0, 1] with edges
``e_m = m / n_bins``; bin m holds confidences in ``[e_m, e_{m+1})`` and the last bin is closed, ``[e_{M-1}, 1]``,
so a confidence of exactly 1 lands in the last bin and every value in [0, 1] in exactly one bin.
``binning="mass"`` (equal-mass / adaptive): items are sorted by confidence (stable sort, so ties keep their input
order) and split into ``n_bins`` consecutive groups whose sizes differ by at most one (``np.array_split``); a bin's
edges are the smallest and largest confidence it holds.

With bins B_m over n items:
    ECE    = sum_m (|B_m| / n) * |acc(B_m) - conf(B_m)|
    RMS-CE = sqrt(sum_m (|B_m| / n) * (acc(B_m) - conf(B_m))^2)
where acc is the fraction correct and conf the mean confidence in the bin; empty bins contribute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

BINNINGS = ("width", "mass")

ProbsLike = np.ndarray | Sequence[Sequence[float]]


def as_prob_list(probs: ProbsLike) -> list[np.ndarray]:
    """Return ``probs`` as a list of 1-D float64 arrays, checking each is a probability vector."""
    if isinstance(probs, np.ndarray) and probs.ndim == 2:
        rows = [np.asarray(r, dtype=np.float64) for r in probs]
    else:
        rows = [np.asarray(r, dtype=np.float64).reshape(-1) for r in probs]
    if not rows:
        raise ValueError("probs: need at least one item")
    for i, r in enumerate(rows):
        if r.size < 1 or np.any(~np.isfinite(r)) or np.any(r < 0) or abs(r.sum() - 1.0) > 1e-6:
            raise ValueError(f"probs: item {i} is not a probability vector (non-negative, sums to 1): {r}")
    return rows


def _check_gold(gold: Sequence[int] | np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    gold = np.asarray(gold)
    if gold.shape != (len(rows),):
        raise ValueError(f"gold: expected shape ({len(rows)},), got {gold.shape}")
    if not np.issubdtype(gold.dtype, np.integer):
        raise ValueError(f"gold: expected integer choice indices, got dtype {gold.dtype}")
    sizes = np.array([r.size for r in rows])
    if np.any(gold < 0) or np.any(gold >= sizes):
        bad = int(np.flatnonzero((gold < 0) | (gold >= sizes))[0])
        raise ValueError(f"gold: index {gold[bad]} of item {bad} is outside its {sizes[bad]} choices")
    return gold.astype(np.int64)


def top_label(probs: ProbsLike, gold: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(conf, pred, correct)``: max probability, argmax choice and whether it equals ``gold``."""
    rows = as_prob_list(probs)
    gold = _check_gold(gold, rows)
    pred = np.array([int(np.argmax(r)) for r in rows], dtype=np.int64)
    conf = np.array([r[p] for r, p in zip(rows, pred)], dtype=np.float64)
    return conf, pred, pred == gold


def _check_conf(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct).reshape(-1)
    if conf.size == 0:
        raise ValueError("conf: need at least one item")
    if correct.shape != conf.shape:
        raise ValueError(f"correct: expected shape {conf.shape}, got {correct.shape}")
    if np.any(~np.isfinite(conf)) or np.any(conf < 0) or np.any(conf > 1):
        raise ValueError("conf: confidences must lie in [0, 1]")
    return conf, correct.astype(np.float64)


def assign_bins(conf: np.ndarray, n_bins: int = 10, binning: str = "width") -> np.ndarray:
    """Bin index in ``[0, n_bins)`` of each confidence, under the module's edge convention."""
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: expected a positive integer, got {n_bins!r}")
    if binning not in BINNINGS:
        raise ValueError(f"binning: expected one of {BINNINGS}, got {binning!r}")
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    if binning == "width":
        # floor(conf * M) puts conf in [m/M, (m+1)/M); clipping closes the last bin at 1.0.
        return np.minimum(np.floor(conf * n_bins).astype(np.int64), n_bins - 1)
    order = np.argsort(conf, kind="stable")
    bins = np.empty(conf.size, dtype=np.int64)
    for m, idx in enumerate(np.array_split(order, n_bins)):
        bins[idx] = m
    return bins


def reliability_table(
    conf: np.ndarray, correct: np.ndarray, n_bins: int = 10, binning: str = "width"
) -> pd.DataFrame:
    """Per-bin reliability-diagram data.

    Columns: ``bin``, ``lower``, ``upper`` (bin edges; for equal-mass bins the min/max confidence held),
    ``count``, ``confidence`` (mean conf), ``accuracy`` (fraction correct), ``gap`` (accuracy - confidence).
    Every bin appears; empty bins have count 0 and NaN statistics.
    """
    conf, correct = _check_conf(conf, correct)
    bins = assign_bins(conf, n_bins, binning)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / count
        acc = np.bincount(bins, weights=correct, minlength=n_bins) / count
    if binning == "width":
        lower = np.arange(n_bins) / n_bins
        upper = np.arange(1, n_bins + 1) / n_bins
    else:
        lower = np.array([conf[bins == m].min() if count[m] else np.nan for m in range(n_bins)])
        upper = np.array([conf[bins == m].max() if count[m] else np.nan for m in range(n_bins)])
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": lower,
            "upper": upper,
            "count": count,
            "confidence": mean_conf,
            "accuracy": acc,
            "gap": acc - mean_conf,
        }
    )


def _bin_gaps(conf, correct, n_bins, binning) -> tuple[np.ndarray, np.ndarray]:
    table = reliability_table(conf, correct, n_bins, binning)
    filled = table[table["count"] > 0]
    weight = filled["count"].to_numpy() / table["count"].sum()
    return weight, filled["gap"].to_numpy()


def expected_calibration_error(
    conf: np.ndarray, correct: np.ndarray, n_bins: int = 10, binning: str = "width"
) -> float:
    """ECE = sum_m (|B_m|/n) |acc(B_m) - conf(B_m)| (a probability, in [0, 1])."""
    weight, gap = _bin_gaps(conf, correct, n_bins, binning)
    return float(np.sum(weight * np.abs(gap)))


def ece_draws(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int = 10,
              binning: str = "width") -> np.ndarray:
    """``expected_calibration_error(conf[i], correct[i])`` for every row ``i`` of ``idx`` (bootstrap draws).

    With equal-width bins an item's bin does not depend on the draw, so all draws are one ``bincount``:
    ECE = sum_m |sum_B(correct) - sum_B(conf)| / n. Equal-mass bins are re-cut per draw (a loop).
    """
    conf, correct = _check_conf(conf, correct)
    idx = np.asarray(idx, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"idx: expected a (draws, items) array of indices, got shape {idx.shape}")
    if binning != "width":
        return np.array([expected_calibration_error(conf[i], correct[i], n_bins, binning) for i in idx])
    bins = assign_bins(conf, n_bins, binning)[idx] + n_bins * np.arange(len(idx))[:, None]
    size = len(idx) * n_bins
    gap = (np.bincount(bins.ravel(), weights=correct[idx].ravel(), minlength=size)
           - np.bincount(bins.ravel(), weights=conf[idx].ravel(), minlength=size))
    return np.abs(gap.reshape(len(idx), n_bins)).sum(axis=1) / idx.shape[1]


def rms_calibration_error(
    conf: np.ndarray, correct: np.ndarray, n_bins: int = 10, binning: str = "width"
) -> float:
    """RMS-CE = sqrt(sum_m (|B_m|/n) (acc(B_m) - conf(B_m))^2) (a probability, in [0, 1])."""
    weight, gap = _bin_gaps(conf, correct, n_bins, binning)
    return float(np.sqrt(np.sum(weight * gap**2)))


def brier_score(probs: ProbsLike, gold: Sequence[int] | np.ndarray) -> float:
    """Multiclass Brier score: mean over items of sum_k (p_k - 1[k = gold])^2, in [0, 2]."""
    rows = as_prob_list(probs)
    gold = _check_gold(gold, rows)
    per_item = [np.sum(r**2) - 2 * r[g] + 1.0 for r, g in zip(rows, gold)]
    return float(np.mean(per_item))


def gold_nll(probs: ProbsLike, gold: Sequence[int] | np.ndarray) -> float:
    """Mean negative log-probability of the gold choice, in nats (p = 0 is floored at the smallest float)."""
    rows = as_prob_list(probs)
    gold = _check_gold(gold, rows)
    p_gold = np.array([r[g] for r, g in zip(rows, gold)])
    return float(-np.mean(np.log(np.maximum(p_gold, np.finfo(np.float64).tiny))))


def accuracy(probs: ProbsLike, gold: Sequence[int] | np.ndarray) -> float:
    """Fraction of items whose argmax choice is the gold one."""
    return float(np.mean(top_label(probs, gold)[2]))


def all_choice_pairs(probs: ProbsLike, gold: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to one ``(p, is_gold)`` pair per (item, choice), for calibration over every choice's probability
    (the "confidence in each answer choice" reading of a reliability diagram) rather than the top label only."""
    rows = as_prob_list(probs)
    gold = _check_gold(gold, rows)
    p = np.concatenate(rows)
    is_gold = np.concatenate([np.arange(r.size) == g for r, g in zip(rows, gold)])
    return p, is_gold


# The calibration metric names, in one place: what ``calibration_metrics`` computes and what the study summary,
# the SFT tables and figures and the V/D cells read. name -> axis/table label.
SCORE_LABELS = {
    "accuracy": "accuracy",
    "chance_accuracy": "chance accuracy",
    "mean_confidence": "mean confidence",
    "ece": "ECE",
    "rms_ce": "RMS-CE",
    "ece_all_choices": "ECE (all choices)",
    "brier": "Brier",
    "nll": "NLL",
}
SCORES = tuple(SCORE_LABELS)
HEADLINE = ("accuracy", "ece", "rms_ce", "brier")  # the before/after columns of the SFT table and figure


def calibration_metrics(
    probs: ProbsLike, gold: Sequence[int] | np.ndarray, n_bins: int = 10, binning: str = "width"
) -> dict[str, float | int | str]:
    """All summary metrics of one model on one evaluation set, as a flat JSON-ready dict.

    ``ece``/``rms_ce`` use top-label confidence; ``ece_all_choices`` bins every choice's probability against
    whether that choice is gold. ``chance_accuracy`` is the mean of 1/(number of choices).
    """
    rows = as_prob_list(probs)
    conf, _, correct = top_label(rows, gold)
    p_all, is_gold = all_choice_pairs(rows, gold)
    scores = {
        "accuracy": float(np.mean(correct)),
        "chance_accuracy": float(np.mean([1.0 / r.size for r in rows])),
        "mean_confidence": float(np.mean(conf)),
        "ece": expected_calibration_error(conf, correct, n_bins, binning),
        "rms_ce": rms_calibration_error(conf, correct, n_bins, binning),
        "ece_all_choices": expected_calibration_error(p_all, is_gold, n_bins, binning),
        "brier": brier_score(rows, gold),
        "nll": gold_nll(rows, gold),
    }
    return {"n_items": len(rows), "n_bins": int(n_bins), "binning": binning, **{k: scores[k] for k in SCORES}}


SUMMARY_KEYS = ("model", "evalset", "n_items", *SCORES, "n_bins", "binning", "method", "normalization", "chat",
                "seconds")


def summarize_runs(metrics: Sequence[dict]) -> dict:
    """Study summary from per-(model, evalset) metric dicts: every run's headline numbers and per-model means
    over the evaluation sets (unweighted), for ``results/calibration/summary.json``."""
    if not metrics:
        raise ValueError("metrics: need at least one (model, evalset) result")
    runs = [{k: m[k] for k in SUMMARY_KEYS if k in m} for m in metrics]
    frame = pd.DataFrame(runs)
    numeric = [k for k in SCORES if k in frame]
    per_model = frame.groupby("model")[numeric].mean().to_dict(orient="index")
    return {
        "n_runs": len(runs),
        "models": sorted(frame["model"].unique().tolist()),
        "evalsets": sorted(frame["evalset"].unique().tolist()),
        "runs": runs,
        "per_model": per_model,
    }
