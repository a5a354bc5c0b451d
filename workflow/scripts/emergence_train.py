"""Adapter: train one task-ladder rung (size, seed) with snapshots; writes its model directory."""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.emergence.ladder import TrainSettings, train_rung
from lmcal.models.store import load_model_info

p, wc = snakemake.params, snakemake.wildcards
with job_run(snakemake) as run:
    train = io.read_parquet(snakemake.input.train)["text"]
    heldout = io.read_parquet(snakemake.input.heldout)["text"]
    hist = train_rung(
        dict(p.size, name=wc.tsize),
        int(p.init_seed),
        train,
        heldout,
        TrainSettings(**p.train),
        Path(snakemake.output.info).parent,
        p.work_dir,
        max_position=p.max_position,
    )
    info = load_model_info(snakemake.output.info)
    run.log_params(info.as_params())
    run.log_metric_series("train_loss", hist["train_loss"], hist["step"])
    run.log_metric_series("heldout_ce", hist["eval_loss"], hist["eval_step"])
    run.log_metrics(
        {
            "tokens_per_s": hist["tokens_per_s"],
            "n_params_non_embedding": info.n_params_non_embedding,
            "heldout_ce": hist["eval_loss"][-1],
        }
    )
