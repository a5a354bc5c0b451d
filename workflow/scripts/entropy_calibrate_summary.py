"""Adapter: the calibrated sampler's summary.json, table and Figure 3-style plot against the decode frontier."""

import pandas as pd
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy.calibrate_figures import plot_calibrated_frontier
from lmcal.entropy.calibrate_summary import calibrated_summary

with job_run(snakemake) as run:
    i, o = snakemake.input, snakemake.output
    summary = calibrated_summary([io.read_json(f) for f in i.records], io.read_json(i.toyworld),
                                 snakemake.params.settings)
    io.write_json(summary, o.summary)
    table = pd.DataFrame(summary["table"]).drop(columns=["decodes_meeting_rule", "dominated_by", "frontier"],
                                                errors="ignore")
    io.write_parquet(table, o.table)
    fig = plot_calibrated_frontier(summary)
    io.save_figure(fig, o.figure)
    run.log_figure(fig, "figures/fig3_calibrated.png")
    for r in summary["table"]:
        tag = f"{r['model']}.{r['dataset']}.{r['method']}"
        run.log_metrics({f"a.{tag}": r["a"], f"entce.{tag}": r["entce"], f"logloss.{tag}": r["logloss"],
                         f"d_logloss.{tag}": r["d_logloss"], f"beats_frontier.{tag}": float(r["beats_frontier"])})
    print("\n".join(summary["verdicts"].values()))
