"""Adapter: stored outputs of a pretrained reference model (e.g. SmolLM2, few-shot) on a subset of items."""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.emergence.study import evaluate_reference_model, select_items

p = snakemake.params
with job_run(snakemake) as run:
    items = select_items(io.read_parquet(snakemake.input.eval_items), p.components, p.n_items)
    outputs = evaluate_reference_model(
        Path(snakemake.input.info).parent, items, name=snakemake.wildcards.model, batch_size=p.batch_size
    )
    io.write_parquet(outputs, snakemake.output.outputs)
    run.log_metrics({"n_outputs": len(outputs)})
