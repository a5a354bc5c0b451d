"""Adapter: one row per ladder model (parameters, held-out loss), a loss-vs-size figure and the summary."""

import matplotlib

matplotlib.use("Agg")
from lmcal.core import io
from lmcal.core.report_tables import write_tables_html
from lmcal.core.tracking import job_run
from lmcal.ladder import study as ladder
from lmcal.ladder.figures import plot_ladder

with job_run(snakemake) as run:
    infos = [io.read_json(p) for p in snakemake.input.infos]
    histories = [io.read_parquet(p) for p in snakemake.input.histories]
    table = ladder.ladder_table(infos, [i["extra"]["heldout_loss"] for i in infos])
    summary, fit = ladder.ladder_summary(table, n_boot=snakemake.params.n_boot, seed=snakemake.params.seed)
    fig = plot_ladder(table, histories, [i["name"] for i in infos], fit)
    io.write_parquet(table, snakemake.output.table)
    write_tables_html("Ladder: one row per model", {"ladder.parquet": table}, snakemake.output.tables_html)
    io.save_figure(fig, snakemake.output.figure)
    io.write_json(summary, snakemake.output.summary)
    run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    if fit is not None:
        run.log_params(fit.settings.as_params())
        run.log_metrics(fit.as_metrics("loss_fit."))
