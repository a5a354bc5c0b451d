"""Adapter: one model's choice probabilities on every evaluation set, its calibration metrics and diagrams."""

from pathlib import Path

from lmcal.calibration.sets import evaluate_sets
from lmcal.core.tracking import job_run
from lmcal.models import store as models

out = snakemake.output
with job_run(snakemake) as run:
    model, tokenizer = models.load_model(Path(snakemake.input.info).parent)
    evaluate_sets(model, tokenizer, snakemake.wildcards.model, snakemake.params.evalsets,
                  list(snakemake.input.evalsets), snakemake.params.settings,
                  {"scored": list(out.scored), "metrics": list(out.metrics), "figures": list(out.figures)}, run)
