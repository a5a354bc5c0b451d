# Emergence study (spec "emergence and scaling-law fits"): synthetic tasks -> task ladder (tiny Llamas, char
# tokenizer) per (size, seed), one job per size -> stored outputs per snapshot -> re-scoring -> fits, backtests, figures, summary.
#   results/emergence/data/{items,train,heldout}.parquet          evaluation items / training & held-out text
#   results/emergence/models/size~{tsize}/seed~{seed}/            rung (+ step~{k}/ snapshots), model_info.json
#   results/emergence/outputs/size~{tsize}/seed~{seed}.parquet    stored generations + log-probs (all snapshots)
#   results/emergence/pass_until/size~{tsize}/seed~{seed}.parquet PassUntil samples of the final model
#   results/emergence/outputs/reference~{model}.parquet           the same for a pretrained reference model
#   results/emergence/{scores,curves,pass_until}.parquet          re-scored metrics (only rescore reads outputs)
#   results/emergence/summary.json                                what the study shows, in numbers
import lmcal.workflow.emergence


rule emergence_task_data:
    output:
        eval_items="results/emergence/data/items.parquet",
        train="results/emergence/data/train.parquet",
        heldout="results/emergence/data/heldout.parquet",
        manifest="results/emergence/data/manifest.json",
    log:
        "results/logs/emergence_task_data/emergence_task_data.log",
    benchmark:
        "results/benchmarks/emergence_task_data/emergence_task_data.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        tasks=config["emergence"]["tasks"],
        train_docs=config["emergence"]["train_docs"],
        heldout_docs=config["emergence"]["heldout_docs"],
        seed=config["seed"],
        code=lmcal.workflow.emergence.code_version("lmcal.emergence.tasks"),
    script:
        "../scripts/emergence_task_data.py"


# One job per size trains every seed of that size into results/emergence/models/size~{tsize}/seed~{seed}/: a
# rung trains in ~12 CPU-s, less than twice a job's start-up (~8 s), so per-rung jobs spent a third of the
# ladder's time on imports. Checkpoints live in work_dir (outside the output directory), so a killed job resumes
# its unfinished rung and retrains none that had finished.
rule emergence_train:
    input:
        train="results/emergence/data/train.parquet",
        heldout="results/emergence/data/heldout.parquet",
    output:
        rungs=directory("results/emergence/models/size~{tsize}"),
    log:
        "results/logs/emergence_train/size~{tsize}.log",
    benchmark:
        "results/benchmarks/emergence_train/size~{tsize}.tsv"
    wildcard_constraints:
        tsize="|".join(config["emergence"]["sizes"]) or "NO_SIZES",
    conda:
        "../../envs/lmcal.yaml"
    threads: config["emergence"]["threads"]
    resources:
        mem_mb=3000,
    params:
        size=lookup(dpath="emergence/sizes/{tsize}", within=config),
        seeds=lambda wc: lmcal.workflow.emergence.size_seeds(config["emergence"])[wc.tsize],
        train=config["emergence"]["train"],
        max_position=config["emergence"]["max_position"],
        work_dir="results/emergence/work/size~{tsize}",
        # the run-wide seed moves every rung's init and batch order too (not only the task data): seed 0 keeps
        # each rung's own seed, seed s uses 1000 s + rung seed, so `--config seed=1` is a full reseed
        init_seeds=lambda wc: [
            lmcal.workflow.emergence.init_seed(config["seed"], sd)
            for sd in lmcal.workflow.emergence.size_seeds(config["emergence"])[wc.tsize]
        ],
        code=lmcal.workflow.emergence.code_version(
            "lmcal.emergence.ladder",
            "lmcal.emergence.chartok",
            "lmcal.models.llama",
            "lmcal.models.schedules",
        ),
    script:
        "../scripts/emergence_train.py"


# One job evaluates every rung: a job's fixed cost (importing torch, transformers and MLflow, ~10 CPU-s)
# exceeds the evaluation of a tiny rung, so per-rung jobs would spend most of the budget on imports.
rule emergence_evaluate:
    input:
        rungs=lmcal.workflow.emergence.size_dirs(config["emergence"]),
        eval_items="results/emergence/data/items.parquet",
    output:
        outputs=lmcal.workflow.emergence.rung_paths(
            config["emergence"], "results/emergence/outputs/size~{tsize}/seed~{seed}.parquet"
        ),
        pass_until=lmcal.workflow.emergence.rung_paths(
            config["emergence"], "results/emergence/pass_until/size~{tsize}/seed~{seed}.parquet"
        ),
    log:
        "results/logs/emergence_evaluate/emergence_evaluate.log",
    benchmark:
        "results/benchmarks/emergence_evaluate/emergence_evaluate.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: config["emergence"]["evaluate"]["threads"]
    resources:
        mem_mb=3000,
    params:
        rungs=lmcal.workflow.emergence.rungs(config["emergence"]),
        infos=lmcal.workflow.emergence.rung_paths(
            config["emergence"], "results/emergence/models/size~{tsize}/seed~{seed}/model_info.json"
        ),
        batch_size=config["emergence"]["evaluate"]["batch_size"],
        pass_until=config["emergence"]["pass_until"],
        code=lmcal.workflow.emergence.code_version(
            "lmcal.emergence.outputs", "lmcal.lm.likelihood", "lmcal.lm.padding"
        ),
    script:
        "../scripts/emergence_evaluate.py"


rule emergence_reference:
    input:
        info="results/models/{model}/model_info.json",
        eval_items="results/emergence/data/items.parquet",
    output:
        outputs="results/emergence/outputs/reference~{model}.parquet",
    log:
        "results/logs/emergence_reference/{model}.log",
    benchmark:
        "results/benchmarks/emergence_reference/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: config["emergence"]["reference"]["threads"]
    resources:
        mem_mb=6000,
    params:
        components=config["emergence"]["reference"]["components"],
        n_items=config["emergence"]["reference"]["n_items"],
        batch_size=config["emergence"]["reference"]["batch_size"],
    script:
        "../scripts/emergence_reference.py"


rule emergence_rescore:
    input:
        outputs=lmcal.workflow.emergence.rung_paths(
            config["emergence"], "results/emergence/outputs/size~{tsize}/seed~{seed}.parquet"
        )
        + expand(
            "results/emergence/outputs/reference~{model}.parquet",
            model=config["emergence"]["reference"]["models"],
        ),
        pass_until=lmcal.workflow.emergence.rung_paths(
            config["emergence"], "results/emergence/pass_until/size~{tsize}/seed~{seed}.parquet"
        ),
    output:
        scores="results/emergence/scores.parquet",
        curves="results/emergence/curves.parquet",
        pass_until="results/emergence/pass_until.parquet",
    log:
        "results/logs/emergence_rescore/emergence_rescore.log",
    benchmark:
        "results/benchmarks/emergence_rescore/emergence_rescore.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        ci=config["emergence"]["analysis"]["ci"],
        code=lmcal.workflow.emergence.code_version("lmcal.emergence.metrics", "lmcal.emergence.study"),
    script:
        "../scripts/emergence_rescore.py"


rule emergence_report:
    input:
        scores="results/emergence/scores.parquet",
        curves="results/emergence/curves.parquet",
        pass_until="results/emergence/pass_until.parquet",
    output:
        summary=report(
            "results/emergence/summary.json",
            caption="../report/summary.rst",
            category="Emergence",
            subcategory="Tables",
        ),
        analysis="results/emergence/analysis.json",
        tables=directory("results/emergence/tables"),
        tables_html=report(
            "results/emergence/tables.html",
            caption="../report/emergence_tables.rst",
            category="Emergence",
            subcategory="Tables",
        ),
        figures=report(
            directory("results/emergence/figures"),
            patterns=["{name}.png"],
            caption="../report/emergence_figures.rst",
            category="Emergence",
            subcategory="Figures",
        ),
    log:
        "results/logs/emergence_report/emergence_report.log",
    benchmark:
        "results/benchmarks/emergence_report/emergence_report.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        analysis=dict(config["emergence"]["analysis"], n_choices=config["emergence"]["tasks"]["n_choices"]),
        code=lmcal.workflow.emergence.code_version(
            "lmcal.emergence.report",
            "lmcal.emergence.analysis",
            "lmcal.emergence.forecast",
            "lmcal.emergence.figures",
            "lmcal.emergence.verdicts",
            "lmcal.core.claims",
        ),
    script:
        "../scripts/emergence_report.py"
