"""Adapter: fetch a pretrained model (hub, local or GGUF) and store it as results/models/{model}/."""

from pathlib import Path

from lmcal.core.tracking import job_run
from lmcal.models import store as models

with job_run(snakemake) as run:
    info = models.cache_model(snakemake.params.spec, snakemake.wildcards.model, Path(snakemake.output.info).parent)
    run.log_params(info.as_params())
    run.log_metrics({"n_params": info.n_params, "n_params_non_embedding": info.n_params_non_embedding})
