"""Adapter: build one multiple-choice evaluation set (lmcal.evalsets) in the common schema."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.data import evalsets, factworld

with job_run(snakemake) as run:
    spec = dict(snakemake.params.spec)
    # the knowledge world's sets come from lmcal.data.factworld (which builds on lmcal.data.evalsets)
    items = factworld.evalset_from_spec(spec) if spec["kind"] == "facts" else evalsets.build_evalset(spec)
    io.write_parquet(items, snakemake.output.evalset)
    run.log_metrics({"n_items": len(items), "mean_choices": float(items["choices"].map(len).mean())})
    run.log_dataset(items.drop(columns="choices"), name=snakemake.wildcards.evalset, context="evaluation")
