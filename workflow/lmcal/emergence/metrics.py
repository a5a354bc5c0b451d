"""Re-scoring: the stored outputs of ``lmcal.emergence.outputs`` → per-item metrics → aggregates with CIs.

Hard metrics (exact match, multiple-choice grade) and soft ones (token edit distance, per-digit accuracy,
target log-probability, Brier score, choice-normalised p(correct)) are computed from the *same* stored
generations and log-probabilities, so any difference between their scaling curves is due to the metric alone
(Schaeffer et al. 2023). Log-probabilities are natural-log (nats).
"""

from __future__ import annotations

from collections.abc import Sequence

import editdistance
import numpy as np
import pandas as pd
from scipy import stats

from lmcal.emergence.tasks import extract_answer

METRICS = {  # name: (higher is better, bounded in [0, 1] with a chance level)
    "exact_match": True,
    "edit_distance": False,
    "norm_edit_distance": False,
    "per_digit_acc": True,
    "target_logprob": True,
    "per_token_ce": False,
    "p_exact": True,
    "mc_grade": True,
    "brier": False,
    "p_correct": True,
    "logp_vocab_correct": True,
}
# Roles of the metrics in the report: hard 0/1 grades per item (Clopper-Pearson intervals; the curves that look
# sharp) and the soft ones scored from the same outputs (Schaeffer et al. 2023).
SHARP = ("exact_match", "mc_grade")
SOFT = ("norm_edit_distance", "per_digit_acc", "target_logprob", "per_token_ce", "brier", "p_correct")
LABELS = {  # axis labels of the figures
    "exact_match": "exact match",
    "edit_distance": "token edit distance",
    "norm_edit_distance": "token edit distance / L",
    "per_digit_acc": "per-digit acc",
    "target_logprob": "log p(target) [nats]",
    "per_token_ce": "per-token CE [nats]",
    "p_exact": "p(exact match) under sampling",
    "mc_grade": "MC grade",
    "brier": "Brier",
    "p_correct": "p(correct | choices)",
    "logp_vocab_correct": "log p(correct choice) [nats]",
}


def exact_match(pred: str, gold: str) -> float:
    return float(pred.strip() == gold.strip())


def token_edit_distance(pred_ids: Sequence[int], gold_ids: Sequence[int]) -> int:
    """Levenshtein distance between token-id sequences (insertions, deletions, substitutions cost 1)."""
    return int(editdistance.eval(list(pred_ids), list(gold_ids)))


def per_digit_accuracy(pred: str, gold: str) -> float:
    """Share of right-aligned character positions that agree, over max(len(pred), len(gold)).

    Right alignment compares units with units, tens with tens; dividing by the longer length makes missing
    and extra digits both count as errors ("1125" for "125" scores 3/4, "25" scores 2/3).
    """
    pred, gold = pred.strip(), gold.strip()
    width = max(len(pred), len(gold))
    if width == 0:
        return 1.0
    hits = sum(p == g for p, g in zip(reversed(pred), reversed(gold)))
    return hits / width


def choice_probabilities(choice_logprobs: Sequence[float]) -> np.ndarray:
    """Softmax over the choices' summed log-probabilities (probability renormalised over the options)."""
    lp = np.asarray(choice_logprobs, dtype=float)
    if lp.size == 0:
        raise ValueError("choice_logprobs: need at least one choice")
    p = np.exp(lp - lp.max())
    return p / p.sum()


def brier(probs: Sequence[float], gold: int) -> float:
    """Σ_i (p_i − y_i)² over the choices (0 = perfect, 2 = all mass on a wrong choice)."""
    p = np.asarray(probs, dtype=float)
    if not 0 <= gold < len(p):
        raise ValueError(f"gold: index {gold} out of range for {len(p)} choices")
    y = np.zeros_like(p)
    y[gold] = 1.0
    return float(((p - y) ** 2).sum())


def mc_grade(probs: Sequence[float], gold: int) -> float:
    """1 if the gold choice has the highest probability (first index wins ties), else 0."""
    return float(int(np.argmax(probs)) == gold)


def clopper_pearson(k, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact binomial (Clopper–Pearson) interval for k successes in n trials; works elementwise.

    lower = Beta(α/2; k, n−k+1) (0 when k = 0), upper = Beta(1−α/2; k+1, n−k) (1 when k = n).
    """
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("clopper_pearson: need 0 <= k <= n and n >= 1")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    alpha = 1 - ci
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


def score_outputs(outputs: pd.DataFrame) -> pd.DataFrame:
    """Per-item metrics from stored outputs (``lmcal.emergence.outputs.item_outputs`` columns).

    Keeps every non-list column of ``outputs`` and adds the METRICS columns; MC metrics are NaN for items
    without choices. ``p_exact`` = exp(target log-prob + STOP log-prob) is the probability that one
    temperature-1 sample is an exact match.
    """
    need = {"generation", "gen_ids", "target_ids", "target_logprobs", "stop_logprob", "answer", "format"}
    if missing := need - set(outputs.columns):
        raise ValueError(f"outputs: missing columns {sorted(missing)}")
    rows = []
    for r in outputs.itertuples(index=False):
        pred = extract_answer(r.generation, r.format)
        ed = token_edit_distance(r.gen_ids, r.target_ids)
        lp = np.asarray(r.target_logprobs, dtype=float)
        row = dict(
            pred_answer=pred,
            exact_match=exact_match(pred, r.answer),
            edit_distance=float(ed),
            norm_edit_distance=ed / max(len(r.target_ids), 1),
            per_digit_acc=per_digit_accuracy(pred, r.answer),
            target_len=len(r.target_ids),
            target_logprob=float(lp.sum()),
            per_token_ce=float(-lp.mean()) if lp.size else np.nan,
            p_exact=float(np.exp(lp.sum() + r.stop_logprob)),
            mc_grade=np.nan,
            brier=np.nan,
            p_correct=np.nan,
            logp_vocab_correct=np.nan,
            mc_conf=np.nan,
        )
        raw = getattr(
            r, "choice_logprobs", None
        )  # a list in memory, a NumPy array after a parquet round trip
        choices = [] if raw is None else list(raw)
        if len(choices) and getattr(r, "gold", -1) >= 0:
            p = choice_probabilities(choices)
            row.update(
                mc_grade=mc_grade(p, r.gold),
                brier=brier(p, r.gold),
                p_correct=float(p[r.gold]),
                logp_vocab_correct=float(choices[r.gold]),
                mc_conf=float(p.max()),
            )
        rows.append(row)
    keep = (
        [c for c in outputs.columns if not isinstance(outputs[c].iloc[0], (list, np.ndarray))]
        if len(outputs)
        else []
    )
    return pd.concat([outputs[keep].reset_index(drop=True), pd.DataFrame(rows)], axis=1)


def aggregate_scores(scores: pd.DataFrame, by: Sequence[str], ci: float = 0.95) -> pd.DataFrame:
    """Mean of every metric per group, with Clopper–Pearson bounds for exact match and MC grade and the
    standard error of the mean for the others (``<metric>_lo``/``_hi``, ``<metric>_sem``), plus n_items, the
    mean target length in tokens and the ECE of the MC confidences (``mc_ece``, 10 equal-width bins)."""
    from lmcal.calibration.metrics import expected_calibration_error

    by = list(by)
    if missing := set(by) - set(scores.columns):
        raise ValueError(f"by: columns {sorted(missing)} not in scores")
    rows = []
    for key, g in scores.groupby(by, sort=True, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)), n_items=len(g))
        for m in METRICS:
            v = g[m].dropna().to_numpy(dtype=float)
            row[m] = float(v.mean()) if v.size else np.nan
            row[f"{m}_sem"] = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else np.nan
            if m in SHARP and v.size:
                lo, hi = clopper_pearson(v.sum(), v.size, ci)
                row[f"{m}_lo"], row[f"{m}_hi"] = float(lo), float(hi)
        if "target_len" in g:
            row["target_len"] = float(g["target_len"].mean())
        mc = g.dropna(subset=["mc_conf"])
        row["mc_ece"] = expected_calibration_error(mc["mc_conf"], mc["mc_grade"]) if len(mc) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def pass_until_summary(samples: pd.DataFrame, by: Sequence[str], ci: float = 0.95) -> pd.DataFrame:
    """PassUntil estimates per group: mean per-item hit rate, pooled hits/samples with a Clopper–Pearson CI
    and the mean exact probability p_exact it estimates (columns pu, pu_pooled, pu_lo, pu_hi, p_exact)."""
    rows = []
    for key, g in samples.groupby(list(by), sort=True):
        k, n = int(g["n_hits"].sum()), int(g["n_samples"].sum())
        lo, hi = clopper_pearson(k, n, ci)
        rows.append(
            dict(
                zip(by, key if isinstance(key, tuple) else (key,)),
                pu=float((g["n_hits"] / g["n_samples"]).mean()),
                pu_pooled=k / n,
                pu_lo=float(lo),
                pu_hi=float(hi),
                n_hits=k,
                n_samples=n,
                n_items=len(g),
                p_exact=float(g["p_exact"].mean()),
            )
        )
    return pd.DataFrame(rows)
