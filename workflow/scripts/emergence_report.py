"""Adapter: fits, backtests, figures F1–F7/F11/F12 and results/emergence/summary.json."""

from pathlib import Path

import matplotlib.pyplot as plt
from lmcal.core import io
from lmcal.core.report_tables import write_tables_html
from lmcal.core.tracking import job_run
from lmcal.emergence.figures import make_figures
from lmcal.emergence.report import analyze, headline_metrics, summarize

out = snakemake.output
with job_run(snakemake) as run:
    curves, scores = io.read_parquet(snakemake.input.curves), io.read_parquet(snakemake.input.scores)
    pass_until = io.read_parquet(snakemake.input.pass_until)
    rep = analyze(curves, scores, pass_until, snakemake.params.analysis)
    run.log_params(rep["settings"].as_params())  # every fitting choice ((Mis)fitting checklist)
    with io.atomic_dir(out.tables) as tmp:
        for name, table in rep["tables"].items():
            io.write_parquet(table, Path(tmp) / f"{name}.parquet")
    write_tables_html("Emergence: fits, backtests and metric tables",
                      {f"tables/{name}.parquet": table for name, table in rep["tables"].items()}, out.tables_html)
    with io.atomic_dir(out.figures) as tmp:
        for name, fig in make_figures(rep, curves, pass_until).items():
            io.save_figure(fig, Path(tmp) / name)
            run.log_figure(fig, f"figures/{name}")
            plt.close(fig)
    io.write_json(rep["results"], out.analysis)
    summary = summarize(rep, curves)
    io.write_json(summary, out.summary)
    run.log_metrics(rep["fits"]["loss"].as_metrics(prefix="loss.") | headline_metrics(rep["results"]))
