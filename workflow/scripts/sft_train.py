"""Adapter: fine-tune one base model at one (beta, lr, seed), save it as results/models/{base}--sft-{tag}/ and
score the saved model on every calibration set (as evaluate_calibration scores base models)."""

from pathlib import Path

import pandas as pd
from lmcal.calibration.sets import evaluate_sets
from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.models import checkpoint
from lmcal.models import store as models
from lmcal.sft import sweep as sft_sweep

r, out = snakemake.params.run, snakemake.output
with job_run(snakemake) as run:
    run.log_params({"label_smoothing": r["label_smoothing"], "seed": r["seed"], "lr": r["lr"], "base": r["base"]})
    conversations = io.read_parquet(snakemake.input.data)
    model_dir = Path(out.info).parent
    info, hist, metrics = sft_sweep.run_sft(Path(snakemake.input.info).parent, conversations, r, model_dir,
                                            checkpoint_dir=snakemake.params.checkpoint_dir,
                                            fingerprint_inputs={"data_file": checkpoint.file_digest(
                                                snakemake.input.data)})
    cols = ("step", "loss", "lr", "grad_norm", "tokens")
    io.write_parquet(pd.DataFrame({k: hist[k] for k in cols}), out.history)
    run.log_metric_series("train_loss", hist["loss"], hist["step"])
    run.log_metric_series("lr", hist["lr"], hist["step"])
    run.log_metrics({k: v for k, v in metrics.items() if v is not None})
    run.log_metrics({"n_params": info.n_params, "n_params_non_embedding": info.n_params_non_embedding})
    # the saved model, reloaded as any evaluation job would load it (same dtype and device placement)
    model, tokenizer = models.load_model(model_dir)
    evaluate_sets(model, tokenizer, r["name"], snakemake.params.evalsets, list(snakemake.input.evalsets),
                  snakemake.params.settings,
                  {"scored": list(out.scored), "metrics": list(out.metrics), "figures": list(out.figures)}, run)
