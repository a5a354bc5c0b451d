"""Adapter: fine-tune one base model at one (beta, lr, seed) and save it as results/models/{base}--sft-{tag}/."""

from pathlib import Path

import pandas as pd
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import checkpoint
from lmcal.sft import sweep as sft_sweep

r = snakemake.params.run
with job_run(snakemake) as run:
    run.log_params({"label_smoothing": r["label_smoothing"], "seed": r["seed"], "lr": r["lr"], "base": r["base"]})
    conversations = io.read_parquet(snakemake.input.data)
    info, hist, metrics = sft_sweep.run_sft(Path(snakemake.input.info).parent, conversations, r,
                                            Path(snakemake.output.info).parent,
                                            checkpoint_dir=snakemake.params.checkpoint_dir,
                                            fingerprint_inputs={"data_file": checkpoint.file_digest(
                                                snakemake.input.data)})
    cols = ("step", "loss", "lr", "grad_norm", "tokens")
    io.write_parquet(pd.DataFrame({k: hist[k] for k in cols}), snakemake.output.history)
    run.log_metric_series("train_loss", hist["loss"], hist["step"])
    run.log_metric_series("lr", hist["lr"], hist["step"])
    run.log_metrics({k: v for k, v in metrics.items() if v is not None})
    run.log_metrics({"n_params": info.n_params, "n_params_non_embedding": info.n_params_non_embedding})
