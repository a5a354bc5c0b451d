"""Adapter: stored outputs (greedy generations, teacher-forced log-probs, MC choices) of every snapshot of
every rung, plus PassUntil samples of each final model. No metric is computed here (see emergence_rescore)."""

from pathlib import Path

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.emergence.study import evaluate_rung

p, inp, out = snakemake.params, snakemake.input, snakemake.output
with job_run(snakemake) as run:
    items = io.read_parquet(inp.eval_items)
    for (size, seed), info, out_path, pu_path in zip(p.rungs, p.infos, out.outputs, out.pass_until):
        outputs, samples = evaluate_rung(
            Path(info).parent, items, size=size, seed=seed, batch_size=p.batch_size, pass_until=p.pass_until
        )
        io.write_parquet(outputs, out_path)
        io.write_parquet(samples, pu_path)
        run.log_metrics(
            {
                f"n_snapshots.{size}.{seed}": outputs["step"].nunique(),
                f"n_pass_until_samples.{size}.{seed}": int(samples["n_samples"].sum()) if len(samples) else 0,
            }
        )
