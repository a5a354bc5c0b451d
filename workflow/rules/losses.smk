# Loss benchmark (label-smoothing spec §4-§6): label-smoothed linear cross-entropy implementations, fwd+bwd.
#   results/losses/benchmark.parquet   one row per (D, V) x method: time_ms, cpu_ms (CPU), peak_mb, loss
#   results/losses/summary.json        settings and, per size, time / memory ratios vs naive and vs Liger
# Not in the default targets: list `losses` in `studies`, or ask for the file. GPU: set losses.device: cuda.


rule benchmark_losses:
    output:
        table="results/losses/benchmark.parquet",
        tables_html=report(
            "results/losses/tables.html", caption="../report/losses_tables.rst", category="Losses"
        ),
        summary=report("results/losses/summary.json", caption="../report/summary.rst", category="Losses"),
    log:
        "results/logs/benchmark_losses/benchmark_losses.log",
    benchmark:
        "results/benchmarks/benchmark_losses/benchmark_losses.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: config["losses"]["threads"]
    resources:
        mem_mb=12000,
        gpu=int(config["losses"]["device"] == "cuda"),
    params:
        settings=config["losses"],
    script:
        "../scripts/benchmark_losses.py"
