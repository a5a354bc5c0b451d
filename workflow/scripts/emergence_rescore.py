"""Adapter: metrics from the stored outputs only (a metric change reruns this rule, never a model)."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.emergence.study import rescore

with job_run(snakemake) as run:
    res = rescore(
        [io.read_parquet(f) for f in snakemake.input.outputs],
        [io.read_parquet(f) for f in snakemake.input.pass_until],
        ci=snakemake.params.ci,
    )
    io.write_parquet(res["scores"], snakemake.output.scores)
    io.write_parquet(res["curves"], snakemake.output.curves)
    io.write_parquet(res["pass_until"], snakemake.output.pass_until)
    run.log_metrics({"n_scored_items": len(res["scores"]), "n_curve_points": len(res["curves"])})
