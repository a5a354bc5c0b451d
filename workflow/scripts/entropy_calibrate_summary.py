"""Adapter: the calibrated sampler's summary.json, table, Figure 3-style plot and per-step entropy curves."""

from pathlib import Path

import pandas as pd
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy.calibrate_curves import step_curves
from lmcal.entropy.calibrate_figures import plot_calibrated_frontier, plot_step_curves
from lmcal.entropy.calibrate_summary import calibrated_summary


def keys(path):
    """{model, data, method|decode} from the path's ``key~value`` segments."""
    return {k: v for k, _, v in (seg.partition("~") for seg in Path(path).with_suffix("").parts) if v}


with job_run(snakemake) as run:
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    records = [io.read_json(f) for f in i.records]
    calibrated = {(k["model"], k["data"], k["method"]): io.read_parquet(f) for f in i.calibrated for k in [keys(f)]}
    tau1 = {(k["model"], k["data"]): io.read_parquet(f) for f in i.tau1 for k in [keys(f)]}
    human = {(k["model"], k["data"]): io.read_parquet(f) for f in i.human for k in [keys(f)]}
    curves = step_curves(records, calibrated, tau1, human, max_len=p.max_len, smoothing=p.smoothing)
    heads = {keys(f)["model"]: io.read_json(f) for f in i.heads}
    summary = calibrated_summary(records, io.read_json(i.toyworld), p.settings, curves=curves, heads=heads)
    io.write_json(summary, o.summary)
    table = pd.DataFrame(summary["table"]).drop(columns=["decodes_meeting_rule", "dominated_by", "frontier"],
                                                errors="ignore")
    io.write_parquet(table, o.table)
    io.write_parquet(curves, o.curves)
    for fig, path, name in ((plot_calibrated_frontier(summary), o.figure, "fig3_calibrated.png"),
                            (plot_step_curves(curves), o.curves_figure, "step_curves.png")):
        io.save_figure(fig, path)
        run.log_figure(fig, f"figures/{name}")
    for r in summary["table"]:
        tag = f"{r['model']}.{r['dataset']}.{r['method']}"
        run.log_metrics({f"a.{tag}": r["a"], f"entce.{tag}": r["entce"], f"logloss.{tag}": r["logloss"],
                         f"d_logloss.{tag}": r["d_logloss"], f"beats_frontier.{tag}": float(r["beats_frontier"]),
                         f"drift.{tag}": r["calibrated_drift"], f"drift_tau1.{tag}": r["tau1_drift"]})
    for m, h in summary["heads"].items():
        run.log_metrics({f"head.val_rmse_vs_rollout.{m}": h["val_rmse_vs_rollout"]})
    print("\n".join(summary["verdicts"].values()))
