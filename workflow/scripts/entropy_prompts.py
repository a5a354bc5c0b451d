"""Adapter of entropy_prompts (granularity: shard): select documents and build prompt token ids for one model,
every entropy dataset (spec §3). Granularity model: entropy_model.py."""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.entropy import runs as protocol

p = snakemake.params
with job_run(snakemake) as run:
    documents = dict(zip(p.datasets, snakemake.input.documents))
    summary = protocol.run_prompts(
        Path(snakemake.input.info).parent, documents, snakemake.output.prompts, n=p.n,
        prompt_tokens=p.prompt_tokens, max_new_tokens=p.max_new_tokens, min_continuation=p.min_continuation,
        max_context=p.max_context, chat_template=p.chat_template, instructions=p.instructions,
        doc_ids=p.doc_ids or None,
    )
    run.log_metrics(summary)  # selected doc ids are in the .json outputs, which job_run logs as artifacts
