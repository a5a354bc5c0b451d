"""Analysis of the V/D study: the per-model table, the LS benefit's trend in log(V/D) with a bootstrap interval,
the option-renormalised confidence bound the LS target implies, and the claim records and MLflow metrics.

Torch-free: the summary job reads the cell tables (``lmcal.sft.vd.run_cell`` rows) and nothing else.

The benefit of label smoothing for one model is ECE(β=0) − ECE(β) (and the same for RMS-CE), where the two SFT
models share V, D, seed and the pretrained base. The paper's claim is that this benefit shrinks as V/D grows, so
the statistic is the least-squares slope of benefit on ln(V/D) over every (cell, seed); its interval is a
two-stage percentile bootstrap that resamples cells, then seeds within each drawn cell, so both the spread
between V/D cells and the seed noise within a cell widen it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lmcal.core.claims import claim

KEYS = ["vocab_size", "hidden_size", "seed"]
BENEFITS = {"ece": "ece_reduction", "rms_ce": "rms_ce_reduction"}  # metric -> its benefit column
N_BOOT, CI = 2000, 0.95


def confidence_bound(label_smoothing: float, vocab_size: int, n_choices: int) -> float:
    """The target's option-renormalised confidence under the LS target: (1−β+β/V) / (1−β+nβ/V).

    The LS target gives the answer token 1 − β + β/V and every other token β/V; renormalised over n offered
    options (one token each) the answer keeps that share, so a model that fits the LS target exactly cannot be
    more confident than this. β = 0 (plain CE) gives 1, β = 1 gives 1/n, and V → ∞ gives 1.
    For multi-token options the bound holds per token: it bounds length-normalised scores (``normalization:
    mean``, geometric mean per token), but a summed log-likelihood (``sum``) compounds over tokens and can exceed
    it, which the study's ``n_above_bound`` counts.
    """
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    if vocab_size < 2 or n_choices < 2:
        raise ValueError(f"vocab_size and n_choices: expected >= 2, got {vocab_size} and {n_choices}")
    b = float(label_smoothing)
    return (1.0 - b + b / vocab_size) / (1.0 - b + n_choices * b / vocab_size)


def vd_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (V, D, seed, β > 0): the base, CE (β = 0) and LS models side by side, the LS benefit in ECE and RMS-CE,
    Δ*, and the confidence bound next to the mean / max option-renormalised confidence each SFT model reaches."""
    if "seed" not in rows:
        raise ValueError("rows: no seed column (cell tables from before the V/D study had seeds); rebuild them")
    sft_rows = rows[rows["kind"] == "sft"]
    ce = sft_rows[sft_rows["label_smoothing"] == 0.0].set_index(KEYS)
    base = rows[rows["kind"] == "base"].set_index(KEYS)[["ece", "rms_ce", "accuracy", "conf_mean", "conf_max"]]
    out = []
    for beta, ls in sft_rows[sft_rows["label_smoothing"] > 0].groupby("label_smoothing"):
        j = ls.set_index(KEYS).join(ce, suffixes=("", "_ce"), how="inner").join(base, suffixes=("", "_base"))
        out.append(pd.DataFrame({
            "label_smoothing": beta, "v_over_d": j["v_over_d"], "log_v_over_d": np.log(j["v_over_d"]),
            "n_params_non_embedding": j["n_params_non_embedding"], "pretrain_loss": j["pretrain_loss"],
            "accuracy_base": j["accuracy_base"], "accuracy_ce": j["accuracy_ce"], "accuracy_ls": j["accuracy"],
            "ece_base": j["ece_base"], "ece_ce": j["ece_ce"], "ece_ls": j["ece"],
            "ece_reduction": j["ece_ce"] - j["ece"], "rms_ce_base": j["rms_ce_base"], "rms_ce_ce": j["rms_ce_ce"],
            "rms_ce_ls": j["rms_ce"], "rms_ce_reduction": j["rms_ce_ce"] - j["rms_ce"],
            "delta_star": j["delta_star"], "gap_mean_ce": j["gap_mean_ce"], "gap_mean_ls": j["gap_mean"],
            "n_choices": j["n_choices"], "conf_bound": j["conf_bound"], "conf_mean_ls": j["conf_mean"],
            "conf_max_ls": j["conf_max"], "conf_mean_ce": j["conf_mean_ce"], "conf_max_ce": j["conf_max_ce"],
        }).reset_index())
    if not out:
        raise ValueError("rows: need SFT rows at β = 0 and at some β > 0 with matching (V, D, seed)")
    return pd.concat(out, ignore_index=True).sort_values(["label_smoothing", "v_over_d", "vocab_size", "seed"]
                                                         ).reset_index(drop=True)


def slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slopes of y on x along the last axis (NaN where x has no spread)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xc = x - x.mean(-1, keepdims=True)
    sxx = (xc ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sxx > 1e-12, (xc * (y - y.mean(-1, keepdims=True))).sum(-1) / sxx, np.nan)


def bootstrap_indices(cells: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) row indices: draw cells with replacement, then rows (seeds) with replacement within each.

    A draw has as many rows as the data; when cells have unequal seed counts, its rows are resampled to that
    size so that every draw is one row of the (n_boot, n) array."""
    cells = np.asarray(cells)
    ids = list(dict.fromkeys(cells.tolist()))
    members = [np.flatnonzero(cells == c) for c in ids]
    out = np.empty((n_boot, len(cells)), dtype=np.int64)
    for b in range(n_boot):
        parts = [members[k][rng.integers(0, len(members[k]), len(members[k]))]
                 for k in rng.integers(0, len(ids), len(ids))]
        drawn = np.concatenate(parts)
        out[b] = drawn[rng.integers(0, len(drawn), len(cells))] if len(drawn) != len(cells) else drawn
    return out


def trend(table: pd.DataFrame, column: str, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Slope of ``column`` on ln(V/D) over the table's rows (one per model pair), with its bootstrap CI."""
    x = table["log_v_over_d"].to_numpy(float)
    y = table[column].to_numpy(float)
    cells = (table["vocab_size"].astype(str) + "/" + table["hidden_size"].astype(str)).to_numpy()
    out: dict[str, Any] = {"n_models": len(table), "n_cells": len(set(cells)),
                           "n_v_over_d": int(table["v_over_d"].nunique()), "mean": float(np.mean(y)) if len(y) else None,
                           "slope": None, "ci": None, "n_draws": 0}
    if out["n_v_over_d"] < 2:
        return out
    out["slope"] = float(slopes(x, y))
    idx = bootstrap_indices(cells, n_boot, np.random.default_rng(seed))
    draws = slopes(x[idx], y[idx])
    draws = draws[np.isfinite(draws)]  # a draw of cells sharing one V/D has no slope
    out["n_draws"] = len(draws)
    if len(draws):
        out["ci"] = [float(q) for q in np.quantile(draws, [(1 - CI) / 2, (1 + CI) / 2])]
    return out


def verdict_of(ci: list[float] | None) -> bool | None:
    """The claim "the benefit shrinks as V/D grows" holds if the slope's whole CI is below 0."""
    return None if ci is None else bool(ci[1] < 0)


def vd_findings(table: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Per β and metric: the pooled trend (all seeds) and each seed's own trend (bootstrap over its cells)."""
    out: dict[str, Any] = {}
    for beta, grp in table.groupby("label_smoothing"):
        entry: dict[str, Any] = {}
        for metric, col in BENEFITS.items():
            pooled = trend(grp, col, n_boot=n_boot, seed=seed)
            per_seed = {int(s): trend(g, col, n_boot=n_boot, seed=seed) for s, g in grp.groupby("seed")}
            entry[metric] = {**pooled, "verdict": verdict_of(pooled["ci"]),
                             "n_reduced": int((grp[col] > 0).sum()),
                             "per_seed": {str(s): {"slope": t["slope"], "ci": t["ci"], "verdict": verdict_of(t["ci"])}
                                          for s, t in per_seed.items()}}
        bound = grp["conf_bound"].to_numpy(float)
        entry["confidence"] = {"bound_min": float(bound.min()), "bound_max": float(bound.max()),
                               "conf_mean_ls": float(grp["conf_mean_ls"].mean()),
                               "conf_max_ls": float(grp["conf_max_ls"].max()),
                               "n_above_bound": int((grp["conf_max_ls"] > grp["conf_bound"]).sum())}
        out[f"{float(beta):g}"] = entry
    return out


def vd_claims(findings: dict[str, Any]) -> list[dict[str, Any]]:
    """One claim record per β and metric: "the LS benefit shrinks as V/D grows" (slope on ln(V/D) below 0)."""
    out = []
    for beta, entry in findings.items():
        for metric in BENEFITS:
            t = entry[metric]
            seeds = [v["verdict"] for v in t["per_seed"].values() if v["verdict"] is not None]
            name = "ECE" if metric == "ece" else "RMS-CE"
            out.append(claim(
                f"sft.vd.benefit_slope.b{beta}.{metric}",
                f"V/D study: the label-smoothing benefit {name}(beta=0) - {name}(beta={beta}) shrinks as V/D grows "
                f"({t['n_models']} models in {t['n_cells']} cells, {t['n_reduced']} with a benefit > 0)",
                t["slope"], ci=t["ci"],
                interval=f"{CI:.0%} bootstrap over cells, then seeds within cells ({t['n_draws']} draws)",
                rule=f"value = least-squares slope of the {name} benefit on ln(V/D); reproduces if the CI is below 0 "
                     "(a CI above 0 contradicts it, one containing 0 does not show it); n/a with fewer than 2 V/D "
                     "values; seeds_agree: the rule on each seed's models alone (bootstrap over its cells)",
                verdict=verdict_of(t["ci"]), seed_verdicts=seeds if seeds else None))
    return out


def mlflow_metrics(rows: pd.DataFrame, findings: dict[str, Any]) -> dict[str, float]:
    """Every number of the V/D study as flat MLflow metrics: per model, then the trends."""
    out: dict[str, float] = {}
    for r in rows.to_dict("records"):
        tag = "base" if r["kind"] == "base" else f"b{r['label_smoothing']:g}"
        prefix = f"vd.v{int(r['vocab_size'])}_d{int(r['hidden_size'])}_s{int(r['seed'])}.{tag}"
        for k in ("accuracy", "ece", "rms_ce", "brier", "delta_star", "gap_mean", "gap_max", "conf_bound",
                  "conf_mean", "conf_max", "pretrain_loss"):
            v = r.get(k)
            if v is not None and isinstance(v, (int, float)) and math.isfinite(float(v)):
                out[f"{prefix}.{k}"] = float(v)
    for beta, entry in findings.items():
        for metric in BENEFITS:
            t = entry[metric]
            for k, v in (("slope", t["slope"]), ("mean", t["mean"])):
                if v is not None:
                    out[f"vd.trend.b{beta}.{metric}.{k}"] = v
            if t["ci"] is not None:
                out[f"vd.trend.b{beta}.{metric}.ci_lo"], out[f"vd.trend.b{beta}.{metric}.ci_hi"] = t["ci"]
    return out
