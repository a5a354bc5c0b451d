"""Summary of the calibrated-sampler study: the truncation frontier, the verdict rule, the table and the toy world.

The verdict for one (model, dataset, method) is `VERDICT_RULE`: the calibrated sampler "beats the truncation
frontier" when its |EntCE| is lower than τ = 1's at a log loss no higher than τ = 1's, both on the same held-out
documents. No truncating or tempered decode can do that for free: each of them leaves p^'s log loss at best
unchanged (truncation makes it infinite on a zero-probability human token). Beside it the summary lists the
entropy-study decodes that also meet the rule, and whether any decode *dominates* the calibrated point (no
higher |EntCE| and no higher log loss, one strictly lower).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmcal.core import io

VERDICT_RULE = ("beats the truncation frontier: |EntCE(calibrated)| < |EntCE(tau=1)| and "
                "logloss(calibrated) <= logloss(tau=1) + tol, both on the held-out eval documents; tau=1 log loss "
                "is p~ at a=0 scored by the same teacher-forced pass as the calibrated one")
TOLERANCE = 1e-9  # nats/token: float noise of two sums of the same tokens, not a margin


def beats_reference(entce: float, logloss: float, ref_entce: float, ref_logloss: float,
                    tol: float = TOLERANCE) -> bool:
    """`VERDICT_RULE` on one pair of points."""
    return bool(abs(entce) < abs(ref_entce) and logloss <= ref_logloss + tol)


def dominates(p: Mapping[str, float], q: Mapping[str, float]) -> bool:
    """p dominates q in (|EntCE|, log loss): no worse in both, strictly better in one."""
    pa, qa = abs(p["entce"]), abs(q["entce"])
    return bool(pa <= qa and p["logloss"] <= q["logloss"] and (pa < qa or p["logloss"] < q["logloss"]))


def pareto_frontier(points: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Names of the points no other point dominates, by increasing log loss (points with a non-finite log loss,
    e.g. a truncation that zeroes a human token, are left out: they are on no trade-off curve)."""
    finite = {k: p for k, p in points.items() if np.isfinite(p["logloss"]) and np.isfinite(p["entce"])}
    keep = [k for k, p in finite.items() if not any(dominates(q, p) for j, q in finite.items() if j != k)]
    return sorted(keep, key=lambda k: (finite[k]["logloss"], abs(finite[k]["entce"])))


def verdict_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One summary row from a calibrated run's record (`lmcal.entropy.calibrate.calibrate_one` + model, dataset)."""
    ref = record["tau1"]
    decodes = record["decodes"]
    point = {"entce": record["entce"], "logloss": record["logloss"]}
    return {"model": record["model"], "dataset": record["dataset"], "method": record["method"], "a": record["a"],
            "entce": record["entce"], "logloss": record["logloss"], "entropy": record["entropy"],
            "entce_tau1": ref["entce"], "logloss_tau1": ref["logloss"],
            "d_abs_entce": abs(record["entce"]) - abs(ref["entce"]), "d_logloss": record["logloss"] - ref["logloss"],
            "beats_frontier": beats_reference(record["entce"], record["logloss"], ref["entce"], ref["logloss"]),
            "decodes_meeting_rule": sorted(k for k, p in decodes.items() if k != record["reference_decode"]
                                           and beats_reference(p["entce"], p["logloss"],
                                                               decodes[record["reference_decode"]]["entce"],
                                                               decodes[record["reference_decode"]]["logloss"])),
            "dominated_by": sorted(k for k, p in decodes.items() if dominates(p, point)),
            "frontier": pareto_frontier(decodes), "n_eval_docs": len(record["eval_doc_ids"]),
            "tau1_logloss_scorer_gap": ref["logloss_scorer"] - ref["logloss"]}


def verdict_text(row: Mapping[str, Any]) -> str:
    """A plain sentence for one row."""
    head = f"{row['model']} / {row['dataset']} / {row['method']} (a = {row['a']:g}): "
    if row["a"] == 0:
        return head + "a = 0 fitted (no grid point lowers held-out log loss): the base model, no change"
    word = "beats" if row["beats_frontier"] else "does not beat"
    return head + (f"{word} the truncation frontier: |EntCE| {abs(row['entce_tau1']):.4f} -> {abs(row['entce']):.4f}, "
                   f"log loss {row['logloss_tau1']:.4f} -> {row['logloss']:.4f} nats/token")


def calibrated_summary(records: Sequence[Mapping[str, Any]], toy: Mapping[str, Any] | None,
                       settings: Mapping[str, Any], curves=None, heads: Mapping[str, Any] | None = None
                       ) -> dict[str, Any]:
    """``results/entropy/calibrated/summary.json``: the table, the verdict per (model, dataset, method), the rule,
    every eval-half decode point, the toy world's exact table; with ``curves``
    (`lmcal.entropy.calibrate_curves.step_curves`) each row also gets its per-step numbers (first / last quarter,
    drift) and with ``heads`` (model -> head training record) the head's validation error."""
    rows = [verdict_row(r) for r in records]
    if curves is not None:
        from lmcal.entropy.calibrate_curves import curve_numbers

        for row in rows:
            row.update(curve_numbers(curves, row["model"], row["dataset"], row["method"]))
    return io.jsonable({
        "settings": dict(settings), "verdict_rule": VERDICT_RULE, "tolerance": TOLERANCE,
        "table": rows,
        "verdicts": {f"{r['model']}/{r['dataset']}/{r['method']}": verdict_text(r) for r in rows},
        "beats_frontier": sorted(f"{r['model']}/{r['dataset']}/{r['method']}" for r in rows if r["beats_frontier"]),
        "decode_points": [{"model": r["model"], "dataset": r["dataset"], "decode": k, **p}
                          for r in records for k, p in r["decodes"].items()],
        "cost": [{"model": r["model"], "dataset": r["dataset"], "method": r["method"], **r["wall_s"],
                  "sampled_tokens_per_s": r["sampled_tokens_per_s"]} for r in records],
        "toyworld": dict(toy) if toy else None,
        "heads": {m: {k: h[k] for k in ("n_pairs", "train_mse", "val_mse", "val_rmse_vs_rollout",
                                        "val_rmse_vs_lookahead", "val_rmse_constant_vs_rollout",
                                        "val_rmse_rollout_vs_lookahead", "settings", "wall_s")}
                  for m, h in (heads or {}).items()},
    })


# ---------------------------------------------------------------- the exact toy world


def toyworld_table(world_settings: Mapping[str, Any], n_rollouts: int, seed: int) -> dict[str, Any]:
    """The exact toy study (`lmcal.entropy.toycalib.toy_study`) with per-step EntCE of the headline models."""
    from lmcal.entropy.toycalib import algorithm1, temperature_zeroing_entce, tempered, toy_study
    from lmcal.entropy.toyworld import calibration_report, derailing_world

    world = derailing_world(**dict(world_settings))
    rows = toy_study(world, n_rollouts=n_rollouts, seed=seed)
    base = rows[0]
    for r in rows:
        r["d_logloss_vs_base"] = r["log_loss"] - base["log_loss"]
    tau = temperature_zeroing_entce(world)
    alg = algorithm1(world)
    per_step = {"base (tau=1)": calibration_report(world, world.tiled(world.p_hat))["entce_t"],
                rows[1]["method"]: calibration_report(world, tempered(world, tau))["entce_t"],
                "algorithm1 exact F": calibration_report(world, alg["Q"])["entce_t"]}
    return io.jsonable({
        "world": {**dict(world_settings), "n_states": world.n_states, "vocab": world.vocab,
                  "horizon": world.horizon},
        "n_rollouts": n_rollouts, "seed": seed, "units": "nats, totals over the horizon (exact DP, no sampling)",
        "table": rows, "temperature_zeroing_entce": tau,
        "temperature_logloss_cost": rows[1]["log_loss"] - base["log_loss"],
        "algorithm1_alpha_t": alg["alpha"], "per_step_entce": per_step,
    })
