"""The emergence study's verdicts over seeds: "jump", "smooth", threshold size and the two-step forecast, each
decided on the seed-mean curve and again on every seed alone, as claim records (``lmcal.core.claims``).

A verdict from one seed can flip on another machine (float rounding of another instruction set moved the 1-digit
scratchpad threshold by a ladder size, issue 14), so every claim says how many seeds agree with the pooled one and
gives the min-max of its statistic over seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from lmcal.core.claims import claim

MIN_RISE = 0.1  # EM must rise by at least this much over the ladder to count as a jump
JUMP_RATIO = 0.5  # EM's early share below this fraction of the soft metrics' early shares = "late take-off"
SMOOTH_SHARE = 0.4  # a curve linear in ln N has early share 0.5; >= 0.4 = "has done much of its change early"
THRESHOLD_EM = 0.5  # threshold size: the smallest N whose exact match reaches this
SOFT = ("norm_edit_distance", "target_logprob")


def sharp_vs_smooth(em_table: pd.DataFrame, min_rise: float = MIN_RISE) -> dict:
    """Per component: does EM jump while edit distance and log-probability change smoothly on the same ladder?

    Uses the early share (``analysis.early_share``: share of the total change reached by the geometric middle
    of the sizes) and reports the emergence scores beside it. ``em_jumps_soft_smooth`` is True when EM rose by
    at least ``min_rise`` and its early share is below JUMP_RATIO of both soft metrics' early shares;
    ``soft_smooth`` when both soft metrics' early shares are at least SMOOTH_SHARE.
    """
    out = {}
    for comp, g in em_table.groupby("component"):
        t = g.set_index("metric")
        if not {"exact_match", *SOFT} <= set(t.index):
            continue
        sh = {m: float(t.loc[m, "early_share"]) for m in ("exact_match", *SOFT)}
        rise = float(t.loc["exact_match", "y_last"] - t.loc["exact_match", "y_first"])
        soft = min(sh["norm_edit_distance"], sh["target_logprob"])
        out[comp] = dict(
            em_rise=rise,
            em_early_share=sh["exact_match"],
            edit_distance_early_share=sh["norm_edit_distance"],
            logprob_early_share=sh["target_logprob"],
            em_score=float(t.loc["exact_match", "score"]),
            edit_distance_score=float(t.loc["norm_edit_distance", "score"]),
            logprob_score=float(t.loc["target_logprob", "score"]),
            em_jumps_soft_smooth=bool(
                rise >= min_rise and np.isfinite(soft) and sh["exact_match"] < JUMP_RATIO * soft
            ),
            soft_smooth=bool(np.isfinite(soft) and soft >= SMOOTH_SHARE),
        )
    return out


def complete_seeds(points: pd.DataFrame) -> list[int]:
    """Seeds trained at every size of the ladder: only these give a per-seed curve over the same sizes."""
    sizes = set(points["size"])
    return sorted(int(s) for s, g in points.groupby("seed") if set(g["size"]) == sizes)


def per_seed(points: pd.DataFrame, table_of: Callable[[pd.DataFrame], pd.DataFrame]) -> dict[int, dict]:
    """sharp_vs_smooth of each complete seed's own curve; ``table_of``: points → emergence table."""
    return {s: sharp_vs_smooth(table_of(points[points["seed"] == s])) for s in complete_seeds(points)}


def threshold_size(n_params, em, level: float = THRESHOLD_EM) -> float:
    """Smallest N whose exact match reaches ``level`` (NaN if none)."""
    n, em = np.asarray(n_params, dtype=float), np.asarray(em, dtype=float)
    hit = n[em >= level]
    return float(hit.min()) if len(hit) else float("nan")


def _span(values) -> list[float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return [float(v.min()), float(v.max())] if len(v) else None


def seed_table(points: pd.DataFrame, metrics=("exact_match", "norm_edit_distance", "target_logprob")) -> dict:
    """{component: [{size, n_params, n_seeds, metric: [mean, min, max], ...}]}: the emergence table over seeds."""
    out: dict = {}
    for (comp, size, n), g in points.groupby(["component", "size", "n_params"], sort=True):
        row = dict(size=size, n_params=int(n), n_seeds=int(g["seed"].nunique()))
        for m in metrics:
            v = g[m].to_numpy(float)
            row[m] = [float(v.mean()), float(v.min()), float(v.max())]
        out.setdefault(comp, []).append(row)
    return {c: sorted(rows, key=lambda r: r["n_params"]) for c, rows in out.items()}


def curve_claims(points: pd.DataFrame, pooled: dict, seeds: dict[int, dict]) -> list[dict]:
    """"jump", "smooth" and threshold-size claims per component, pooled verdict + per-seed verdicts."""
    out = []
    spread = f"min-max over {len(seeds)} seeds"
    for comp, v in sorted(pooled.items()):
        per = [s[comp] for s in seeds.values() if comp in s]
        out.append(claim(
            f"emergence.jump.{comp}",
            f"{comp}: exact match jumps while edit distance and log-probability change smoothly",
            v["em_early_share"], ci=_span(p["em_early_share"] for p in per), interval=spread,
            rule=f"jump if exact match rises by >= {MIN_RISE} over the ladder and its early share (share of the "
                 f"change reached at the geometric middle size) is < {JUMP_RATIO} x the smaller early share of "
                 "edit distance and log-probability; value = exact match early share of the seed-mean curve",
            verdict=v["em_jumps_soft_smooth"], seed_verdicts=[p["em_jumps_soft_smooth"] for p in per]))
        soft = min(v["edit_distance_early_share"], v["logprob_early_share"])
        out.append(claim(
            f"emergence.smooth.{comp}", f"{comp}: edit distance and log-probability improve smoothly with size",
            soft, ci=_span(min(p["edit_distance_early_share"], p["logprob_early_share"]) for p in per),
            interval=spread,
            rule=f"smooth if the early shares of edit distance and log-probability are both >= {SMOOTH_SHARE} "
                 "(a curve linear in ln N has 0.5); value = the smaller of the two on the seed-mean curve",
            verdict=v["soft_smooth"], seed_verdicts=[p["soft_smooth"] for p in per]))
        sub = points[points["component"] == comp]
        mean = sub.groupby("n_params")["exact_match"].mean()
        thr = threshold_size(mean.index, mean.to_numpy())
        per_thr = [threshold_size(g["n_params"], g["exact_match"])
                   for s, g in sub.groupby("seed") if int(s) in seeds]
        out.append(claim(
            f"emergence.threshold.{comp}",
            f"{comp}: smallest size whose exact match reaches {THRESHOLD_EM}", thr, ci=_span(per_thr),
            interval=spread,
            rule=f"threshold = smallest non-embedding size N whose seed-mean exact match is >= {THRESHOLD_EM}; "
                 "verdict true if there is one; a seed agrees if its own threshold is the same size",
            verdict=bool(np.isfinite(thr)), seed_verdicts=[bool(t == thr) for t in per_thr]))
    return out


def forecast_claims(forecast: pd.DataFrame, points: pd.DataFrame) -> list[dict]:
    """Per (component, metric): does the two-step forecast's interval cover the held-out sizes?"""
    out = []
    if not len(forecast):
        return out
    seeds = complete_seeds(points)
    for (comp, metric), t in forecast.groupby(["component", "metric"], sort=True):
        held = t[t["held_out"].astype(bool)]
        if not len(held):
            continue
        sub = points[points["component"] == comp].set_index(["n_params", "seed"])[metric]
        covered = bool(held["covered"].all())
        per_err, per_cov = [], []
        for s in seeds:
            actual = np.array([sub.get((n, s), np.nan) for n in held["n"]], dtype=float)
            per_err.append(float(np.mean(np.abs(held["predicted"].to_numpy() - actual))))
            per_cov.append(bool(np.all((actual >= held["pred_lo"]) & (actual <= held["pred_hi"]))))
        out.append(claim(
            f"emergence.forecast.{comp}.{metric}",
            f"{comp}: the two-step forecast (size -> task loss -> {metric}) from the smaller sizes predicts the "
            f"{len(held)} held-out largest sizes",
            float(held["abs_error"].mean()), ci=_span(per_err), interval=f"min-max over {len(seeds)} seeds",
            rule="holds if the seed-mean metric at every held-out size lies inside the forecast's interval "
                 "(step-1 prediction interval through the sigmoid, widened by step-2 residual quantiles); "
                 "value = mean absolute error at the held-out sizes; a seed agrees if its own values are covered",
            verdict=covered, seed_verdicts=per_cov))
    return out
