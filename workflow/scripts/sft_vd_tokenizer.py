"""Adapter: one V/D-study BPE tokenizer at vocabulary size {vocab} and its train / held-out token streams."""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import tokenizers as ladder
from lmcal.sft import vd as vd_study

p = snakemake.params
with job_run(snakemake) as run:
    docs = vd_study.select_documents([io.read_parquet(f) for f in snakemake.input.documents], p.corpus_chars)
    tok, streams, manifest = ladder.build_tokenizer_and_streams(
        docs, int(snakemake.wildcards.vocab), p.tokenizer_chars, p.eval_fraction, p.seed, train_only=p.train_only)
    with io.atomic_dir(Path(snakemake.output.tokenizer).parent) as tmp:
        tok.save_pretrained(tmp)
    ladder.save_token_streams(snakemake.output.tokens, **streams)
    io.write_json(manifest, snakemake.output.manifest)
    run.log_metrics(manifest)
