"""Adapter: train one ladder model and save it as results/models/ladder-{size}/."""

from pathlib import Path

import pandas as pd
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.ladder import study
from lmcal.models import checkpoint
from lmcal.models import store as models
from lmcal.models import tokenizers
from transformers import AutoTokenizer

p = snakemake.params
with job_run(snakemake) as run:
    tok = AutoTokenizer.from_pretrained(Path(snakemake.input.tokenizer).parent)
    streams = tokenizers.load_token_streams(snakemake.input.tokens)
    name = f"ladder-{snakemake.wildcards.size}"
    model, hist, loss = study.train_ladder_model(
        tok, streams, p.arch, name=name, steps=p.steps, batch_size=p.batch_size, seq_len=p.seq_len, lr=p.lr,
        warmup_steps=p.warmup_steps, eval_tokens=p.eval_tokens, seed=p.seed, checkpoint_dir=p.checkpoint_dir,
        # the checkpoint resumes only with these exact files (a new tokenizer must not meet old weights)
        fingerprint_inputs={"tokenizer_file": checkpoint.file_digest(snakemake.input.tokenizer),
                            "tokens_file": checkpoint.file_digest(snakemake.input.tokens)},
    )
    extra = {"heldout_loss": loss, "train_tokens": hist["train_tokens"], "tokens_per_s": hist["tokens_per_s"]}
    info = models.describe(model, tok, name=name, source="ladder", origin="results/ladder", revision=None, extra=extra)
    models.save_model_dir(model, tok, info, Path(snakemake.output.info).parent)
    io.write_parquet(pd.DataFrame({k: hist[k] for k in ("step", "train_loss", "lr")}), snakemake.output.history)
    run.log_params(info.as_params())
    run.log_metric_series("train_loss", hist["train_loss"], hist["step"])
    run.log_metric_series("eval_loss", hist["eval_loss"], hist["eval_step"])
    run.log_metrics({"heldout_loss": loss, "tokens_per_s": hist["tokens_per_s"], "n_params": info.n_params,
                     "n_params_non_embedding": info.n_params_non_embedding})
