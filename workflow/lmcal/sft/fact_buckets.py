"""The SFT study on the knowledge world: calibration per fact-frequency bucket, and the per-method claims.

For every (model, evaluation set) of a ``facts`` set, accuracy / confidence / ECE per mention bucket
(``lmcal.calibration.buckets``) for the base and each SFT model; a reliability-by-bucket figure; and, per
evaluation set (one per multiple-choice method), the paper's finding 1 (SFT at β = 0 raises ECE) and the LS effect
(ECE at β minus ECE at β = 0), each a mean over seeds with an item-bootstrap interval and the seeds that agree.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lmcal.calibration.buckets import bucket_table
from lmcal.core.claims import claim
from lmcal.data import factworld
from lmcal.sft.claims import CI, N_BOOT, paired_ece_draws


def bucket_tables(runs: list[dict], items: dict[tuple[str, str], pd.DataFrame], fact_evalsets: list[str],
                  settings: dict[str, Any], *, n_bins: int, binning: str, n_boot: int = 200, seed: int = 0,
                  extra_bases: list[tuple[str, str]] = ()) -> pd.DataFrame:
    """Rows ``model, base, role (base | sft), label_smoothing, seed, evalset, bucket, ...`` (bucket_table columns)
    for every base and main-grid SFT model on every ``facts`` evaluation set it was scored on, plus the
    ``extra_bases`` (model, evalset) pairs (e.g. every ladder size the calibration study scores) as bases."""
    models: dict[tuple[str, str], dict] = {}
    for model, ev in extra_bases:
        if ev in fact_evalsets:
            models[(model, ev)] = {"model": model, "base": model, "role": "base", "label_smoothing": None,
                                   "seed": None, "evalset": ev}
    for run in (r for r in runs if r["kind"] == "main"):
        for ev in (e for e in run["evalsets"] if e in fact_evalsets):
            models.setdefault((run["base"], ev), {"model": run["base"], "base": run["base"], "role": "base",
                                                  "label_smoothing": None, "seed": None, "evalset": ev})
            models[(run["name"], ev)] = {"model": run["name"], "base": run["base"], "role": "sft",
                                         "label_smoothing": run["label_smoothing"], "seed": run["seed"],
                                         "evalset": ev}
    frames, known = [], {}
    for key, meta in models.items():
        scored = items[key]
        ids = tuple(scored["item_id"])
        if ids not in known:
            known[ids] = factworld.item_buckets(list(ids), settings)
        table = bucket_table(scored, known[ids], order=factworld.BUCKETS, n_bins=n_bins, binning=binning,
                             n_boot=n_boot, seed=seed)
        frames.append(table.assign(**meta))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    lead = ["model", "base", "role", "label_smoothing", "seed", "evalset"]
    return out[lead + [c for c in out.columns if c not in lead]]


def bucket_figure(table: pd.DataFrame) -> Figure:
    """Accuracy (solid) and mean confidence (dashed) per bucket: base and SFT by β (mean over seeds), one panel
    per (base, evaluation set). The gap between the two lines is the bucket's miscalibration."""
    fig = Figure(figsize=(9, 3.2))
    if table.empty:
        fig.subplots().text(0.5, 0.5, "no facts evaluation set in the SFT recipe", ha="center", va="center")
        return fig
    panels = list(dict.fromkeys(zip(table["base"], table["evalset"])))
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig.set_size_inches(4.2 * cols, 3.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    order = [b for b in factworld.BUCKETS if b in set(table["bucket"])]
    x = np.arange(len(order))
    for ax, (base, ev) in zip(axes, panels):
        sub = table[(table["base"] == base) & (table["evalset"] == ev)]
        groups = [("base", sub[sub["role"] == "base"])]
        groups += [(f"SFT β={b:g}", g) for b, g in sub[sub["role"] == "sft"].groupby("label_smoothing")]
        for k, (label, g) in enumerate(groups):
            agg = g.groupby("bucket")[["accuracy", "confidence"]].mean().reindex(order)
            color = "0.4" if label == "base" else f"C{k}"
            ax.plot(x, agg["accuracy"], "o-", color=color, label=f"{label} accuracy")
            ax.plot(x, agg["confidence"], "s--", color=color, alpha=0.7, label=f"{label} confidence")
        ax.axhline(0.25, color="0.8", lw=0.8, zorder=0)
        ax.set_xticks(x, order)
        ax.set_ylim(0, 1)
        ax.set_title(f"{base} on {ev}", fontsize=9)
        ax.set_xlabel("mentions in pretraining")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].set_ylabel("accuracy / confidence")
    axes[0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig


def method_claims(runs: list[dict], items: dict[tuple[str, str], pd.DataFrame], *, n_bins: int, binning: str,
                  n_boot: int = N_BOOT, seed: int = 0) -> list[dict[str, Any]]:
    """Per evaluation set: finding 1 (ECE after SFT at β=0 minus base) and the LS effect at each β > 0
    (ECE(β) − ECE(0)), each the mean over seeds (and bases) with a paired item-bootstrap interval."""
    main = [r for r in runs if r["kind"] == "main"]
    interval = f"{CI:.0%} bootstrap over items (common draws), mean over runs"
    q = [(1 - CI) / 2, (1 + CI) / 2]
    out = []
    for ev in dict.fromkeys(e for r in main for e in r["evalsets"]):
        ce = [r for r in main if r["label_smoothing"] == 0.0 and ev in r["evalsets"]]
        pairs = [(items[(r["name"], ev)], items[(r["base"], ev)]) for r in ce]
        out += _mean_claim(f"sft.finding1.{ev}", f"on {ev}, SFT without label smoothing raises ECE over the base",
                           pairs, n_bins, binning, n_boot, seed, interval, q, sign=+1,
                           rule="value = mean over seeds of ECE(SFT beta=0) - ECE(base); reproduces if the CI is "
                                "above 0; a seed agrees if its own CI is above 0")
        for beta in sorted({r["label_smoothing"] for r in main if r["label_smoothing"] > 0}):
            pairs = []
            for r in (r for r in main if r["label_smoothing"] == beta and ev in r["evalsets"]):
                ref = next((c for c in ce if (c["base"], c["lr"], c["seed"]) == (r["base"], r["lr"], r["seed"])), None)
                if ref is not None:
                    pairs.append((items[(r["name"], ev)], items[(ref["name"], ev)]))
            out += _mean_claim(f"sft.ls_effect.b{beta:g}.{ev}",
                               f"on {ev}, label smoothing beta={beta:g} lowers ECE against beta=0", pairs, n_bins,
                               binning, n_boot, seed, interval, q, sign=-1,
                               rule="value = mean over seeds of ECE(beta) - ECE(beta=0); LS helps if the CI is "
                                    "below 0; a seed agrees if its own CI is below 0")
    return out


def _mean_claim(cid, text, pairs, n_bins, binning, n_boot, seed, interval, q, *, sign: int, rule: str) -> list:
    if not pairs:
        return []
    points, draws = zip(*(paired_ece_draws(a, b, n_bins, binning, n_boot=n_boot, seed=seed) for a, b in pairs))
    lo, hi = (float(v) for v in np.quantile(np.mean(draws, axis=0), q))
    per_seed = [bool(np.quantile(d, q[0]) > 0) if sign > 0 else bool(np.quantile(d, q[1]) < 0) for d in draws]
    verdict = bool(lo > 0) if sign > 0 else bool(hi < 0)
    return [claim(cid, f"{text} ({sum(per_seed)} of {len(per_seed)} runs (base x seed) individually)", float(np.mean(points)),
                  ci=[lo, hi], interval=interval, rule=rule, verdict=verdict, seed_verdicts=per_seed)]
