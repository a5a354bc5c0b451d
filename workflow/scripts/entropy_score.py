"""Adapter of entropy_score_part (granularity: shard): teacher-forced log loss and entropy of one part of the
human continuations of one (model, dataset), every decode (spec §2). Granularity model: entropy_model.py."""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.entropy import runs as scoring

p = snakemake.params
with job_run(snakemake) as run:
    result = scoring.run_scoring(
        Path(snakemake.input.info).parent, snakemake.input.prompts, snakemake.output.human, decodes=p.decodes,
        batch_size=p.batch_size, vocab_chunk=p.vocab_chunk, mixture_eps=p.mixture_eps,
        doc_range=getattr(p, "doc_range", None),  # set by entropy_score_part (granularity: shard)
    )
    run.log_params({"weights": result["weights"]})
    run.log_metrics(result["runs"])
