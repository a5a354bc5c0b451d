"""Adapter: the exact toy world of the calibrated sampler (Algorithm 1, temperature, estimated F; spec §6)."""

from lmcal.core import io
from lmcal.core.tracking import job_run
from lmcal.entropy.calibrate_figures import plot_toyworld
from lmcal.entropy.calibrate_summary import toyworld_table

with job_run(snakemake) as run:
    settings = dict(snakemake.params.toyworld)
    n_rollouts, seed = settings.pop("n_rollouts", 16), settings.get("seed", 0)
    toy = toyworld_table(settings, n_rollouts=n_rollouts, seed=seed)
    io.write_json(toy, snakemake.output.table)
    fig = plot_toyworld(toy)
    io.save_figure(fig, snakemake.output.figure)
    run.log_figure(fig, "figures/toyworld.png")
    for i, r in enumerate(toy["table"]):
        run.log_metrics({f"toy.{i}.entce": r["entce"], f"toy.{i}.log_loss": r["log_loss"], f"toy.{i}.alpha": r["alpha"],
                         f"toy.{i}.f_rmse": r["f_rmse"]})
        print(f"{r['method']:45s} EntCE {r['entce']:+.5f}  log loss {r['log_loss']:.5f}  "
              f"alpha {r['alpha']:.4f}  F rmse {r['f_rmse']:.4f}")
