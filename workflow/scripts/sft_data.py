"""Adapter: build one instruction data set (conversations) disjoint from its evaluation set."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.sft import sweep as sft_sweep

with job_run(snakemake) as run:
    ev = snakemake.input.evalset
    paths = [ev] if isinstance(ev, str) else list(ev)
    items = io.read_parquet(paths[0]) if paths else None
    data = sft_sweep.build_data(dict(snakemake.params.spec), items)
    io.write_parquet(data, snakemake.output.data)
    run.log_metrics({"n_conversations": len(data), "excluded_eval_items": 0 if items is None else len(items)})
    run.log_dataset(data, name=snakemake.wildcards.data, context="training")
