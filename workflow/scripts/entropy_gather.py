"""Adapter: merge the per-part samples or human scores of one (model, dataset, decode) (granularity: shard)."""

from lmcal.core.tracking import job_run
from lmcal.entropy import runs

with job_run(snakemake) as run:
    stats = runs.gather(snakemake.input.parts, snakemake.output[0], kind=snakemake.params.kind)
    run.log_metrics({k: v for k, v in stats.items() if isinstance(v, (int, float))})
