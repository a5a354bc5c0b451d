"""Adapter: evaluation items, training and held-out documents of the task mixture (hash-disjoint)."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.emergence.study import build_task_data
from lmcal.emergence.tasks import TaskSpec

p = snakemake.params
with job_run(snakemake) as run:
    data = build_task_data(TaskSpec(**p.tasks), p.seed, p.train_docs, p.heldout_docs)
    io.write_parquet(data["items"], snakemake.output.eval_items)
    io.write_parquet(data["train"], snakemake.output.train)
    io.write_parquet(data["heldout"], snakemake.output.heldout)
    io.write_json(data["manifest"], snakemake.output.manifest)
    run.log_dataset(data["items"].drop(columns=["choices"]), "emergence_items", "evaluation")
    run.log_metrics({k: v for k, v in data["manifest"].items() if isinstance(v, (int, float))})
