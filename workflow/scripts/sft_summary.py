"""Adapter: the SFT study's tables, figures and results/sft/summary.json."""

import pandas as pd
from lmcal.core import io
from lmcal.core.report_tables import write_tables_html
from lmcal.core.tracking import job_run
from lmcal.sft import summary as sft_summary

p = snakemake.params
with job_run(snakemake) as run:
    out = sft_summary.summarize(
        p.runs, [tuple(x) for x in p.pairs], list(snakemake.input.metrics), list(snakemake.input.scored),
        list(snakemake.input.infos), list(snakemake.input.vd), n_bins=p.n_bins, binning=p.binning,
        fact_evalsets=p.fact_evalsets, facts_settings=p.facts, base_pairs=[tuple(x) for x in p.base_pairs],
        base_item_paths=list(snakemake.input.base_scored))
    io.write_parquet(out["table"], snakemake.output.table)
    io.write_parquet(out["effects"], snakemake.output.effects)
    io.write_parquet(out.get("vd_table", pd.DataFrame()), snakemake.output.vd_table)
    io.write_parquet(out["buckets"], snakemake.output.buckets)
    write_tables_html("SFT: calibration before/after, label-smoothing effect, V/D cells",
                      {"table.parquet": out["table"], "ls_effect.parquet": out["effects"],
                       "vd_table.parquet": out.get("vd_table", pd.DataFrame()),
                       "buckets.parquet": out["buckets"]}, snakemake.output.tables_html)
    io.save_figure(out["figures"]["before_after"], snakemake.output.before_after)
    io.save_figure(out["figures"]["reliability"], snakemake.output.reliability)
    io.save_figure(out["figures"]["buckets"], snakemake.output.buckets_figure)
    for name in ("ls_effect", "vd_effect", "vd_gap", "vd_bound"):
        io.save_figure(out["figures"][name], snakemake.output[name])
    for name, fig in out["figures"].items():
        run.log_figure(fig, f"figures/{name}.png")
    io.write_json(out["summary"], snakemake.output.summary)
    findings = out["summary"]["findings"]
    run.log_metrics({"sft_raises_ece.n_raised": findings.get("sft_raises_ece", {}).get("n_raised", 0)})
    run.log_metrics(out.get("vd_metrics", {}))  # V/D study: every model's metrics, Δ*, bound, and the trends
