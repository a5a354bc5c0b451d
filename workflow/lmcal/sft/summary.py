"""Results of the SFT study: before/after table, the label-smoothing effect, the paper's claims, figures.

Inputs are the calibration study's per-model outputs (``metrics.json``, ``items.parquet``), the models'
``model_info.json`` (V, D, non-embedding size, Δ*) and the V/D cells; everything is keyed by the plan of
``lmcal.sft_sweep`` so no file name is parsed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lmcal.calibration.metrics import HEADLINE, SCORES
from lmcal.core.paths import fmt_num


def collect_metrics(pairs: list[tuple[str, str]], paths: list[str]) -> pd.DataFrame:
    """One row per (model, evalset) from the calibration metrics files."""
    from lmcal.core import io

    if len(pairs) != len(paths):
        raise ValueError(f"paths: {len(paths)} files for {len(pairs)} (model, evalset) pairs")
    rows = []
    for (model, ev), path in zip(pairs, paths):
        m = io.read_json(path)
        rows.append({"model": model, "evalset": ev, **{k: m.get(k) for k in (*SCORES, "n_items", "n_bins")}})
    return pd.DataFrame(rows)


def before_after_table(runs: list[dict], metrics: pd.DataFrame, infos: dict[str, dict]) -> pd.DataFrame:
    """Model × β (× lr, seed, ablation) → accuracy, ECE, RMS-CE, Brier of the base (before) and SFT model (after).

    ``infos`` maps model name → model_info dict (for V, D, non-embedding size and Δ*).
    """
    by = metrics.set_index(["model", "evalset"])
    rows = []
    for run in runs:
        info = infos.get(run["name"], {})
        extra = info.get("extra", {})
        base_info = infos.get(run["base"], {})
        for ev in run["evalsets"]:
            before, after = by.loc[(run["base"], ev)], by.loc[(run["name"], ev)]
            row = {"base": run["base"], "model": run["name"], "kind": run["kind"], "evalset": ev,
                   "label_smoothing": run["label_smoothing"], "lr": run["lr"], "seed": run["seed"],
                   "temperature": run["train"].get("temperature", 1.0), "softcap": run["train"].get("softcap"),
                   "vocab_size": info.get("vocab_size"), "hidden_size": info.get("hidden_size"),
                   "n_params_non_embedding": base_info.get("n_params_non_embedding",
                                                           extra.get("base_n_params_non_embedding")),
                   "delta_star": extra.get("delta_star"), "gap_mean_after": extra.get("gap_mean_after")}
            for k in HEADLINE:
                row[f"{k}_before"], row[f"{k}_after"] = float(before[k]), float(after[k])
            rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["v_over_d"] = df["vocab_size"] / df["hidden_size"]
    return df


def ls_effect(table: pd.DataFrame, beta: float, group: tuple[str, ...] = ("base", "evalset", "lr", "seed")
              ) -> pd.DataFrame:
    """Per group: ECE and accuracy of SFT at β against SFT at β = 0 (main grid only).

    ``ece_reduction`` = ECE(β=0) − ECE(β) (> 0: label smoothing helped).
    """
    main = table[(table["kind"] == "main")]
    ce = main[main["label_smoothing"] == 0.0].set_index(list(group))
    ls = main[np.isclose(main["label_smoothing"], beta)].set_index(list(group))
    joined = ce.join(ls, suffixes=("_ce", "_ls"), how="inner")
    out = pd.DataFrame({
        "vocab_size": joined["vocab_size_ce"], "hidden_size": joined["hidden_size_ce"],
        "v_over_d": joined["v_over_d_ce"], "ece_base": joined["ece_before_ce"], "ece_ce": joined["ece_after_ce"],
        "ece_ls": joined["ece_after_ls"], "accuracy_ce": joined["accuracy_after_ce"],
        "accuracy_ls": joined["accuracy_after_ls"], "delta_star": joined["delta_star_ls"],
    }).reset_index()
    out["label_smoothing"] = beta
    out["ece_reduction"] = out["ece_ce"] - out["ece_ls"]
    return out


def findings(table: pd.DataFrame, effects: pd.DataFrame) -> dict:
    """The paper's two claims as numbers: SFT (β=0) raises ECE; LS's ECE reduction shrinks as V/D grows."""
    from scipy.stats import spearmanr

    ce = table[(table["kind"] == "main") & (table["label_smoothing"] == 0.0)]
    rise = (ce["ece_after"] - ce["ece_before"]).to_numpy(float)
    out: dict[str, Any] = {
        "sft_raises_ece": {"n": int(rise.size), "n_raised": int((rise > 0).sum()),
                           "mean_ece_change": float(rise.mean()) if rise.size else None},
        "ls_reduces_ece": {},
    }
    for beta, grp in effects.groupby("label_smoothing"):
        red = grp["ece_reduction"].to_numpy(float)
        entry = {"n": int(red.size), "n_reduced": int((red > 0).sum()),
                 "mean_ece_reduction": float(red.mean()) if red.size else None}
        if grp["v_over_d"].nunique() >= 3:
            rho, p = spearmanr(grp["v_over_d"], grp["ece_reduction"])
            entry.update({"spearman_v_over_d": float(rho), "spearman_p": float(p)})
        out["ls_reduces_ece"][fmt_num(beta)] = entry
    return out


def to_records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready rows (NaN → None)."""
    return json.loads(df.to_json(orient="records"))


def reliability_panels(runs: list[dict], pairs: list[tuple[str, str]], item_paths: list[str], n_bins: int,
                       binning: str) -> dict[str, dict[str, pd.DataFrame]]:
    """Per (base, evalset): reliability tables of the base and of its main-grid SFT models (first lr and seed)."""
    from lmcal.calibration import metrics as calibration
    from lmcal.core import io

    path_of = dict(zip(pairs, item_paths))

    def table(model: str, ev: str) -> pd.DataFrame:
        items = io.read_parquet(path_of[(model, ev)])
        return calibration.reliability_table(items["conf"].to_numpy(float), items["correct"].to_numpy(bool),
                                             n_bins, binning)

    panels: dict[str, dict[str, pd.DataFrame]] = {}
    for run in runs:
        if run["kind"] != "main":
            continue
        first = next(r for r in runs if r["base"] == run["base"] and r["kind"] == "main")
        if (run["lr"], run["seed"]) != (first["lr"], first["seed"]):
            continue
        for ev in run["evalsets"]:
            curves = panels.setdefault(f"{run['base']} on {ev}", {"base": table(run["base"], ev)})
            curves[f"SFT β={run['label_smoothing']:g}"] = table(run["name"], ev)
    return panels


def vd_results(rows: pd.DataFrame | None) -> dict[str, Any]:
    """The V/D section of the summary from the stacked cell tables (None: study disabled): table, findings,
    MLflow metrics, its three figures and the JSON-ready ``summary["vd"]`` block ({} when disabled)."""
    from lmcal.sft import figures as figs
    from lmcal.sft import vd_analysis

    if rows is None or not len(rows):
        return {"rows": None, "table": None, "findings": {}, "metrics": {}, "summary": {}, "figures": {
            "vd_effect": figs.ls_effect_vs_v_over_d(pd.DataFrame(), title="V/D study (disabled)"),
            "vd_gap": figs.logit_gap_vs_delta_star(pd.DataFrame(columns=["kind", "delta_star"])),
            "vd_bound": figs.vd_confidence_bound(pd.DataFrame(columns=["kind"]))}}
    table = vd_analysis.vd_table(rows)
    found = vd_analysis.vd_findings(table)
    return {"rows": rows, "table": table, "findings": found, "metrics": vd_analysis.mlflow_metrics(rows, found),
            "summary": {"table": to_records(table), "findings": found, "rows": to_records(rows)},
            "figures": {"vd_effect": figs.vd_benefit_trend(table, found), "vd_gap": figs.logit_gap_vs_delta_star(rows),
                        "vd_bound": figs.vd_confidence_bound(rows)}}


def summarize(runs: list[dict], pairs: list[tuple[str, str]], metric_paths: list[str], item_paths: list[str],
              info_paths: list[str], vd_paths: list[str], *, n_bins: int, binning: str,
              fact_evalsets: list[str] = (), facts_settings: dict | None = None,
              base_pairs: list[tuple[str, str]] = (), base_item_paths: list[str] = ()) -> dict[str, Any]:
    """Everything the summary rule writes: tables, figures and the summary dict (JSON-ready).

    ``fact_evalsets`` (the knowledge world's sets, ``facts_settings`` its ``facts:`` block) get per-bucket tables,
    the reliability-by-bucket figure and per-set (per-method) claims (``lmcal.sft.fact_buckets``); ``base_pairs``
    (scored items at ``base_item_paths``) add further base models to the bucket table, e.g. every ladder size."""
    from lmcal.core import io
    from lmcal.sft import figures as figs
    from lmcal.sft import vd_analysis
    from lmcal.sft.claims import sft_claims

    metrics = collect_metrics(pairs, metric_paths)
    infos = {Path(p).parent.name: io.read_json(p) for p in info_paths}
    table = before_after_table(runs, metrics, infos)
    betas = sorted({r["label_smoothing"] for r in runs if r["kind"] == "main" and r["label_smoothing"] > 0})
    effects = pd.concat([ls_effect(table, b) for b in betas], ignore_index=True) if betas else pd.DataFrame()
    out: dict[str, Any] = {"table": table, "effects": effects, "figures": {}}
    out["figures"]["before_after"] = figs.before_after(table)
    out["figures"]["reliability"] = figs.reliability_grid(reliability_panels(runs, pairs, item_paths, n_bins, binning))
    out["figures"]["ls_effect"] = figs.ls_effect_vs_v_over_d(effects, title="Main sweep: LS effect vs V/D")
    summary = {"n_runs": len(runs), "n_bins": n_bins, "binning": binning, "table": to_records(table),
               "ls_effect": to_records(effects), "findings": findings(table, effects) if len(effects) else {},
               "delta_star": {r["model"]: r["delta_star"] for r in to_records(table)}}
    vd = vd_results(pd.concat([io.read_parquet(p) for p in vd_paths], ignore_index=True) if vd_paths else None)
    out["figures"].update(vd.pop("figures"))
    vd_findings = vd["findings"]
    if vd["summary"]:
        summary["vd"] = vd["summary"]
        out.update(vd_rows=vd["rows"], vd_table=vd["table"], vd_metrics=vd["metrics"])
    items = {pair: io.read_parquet(p) for pair, p in zip(pairs, item_paths)}
    summary["claims"] = (sft_claims(runs, items, out.get("vd_table"), n_bins=n_bins, binning=binning,
                                    vd_findings=vd_findings)
                         + vd_analysis.vd_claims(vd_findings))
    from lmcal.sft import fact_buckets

    extra = {tuple(pair): io.read_parquet(p) for pair, p in zip(base_pairs, base_item_paths)}
    buckets = fact_buckets.bucket_tables(runs, {**extra, **items}, list(fact_evalsets), facts_settings or {},
                                         n_bins=n_bins, binning=binning, extra_bases=list(extra))
    out["buckets"], out["figures"]["buckets"] = buckets, fact_buckets.bucket_figure(buckets)
    summary["buckets"] = to_records(buckets)
    summary["claims"] += fact_buckets.method_claims(runs, items, n_bins=n_bins, binning=binning)
    out["summary"] = summary
    return out
