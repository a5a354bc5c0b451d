# Future-entropy calibrated sampler (spec entropy-calibration §6, issue 11): the exact toy world, one fit-and-sample
# job per model (fit a on half the entropy study's prompt documents, sample the other half at the study's seeds),
# and a summary with the Figure 3-style plot. Reads the entropy study's prompts and per-document sums; the entropy
# summary (entropy_analysis.smk) waits for results/entropy/calibrated/summary.json when the study is enabled.
import lmcal.workflow.entropy_calibrate

CAL = lmcal.workflow.entropy_calibrate.settings(config)


rule entropy_calibrate_toyworld:
    output:
        table="results/entropy/calibrated/toyworld.json",
        figure=report(
            "results/entropy/calibrated/toyworld.png",
            caption="../report/entropy_calibrate_toyworld.rst",
            category="Entropy",
            subcategory="Calibrated sampler",
        ),
    log:
        "results/logs/entropy_calibrate_toyworld/entropy_calibrate_toyworld.log",
    benchmark:
        "results/benchmarks/entropy_calibrate_toyworld/entropy_calibrate_toyworld.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        toyworld=CAL.get("toyworld", {}),
    script:
        "../scripts/entropy_calibrate_toyworld.py"


rule entropy_calibrate_head:
    input:
        info="results/models/{model}/model_info.json",
        prompts=expand(
            "results/entropy/prompts/model~{{model}}/data~{dataset}.parquet",
            dataset=CAL.get("datasets", []),
        ),
    output:
        head=lmcal.workflow.entropy_calibrate.HEAD,
        record="results/entropy/calibrated/model~{model}/head.json",
    log:
        "results/logs/entropy_calibrate_head/{model}.log",
    benchmark:
        "results/benchmarks/entropy_calibrate_head/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=(CAL.get("methods") or {}).get("head") or {},
        fit_fraction=CAL.get("fit_fraction", 0.5),
        split_seed=CAL.get("split_seed", 0),
        batch_size=CAL.get("batch_size", 8),
        seed=config["entropy"]["seed"],
        samples_per_prompt=config["entropy"]["samples_per_prompt"],
    script:
        "../scripts/entropy_calibrate_head.py"


rule entropy_calibrate_run:
    input:
        info="results/models/{model}/model_info.json",
        head=lmcal.workflow.entropy_calibrate.head_input(CAL),
        prompts=expand(
            "results/entropy/prompts/model~{{model}}/data~{dataset}.parquet",
            dataset=CAL.get("datasets", []),
        ),
        docs=expand(
            "results/entropy/docsums/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=CAL.get("datasets", []),
            decode=list(config["entropy"]["decodes"]),
        ),
    output:
        records=expand(
            "results/entropy/calibrated/model~{{model}}/data~{dataset}/method~{method}.json",
            dataset=CAL.get("datasets", []),
            method=list(CAL.get("methods", {})),
        ),
        samples=expand(
            "results/entropy/calibrated/model~{{model}}/data~{dataset}/method~{method}.parquet",
            dataset=CAL.get("datasets", []),
            method=list(CAL.get("methods", {})),
        ),
    log:
        "results/logs/entropy_calibrate_run/{model}.log",
    benchmark:
        "results/benchmarks/entropy_calibrate_run/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        methods=CAL.get("methods", {}),
        decodes=list(config["entropy"]["decodes"]),
        a_grid=CAL.get("a_grid", []),
        fit_fraction=CAL.get("fit_fraction", 0.5),
        split_seed=CAL.get("split_seed", 0),
        batch_size=CAL.get("batch_size", 8),
        seed=config["entropy"]["seed"],
        max_new_tokens=config["entropy"]["max_new_tokens"],
        samples_per_prompt=config["entropy"]["samples_per_prompt"],
        max_len=config["entropy_analysis"]["max_len"],
        reference_decode=config["entropy_analysis"]["reference_decode"],
    script:
        "../scripts/entropy_calibrate_run.py"


rule entropy_calibrate_summary:
    input:
        toyworld=rules.entropy_calibrate_toyworld.output.table,
        records=expand(
            "results/entropy/calibrated/model~{model}/data~{dataset}/method~{method}.json",
            model=CAL.get("models", []),
            dataset=CAL.get("datasets", []),
            method=list(CAL.get("methods", {})),
        ),
        calibrated=expand(
            "results/entropy/calibrated/model~{model}/data~{dataset}/method~{method}.parquet",
            model=CAL.get("models", []),
            dataset=CAL.get("datasets", []),
            method=list(CAL.get("methods", {})),
        ),
        tau1=expand(
            "results/entropy/samples/model~{model}/data~{dataset}/decode~{decode}.parquet",
            model=CAL.get("models", []),
            dataset=CAL.get("datasets", []),
            decode=config["entropy_analysis"]["reference_decode"],
        ),
        human=expand(
            "results/entropy/human/model~{model}/data~{dataset}/decode~{decode}.parquet",
            model=CAL.get("models", []),
            dataset=CAL.get("datasets", []),
            decode=config["entropy_analysis"]["reference_decode"],
        ),
        heads=expand(
            "results/entropy/calibrated/model~{model}/head.json",
            model=CAL.get("models", []) if "head" in (CAL.get("methods") or {}) else [],
        ),
    output:
        summary="results/entropy/calibrated/summary.json",
        table="results/entropy/calibrated/table.parquet",
        curves="results/entropy/calibrated/step_curves.parquet",
        figure=report(
            "results/entropy/calibrated/fig3_calibrated.png",
            caption="../report/entropy_calibrate_fig3.rst",
            category="Entropy",
            subcategory="Calibrated sampler",
        ),
        curves_figure=report(
            "results/entropy/calibrated/step_curves.png",
            caption="../report/entropy_calibrate_curves.rst",
            category="Entropy",
            subcategory="Calibrated sampler",
        ),
    log:
        "results/logs/entropy_calibrate_summary/entropy_calibrate_summary.log",
    benchmark:
        "results/benchmarks/entropy_calibrate_summary/entropy_calibrate_summary.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        settings=CAL,
        max_len=config["entropy_analysis"]["max_len"],
        smoothing=config["entropy_analysis"]["smoothing"],
    script:
        "../scripts/entropy_calibrate_summary.py"
