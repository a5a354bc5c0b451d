"""Adapter of entropy_sample (granularity: model): for one model, select documents and build prompts (spec §3),
sample every (dataset, decode) with exact per-step entropies, then score the human continuations (spec §2).
One process, so torch/transformers start up once per model instead of once per step. Metrics are prefixed with
the step (prompts., sample., score.): sampling and scoring both report e.g. ``<dataset>/<decode>.mean_entropy``.
"""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.entropy import runs as protocol

p = snakemake.params
out = snakemake.output
model_dir = Path(snakemake.input.info).parent
with job_run(snakemake) as run:
    prompts = protocol.run_prompts(
        model_dir, dict(zip(p.datasets, snakemake.input.documents)), out.prompts, n=p.n,
        prompt_tokens=p.prompt_tokens, max_new_tokens=p.max_new_tokens, min_continuation=p.min_continuation,
        max_context=p.max_context, chat_template=p.chat_template, instructions=p.instructions,
        doc_ids=p.doc_ids or None,
    )
    run.log_metrics({"prompts": prompts})  # selected doc ids are in the .json outputs, logged as artifacts
    sampled = protocol.run_sampling(
        model_dir, out.prompts, out.samples, decodes=p.decodes, seed=p.seed, max_new_tokens=p.max_new_tokens,
        batch_size=p.batch_size, shard_root=p.shard_root, shard_size=p.shard_size,
        samples_per_prompt=p.samples_per_prompt,
    )
    run.log_params({"weights": sampled["weights"]})  # the same weights record for both steps: log it once
    run.log_metrics({"sample": sampled["runs"]})
    scored = protocol.run_scoring(
        model_dir, out.prompts, out.human, decodes=p.decodes, batch_size=p.score_batch_size,
        vocab_chunk=p.vocab_chunk, mixture_eps=p.mixture_eps,
    )
    run.log_metrics({"score": scored["runs"]})
