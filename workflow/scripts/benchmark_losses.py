"""Benchmark label-smoothed linear cross-entropy: naive, torch.compile, chunked, Triton, Liger, CCE (fwd+bwd).

Standalone:  python workflow/scripts/benchmark_losses.py --device cuda --sizes 576x49152,2304x256000 --out DIR
As rule benchmark_losses it takes params.settings and logs the table and ratios to MLflow via lmcal.core.tracking.
Writes benchmark.parquet (one row per size x method) and summary.json (ratios vs naive and vs Liger).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workflow/, so lmcal imports uninstalled

from lmcal.core import io
from lmcal.losses import benchmark


def run_and_write(settings: dict, table_path, summary_path):
    table = benchmark.run_benchmark(**settings)
    summary = {"settings": settings, "results": benchmark.summarize(table)}
    io.write_parquet(table, table_path)
    io.write_json(summary, summary_path)
    print(benchmark.format_table(table), flush=True)
    return table, summary


if "snakemake" in globals():
    from lmcal.core.report_tables import write_tables_html
    from lmcal.core.tracking import job_run

    with job_run(snakemake) as run:
        table, summary = run_and_write(dict(snakemake.params.settings), snakemake.output.table,
                                       snakemake.output.summary)
        run.log_table(table, "losses/benchmark.parquet")
        write_tables_html("Losses: label-smoothed linear cross-entropy, forward + backward",
                          {"benchmark.parquet": table}, snakemake.output.tables_html)
        run.log_metrics(benchmark.flat_metrics(summary["results"]))
elif __name__ == "__main__":
    settings, out = benchmark.parse_cli()
    run_and_write(settings, out / "benchmark.parquet", out / "summary.json")
