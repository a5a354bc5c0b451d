"""Adapter: train the ladder's BPE tokenizer and tokenize the corpora into train / held-out streams."""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import tokenizers as ladder

with job_run(snakemake) as run:
    docs = [io.read_parquet(p) for p in snakemake.input.documents]
    tok, streams, manifest = ladder.build_tokenizer_and_streams(
        docs, snakemake.params.vocab_size, snakemake.params.tokenizer_chars, snakemake.params.eval_fraction,
        snakemake.params.seed, train_only=snakemake.params.train_only,
    )
    with io.atomic_dir(Path(snakemake.output.tokenizer).parent) as tmp:
        tok.save_pretrained(tmp)
    ladder.save_token_streams(snakemake.output.tokens, **streams)
    io.write_json(manifest, snakemake.output.manifest)
    run.log_metrics(manifest)
