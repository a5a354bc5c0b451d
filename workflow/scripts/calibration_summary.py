"""Adapter: one row per (model, evaluation set), a reliability overlay per set, and the study summary."""

import pandas as pd
from lmcal.calibration import metrics as calibration
from lmcal.calibration.figures import reliability_overlay
from lmcal.core import io
from lmcal.core.report_tables import write_tables_html
from lmcal.core.tracking import job_run

p = snakemake.params
with job_run(snakemake) as run:
    metrics = [io.read_json(f) for f in snakemake.input.metrics]
    table = pd.DataFrame([{k: v for k, v in m.items() if k != "accuracy_by_category"} for m in metrics])
    io.write_parquet(table, snakemake.output.table)
    write_tables_html("Calibration: one row per (model, evaluation set)", {"metrics.parquet": table},
                      snakemake.output.tables_html)
    scored = {(m["model"], m["evalset"]): io.read_parquet(f) for m, f in zip(metrics, snakemake.input.scored)}
    for evalset, path in zip(p.evalsets, snakemake.output.figures):
        tables = {
            model: calibration.reliability_table(s["conf"].to_numpy(), s["correct"].to_numpy(), p.n_bins, p.binning)
            for (model, e), s in scored.items() if e == evalset
        }
        by_model = {m["model"]: m for m in metrics if m["evalset"] == evalset}
        io.save_figure(reliability_overlay(tables, title=f"reliability on {evalset}", metrics=by_model), path)
    summary = calibration.summarize_runs(metrics)
    io.write_json(summary, snakemake.output.summary)
    run.log_metrics({f"{r['model']}.{r['evalset']}.{k}": r[k] for r in metrics for k in calibration.HEADLINE})
