# Documents and pretrained models: everything a study reads, prepared once and recorded.
import lmcal.workflow.datasets


rule prepare_dataset:
    output:
        documents="results/data/{dataset}/documents.parquet",
        manifest="results/data/{dataset}/manifest.json",
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_dataset/{dataset}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        spec=lmcal.workflow.datasets.dataset_lookup(config),
    script:
        "../scripts/prepare_dataset.py"


rule cache_model:
    output:
        info="results/models/{model}/model_info.json",
        weights="results/models/{model}/model.safetensors",
    log:
        "results/logs/cache_model/{model}.log",
    benchmark:
        "results/benchmarks/cache_model/{model}.tsv"
    wildcard_constraints:
        model="|".join(config["models"]) or "NO_MODELS",
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        spec=lookup(dpath="models/{model}", within=config),
    script:
        "../scripts/cache_model.py"
