# SFT with label smoothing (label-smoothing spec §1-§3): instruction data -> SFT per (model, beta, lr, seed) ->
# scoring of base (evaluate_calibration, calibration.smk) and fine-tuned models (in sft_train) -> summary; plus the V/D study (tokenizers x hidden sizes).
#   results/sft/data/{data}.parquet                          conversations (Tulu messages format)
#   results/models/{base}--sft-{tag}/                        fine-tuned model (tag = b{beta}-lr{lr}-s{seed}[...])
#   results/sft/history/{base}--sft-{tag}.parquet            per-step loss, lr, grad norm
#   results/sft/vd/cells/v{vocab}-d{hidden}.parquet          V/D cell, every seed: base + SFT per beta, metrics, bound
#   results/sft/buckets.parquet (+ .png)                     knowledge world: calibration per fact-frequency bucket
#   results/sft/summary.json                                 tables, findings, Delta* per model
import lmcal.workflow.sft
import lmcal.workflow.datasets


rule sft_data:
    input:
        evalset=lmcal.workflow.sft.data_eval_input(config),
    output:
        data="results/sft/data/{data}.parquet",
    log:
        "results/logs/sft_data/{data}.log",
    benchmark:
        "results/benchmarks/sft_data/{data}.tsv"
    wildcard_constraints:
        data="|".join(config["sft"]["instruction_data"]) or "NO_SFT_DATA",
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        spec=lmcal.workflow.sft.data_spec(config),
    script:
        "../scripts/sft_data.py"


rule sft_train:
    input:
        info="results/models/{base}/model_info.json",
        data=lmcal.workflow.sft.data_input(config),
        evalsets=expand(
            "results/calibration/evalsets/{evalset}.parquet", evalset=list(config["calibration"]["evalsets"])
        ),
    # The fine-tuned model is scored on every calibration set in this job (the same files evaluate_calibration
    # writes for base models): a separate evaluation job would pay ~8 s of start-up to score a tiny model.
    output:
        info="results/models/{base}--sft-{tag}/model_info.json",
        weights="results/models/{base}--sft-{tag}/model.safetensors",
        history="results/sft/history/{base}--sft-{tag}.parquet",
        scored=expand(
            "results/calibration/model~{{base}}--sft-{{tag}}/eval~{evalset}/items.parquet",
            evalset=list(config["calibration"]["evalsets"]),
        ),
        metrics=expand(
            "results/calibration/model~{{base}}--sft-{{tag}}/eval~{evalset}/metrics.json",
            evalset=list(config["calibration"]["evalsets"]),
        ),
        figures=[
            report(
                f"results/calibration/model~{{base}}--sft-{{tag}}/eval~{evalset}/reliability.png",
                caption="../report/calibration_reliability_sft.rst",
                category="Calibration",
                subcategory="Per model and set",
                labels={"model": "{base}--sft-{tag}", "evalset": evalset},
            )
            for evalset in config["calibration"]["evalsets"]
        ],
    log:
        "results/logs/sft_train/{base}--sft-{tag}.log",
    benchmark:
        "results/benchmarks/sft_train/{base}--sft-{tag}.tsv"
    wildcard_constraints:
        base=lmcal.workflow.sft.BASE_PATTERN,
        tag=lmcal.workflow.sft.TAG_PATTERN,
    conda:
        "../../envs/lmcal.yaml"
    threads: lmcal.workflow.sft.threads_of(config)
    resources:
        mem_mb=8000,
    params:
        run=lmcal.workflow.sft.run_lookup(config),
        checkpoint_dir="results/sft/checkpoints/{base}--sft-{tag}",
        evalsets=list(config["calibration"]["evalsets"]),
        settings=lmcal.workflow.datasets.evalset_settings(config),
    script:
        "../scripts/sft_train.py"


rule sft_vd_tokenizer:
    input:
        documents=expand("results/data/{dataset}/documents.parquet", dataset=config["sft"]["vd"]["datasets"]),
    output:
        tokenizer="results/sft/vd/tokenizer-v{vocab}/tokenizer/tokenizer.json",
        tokens="results/sft/vd/tokenizer-v{vocab}/tokens.safetensors",
        manifest="results/sft/vd/tokenizer-v{vocab}/tokens.json",
    log:
        "results/logs/sft_vd_tokenizer/v{vocab}.log",
    benchmark:
        "results/benchmarks/sft_vd_tokenizer/v{vocab}.tsv"
    wildcard_constraints:
        vocab="[0-9]+",
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        tokenizer_chars=config["sft"]["vd"]["tokenizer_chars"],
        corpus_chars=config["sft"]["vd"]["corpus_chars"],
        eval_fraction=config["sft"]["vd"]["eval_fraction"],
        train_only=lmcal.workflow.sft.vd_train_only(config),
        seed=config["seed"],
    script:
        "../scripts/sft_vd_tokenizer.py"


rule sft_vd_cell:
    input:
        tokenizer="results/sft/vd/tokenizer-v{vocab}/tokenizer/tokenizer.json",
        tokens="results/sft/vd/tokenizer-v{vocab}/tokens.safetensors",
        data=lmcal.workflow.sft.data_path(lmcal.workflow.sft.vd_run(config)["data"]),
        evalset=lmcal.workflow.sft.evalset_path(lmcal.workflow.sft.vd_run(config)["evalsets"][0]),
    output:
        rows="results/sft/vd/cells/v{vocab}-d{hidden}.parquet",
        reliability="results/sft/vd/cells/v{vocab}-d{hidden}-reliability.parquet",
    log:
        "results/logs/sft_vd_cell/v{vocab}-d{hidden}.log",
    benchmark:
        "results/benchmarks/sft_vd_cell/v{vocab}-d{hidden}.tsv"
    wildcard_constraints:
        vocab="[0-9]+",
        hidden="[0-9]+",
    conda:
        "../../envs/lmcal.yaml"
    threads: config["sft"]["vd"]["threads"]
    resources:
        mem_mb=4000,
    params:
        arch={"layers": config["sft"]["vd"]["layers"], "heads": config["sft"]["vd"]["heads"]},
        pretrain=config["sft"]["vd"]["pretrain"],
        run=lmcal.workflow.sft.vd_run(config),
        label_smoothing=config["sft"]["vd"]["label_smoothing"],
        eval_settings=lmcal.workflow.datasets.eval_settings(
            config, lmcal.workflow.sft.vd_run(config)["evalsets"][0]
        ),
        seeds=config["sft"]["vd"]["seeds"],
        checkpoint_dir="results/sft/vd/checkpoints/v{vocab}-d{hidden}",
    script:
        "../scripts/sft_vd_cell.py"


rule sft_summary:
    input:
        metrics=lmcal.workflow.sft.metric_targets(config),
        scored=lmcal.workflow.sft.items_targets(config),
        infos=lmcal.workflow.sft.info_targets(config),
        histories=lmcal.workflow.sft.history_targets(config),
        vd=lmcal.workflow.sft.vd_targets(config),
        base_scored=lmcal.workflow.datasets.fact_base_items(config),
    output:
        table="results/sft/table.parquet",
        effects="results/sft/ls_effect.parquet",
        vd_table="results/sft/vd_table.parquet",
        before_after=report(
            "results/sft/before_after.png", caption="../report/sft_before_after.rst", category="SFT"
        ),
        reliability=report(
            "results/sft/reliability.png", caption="../report/sft_reliability.rst", category="SFT"
        ),
        ls_effect=report("results/sft/ls_effect.png", caption="../report/sft_ls_effect.rst", category="SFT"),
        vd_effect=report("results/sft/vd_effect.png", caption="../report/sft_vd_effect.rst", category="SFT"),
        vd_gap=report("results/sft/vd_gap.png", caption="../report/sft_vd_gap.rst", category="SFT"),
        vd_bound=report("results/sft/vd_bound.png", caption="../report/sft_vd_bound.rst", category="SFT"),
        buckets="results/sft/buckets.parquet",
        buckets_figure=report("results/sft/buckets.png", caption="../report/sft_buckets.rst", category="SFT"),
        tables_html=report("results/sft/tables.html", caption="../report/sft_tables.rst", category="SFT"),
        summary=report("results/sft/summary.json", caption="../report/summary.rst", category="SFT"),
    log:
        "results/logs/sft_summary/sft_summary.log",
    benchmark:
        "results/benchmarks/sft_summary/sft_summary.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        runs=lmcal.workflow.sft.plan_runs(config),
        pairs=lmcal.workflow.sft.evaluation_pairs(config),
        n_bins=config["calibration"]["n_bins"],
        binning=config["calibration"]["binning"],
        fact_evalsets=lmcal.workflow.datasets.fact_evalsets(config),
        base_pairs=lmcal.workflow.datasets.fact_base_pairs(config),
        facts=config["facts"],
    script:
        "../scripts/sft_summary.py"
