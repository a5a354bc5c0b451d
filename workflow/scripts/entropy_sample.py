"""Adapter of entropy_sample_part (granularity: shard): sample one part of one (model, dataset, decode),
recording exact per-step entropies (spec §2). Granularity model: entropy_model.py."""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.entropy import runs as generation

p = snakemake.params
with job_run(snakemake) as run:
    result = generation.run_sampling(
        Path(snakemake.input.info).parent, snakemake.input.prompts, snakemake.output.samples, decodes=p.decodes,
        seed=p.seed, max_new_tokens=p.max_new_tokens, batch_size=p.batch_size, shard_root=p.shard_root,
        shard_size=p.shard_size, samples_per_prompt=p.samples_per_prompt,
        sample_range=getattr(p, "sample_range", None),  # set by entropy_sample_part (granularity: shard)
    )
    run.log_params({"weights": result["weights"]})
    run.log_metrics(result["runs"])
