"""The SFT study's headline claims with intervals and verdict rules (``lmcal.core.claims``).

Paper finding 1: SFT (β = 0) degrades calibration (ECE rises). Finding 2: label smoothing restores it, except at
large V/D (its ECE reduction falls as V/D grows). Every ECE difference is paired over the same evaluation items
and its interval is a percentile bootstrap over items; the V/D trend is the slope of the reduction on ln(V/D)
(``lmcal.sft.vd_analysis.trend``), its interval a bootstrap over V/D cells and seeds within cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lmcal.core.claims import claim

N_BOOT, CI = 1000, 0.95


def paired_ece_draws(a: pd.DataFrame, b: pd.DataFrame, n_bins: int, binning: str, *, n_boot: int = N_BOOT,
                     seed: int = 0) -> tuple[float, np.ndarray]:
    """ECE(a) − ECE(b) on the items both score (joined on item_id), and ``n_boot`` item-bootstrap draws of it."""
    from lmcal.calibration.metrics import ece_draws
    from lmcal.calibration.metrics import expected_calibration_error as ece

    j = a[["item_id", "conf", "correct"]].merge(b[["item_id", "conf", "correct"]], on="item_id", suffixes=("_a", "_b"))
    if not len(j):
        raise ValueError("paired ECE: the two item tables share no item_id")
    ca, ka = j["conf_a"].to_numpy(float), j["correct_a"].to_numpy(bool)
    cb, kb = j["conf_b"].to_numpy(float), j["correct_b"].to_numpy(bool)
    point = ece(ca, ka, n_bins, binning) - ece(cb, kb, n_bins, binning)
    idx = np.random.default_rng(seed).integers(0, len(j), size=(n_boot, len(j)))
    draws = ece_draws(ca, ka, idx, n_bins, binning) - ece_draws(cb, kb, idx, n_bins, binning)
    return float(point), draws


def _ci(draws: np.ndarray) -> list[float]:
    return [float(q) for q in np.quantile(draws, [(1 - CI) / 2, (1 + CI) / 2])]


def sft_claims(runs: list[dict], items: dict[tuple[str, str], pd.DataFrame], vd: pd.DataFrame | None, *,
               n_bins: int, binning: str, n_boot: int = N_BOOT, seed: int = 0,
               vd_findings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Claims of the main grid (finding 1, the LS effect per cell and β, finding 2 with the V/D trend).

    ``items``: (model, evalset) → scored items (item_id, conf, correct). ``vd``: the V/D table
    (``vd_analysis.vd_table``: vocab_size, hidden_size, v_over_d, log_v_over_d, label_smoothing, ece_reduction)
    or None when the V/D study is off. ``vd_findings`` (``vd_analysis.vd_findings`` of that table): its trend is
    used as is, so finding 2 and the V/D claims quote the same interval; without it the trend is computed here.
    """
    main = [r for r in runs if r["kind"] == "main"]
    interval = f"{CI:.0%} bootstrap over items"
    out, rises, points = [], [], []
    for r in (r for r in main if r["label_smoothing"] == 0.0):
        for ev in r["evalsets"]:
            point, draws = paired_ece_draws(items[(r["name"], ev)], items[(r["base"], ev)], n_bins, binning,
                                            n_boot=n_boot, seed=seed)
            rises.append(draws)
            points.append(point)
    if rises:
        mean, n_raised = np.mean(rises, axis=0), sum(p > 0 for p in points)
        out.append(claim(
            "sft.finding1.sft_raises_ece",
            f"paper finding 1: SFT without label smoothing degrades calibration ({n_raised} of {len(rises)} runs "
            "raise ECE)", float(np.mean(points)),
            ci=_ci(mean), interval=interval + ", mean over runs",
            rule="reproduces if the CI of the mean ECE change (after SFT at beta=0 minus before) is above 0",
            verdict=bool(_ci(mean)[0] > 0)))
    cells = []
    for r in (r for r in main if r["label_smoothing"] > 0):
        ce = next((c for c in main if c["label_smoothing"] == 0.0 and
                   (c["base"], c["lr"], c["seed"]) == (r["base"], r["lr"], r["seed"])), None)
        if ce is None:
            continue
        for ev in r["evalsets"]:
            point, draws = paired_ece_draws(items[(ce["name"], ev)], items[(r["name"], ev)], n_bins, binning,
                                            n_boot=n_boot, seed=seed)
            lo, hi = _ci(draws)
            cells.append(lo > 0)
            out.append(claim(
                f"sft.ls_effect.{r['name']}.{ev}",
                f"{r['base']} on {ev}: label smoothing beta={r['label_smoothing']:g} lowers ECE against beta=0",
                point, ci=[lo, hi], interval=interval,
                rule="value = ECE(beta=0) - ECE(beta); LS helps if the CI is above 0", verdict=bool(lo > 0)))
    out.append(_finding2(cells, vd, n_boot, seed, vd_findings))
    return out


def _finding2(cells: list[bool], vd: pd.DataFrame | None, n_boot: int, seed: int,
              vd_findings: dict[str, Any] | None) -> dict[str, Any]:
    """LS restores calibration (most cells' CI above 0) except at large V/D (slope of reduction on ln(V/D) < 0)."""
    from lmcal.sft import vd_analysis

    slope, ci = None, None
    if vd is not None and len(vd):
        beta = float(vd["label_smoothing"].min())
        if vd_findings is not None:
            t = vd_findings[f"{beta:g}"]["ece"]
        else:
            t = vd_analysis.trend(vd[vd["label_smoothing"] == beta], "ece_reduction", n_boot=n_boot, seed=seed)
        slope, ci = t["slope"], t["ci"]
    helps = bool(cells) and sum(cells) > len(cells) / 2
    verdict = None if slope is None or ci is None else bool(helps and ci[1] < 0)
    return claim(
        "sft.finding2.ls_restores_except_large_vd",
        f"paper finding 2: label smoothing restores calibration ({sum(cells)} of {len(cells)} main-grid cells), "
        "except at large V/D", slope, ci=ci, interval=f"{CI:.0%} bootstrap over V/D cells, then seeds within cells",
        rule="value = least-squares slope of the LS ECE reduction on ln(V/D) (V/D study, smallest beta > 0); "
             "reproduces if LS lowers ECE (CI above 0) in most main-grid cells and the CI of the slope is below 0; "
             "n/a without a V/D study of >= 2 V/D values", verdict=verdict)
