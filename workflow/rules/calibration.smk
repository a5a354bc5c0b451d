# Calibration evaluation (label-smoothing spec §2): multiple-choice evaluation sets, each model's choice
# probabilities on them, ECE / RMS-CE / Brier / NLL and reliability diagrams, then a summary over models x sets.
#   results/calibration/evalsets/{evalset}.parquet                       one schema for every set
#   results/calibration/model~{model}/eval~{evalset}/items.parquet      per item: probs, pred, gold, conf, correct
#   results/calibration/model~{model}/eval~{evalset}/metrics.json       + reliability.png
# Any model directory results/models/{model}/ (cached, ladder or fine-tuned) can be a target.
import lmcal.workflow.datasets
import lmcal.workflow.sft


wildcard_constraints:
    evalset="[A-Za-z0-9_.+-]+",


rule build_evalset:
    output:
        evalset="results/calibration/evalsets/{evalset}.parquet",
    log:
        "results/logs/build_evalset/{evalset}.log",
    benchmark:
        "results/benchmarks/build_evalset/{evalset}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        spec=lmcal.workflow.datasets.evalset_lookup(config),
    script:
        "../scripts/calibration_evalset.py"


# One job per model scores every set in calibration.evalsets: a job's fixed cost (importing torch and
# transformers, loading the model, ~8 CPU-s) exceeds scoring one set with a tiny model, so per-(model, set) jobs
# spent most of the default's calibration time on start-up. Asking for one set's file builds all of the model's.
# Fine-tuned models ({base}--sft-{tag}) are scored by sft_train itself.
rule evaluate_calibration:
    input:
        info="results/models/{model}/model_info.json",
        evalsets=expand(
            "results/calibration/evalsets/{evalset}.parquet", evalset=list(config["calibration"]["evalsets"])
        ),
    output:
        scored=expand(
            "results/calibration/model~{{model}}/eval~{evalset}/items.parquet",
            evalset=list(config["calibration"]["evalsets"]),
        ),
        metrics=expand(
            "results/calibration/model~{{model}}/eval~{evalset}/metrics.json",
            evalset=list(config["calibration"]["evalsets"]),
        ),
        figures=[
            report(
                f"results/calibration/model~{{model}}/eval~{evalset}/reliability.png",
                caption="../report/calibration_reliability_run.rst",
                category="Calibration",
                subcategory="Per model and set",
                labels={"model": "{model}", "evalset": evalset},
            )
            for evalset in config["calibration"]["evalsets"]
        ],
    log:
        "results/logs/evaluate_calibration/{model}.log",
    benchmark:
        "results/benchmarks/evaluate_calibration/{model}.tsv"
    wildcard_constraints:
        model=lmcal.workflow.sft.BASE_PATTERN,
    conda:
        "../../envs/lmcal.yaml"
    # One thread: two evaluations run side by side on 2 cores, and a busy machine does not thrash 2 OpenMP
    # threads (measured 8x CPU time for SmolLM2 at 2 threads on a loaded 2-core box).
    threads: 1
    resources:
        mem_mb=6000,
    params:
        evalsets=list(config["calibration"]["evalsets"]),
        # Per set: the scoring protocol with the set's own template / method over the study's. A dict, not
        # strings: Snakemake would read the template's {question} as a wildcard.
        settings=lmcal.workflow.datasets.evalset_settings(config),
    script:
        "../scripts/calibration_evaluate.py"


rule calibration_summary:
    input:
        metrics=expand(
            "results/calibration/model~{model}/eval~{evalset}/metrics.json",
            model=config["calibration"]["models"],
            evalset=list(config["calibration"]["evalsets"]),
        ),
        scored=expand(
            "results/calibration/model~{model}/eval~{evalset}/items.parquet",
            model=config["calibration"]["models"],
            evalset=list(config["calibration"]["evalsets"]),
        ),
    output:
        table="results/calibration/metrics.parquet",
        figures=[
            report(
                f"results/calibration/reliability~{evalset}.png",
                caption="../report/calibration_reliability_overlay.rst",
                category="Calibration",
                subcategory="Across models",
                labels={"figure": "reliability overlay", "evalset": evalset},
            )
            for evalset in config["calibration"]["evalsets"]
        ],
        tables_html=report(
            "results/calibration/tables.html",
            caption="../report/calibration_tables.rst",
            category="Calibration",
            subcategory="Across models",
            labels={"figure": "metrics table", "evalset": "all"},
        ),
        summary=report(
            "results/calibration/summary.json",
            caption="../report/summary.rst",
            category="Calibration",
            subcategory="Across models",
            labels={"figure": "summary.json", "evalset": "all"},
        ),
    log:
        "results/logs/calibration_summary/calibration_summary.log",
    benchmark:
        "results/benchmarks/calibration_summary/calibration_summary.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        models=config["calibration"]["models"],
        evalsets=list(config["calibration"]["evalsets"]),
        n_bins=config["calibration"]["n_bins"],
        binning=config["calibration"]["binning"],
    script:
        "../scripts/calibration_summary.py"
