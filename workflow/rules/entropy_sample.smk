# Entropy calibration, part A: prompts, samples with exact per-step entropy, and human-text scoring.
# One job per model (like the reference's per-model scripts): a job loads the weights once and covers every
# dataset and decode, which keeps process start-up out of the CPU budget. Outputs per (model, dataset, decode):
#   results/entropy/samples/model~{model}/data~{dataset}/decode~{decode}.parquet (+ .json sidecar)
#   results/entropy/human/model~{model}/data~{dataset}/decode~{decode}.parquet   (+ .json sidecar)


rule entropy_prompts:
    input:
        info="results/models/{model}/model_info.json",
        documents=expand("results/data/{dataset}/documents.parquet", dataset=config["entropy"]["datasets"]),
    output:
        prompts=expand(
            "results/entropy/prompts/model~{{model}}/data~{dataset}.parquet",
            dataset=config["entropy"]["datasets"],
        ),
        selection=expand(
            "results/entropy/prompts/model~{{model}}/data~{dataset}.json",
            dataset=config["entropy"]["datasets"],
        ),
    log:
        "results/logs/entropy_prompts/{model}.log",
    benchmark:
        "results/benchmarks/entropy_prompts/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        datasets=config["entropy"]["datasets"],
        n=config["entropy"]["n_samples"],
        prompt_tokens=config["entropy"]["prompt_tokens"],
        max_new_tokens=config["entropy"]["max_new_tokens"],
        min_continuation=config["entropy"]["min_continuation"],
        max_context=config["entropy"]["max_context"],
        chat_template=config["entropy"]["chat_template"],
        instructions=config["entropy"]["instructions"],
        doc_ids=config["entropy"]["doc_ids"],
    script:
        "../scripts/entropy_prompts.py"


rule entropy_sample:
    input:
        info="results/models/{model}/model_info.json",
        prompts=rules.entropy_prompts.output.prompts,
    output:
        samples=expand(
            "results/entropy/samples/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
        sidecars=expand(
            "results/entropy/samples/model~{{model}}/data~{dataset}/decode~{decode}.json",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
    log:
        "results/logs/entropy_sample/{model}.log",
    benchmark:
        "results/benchmarks/entropy_sample/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        decodes=config["entropy"]["decodes"],
        seed=config["entropy"]["seed"],
        max_new_tokens=config["entropy"]["max_new_tokens"],
        batch_size=config["entropy"]["batch_size"],
        shard_size=config["entropy"]["shard_size"],
        samples_per_prompt=config["entropy"]["samples_per_prompt"],
        shard_root="results/entropy/shards/model~{model}",
    script:
        "../scripts/entropy_sample.py"


rule entropy_score:
    input:
        info="results/models/{model}/model_info.json",
        prompts=rules.entropy_prompts.output.prompts,
    output:
        human=expand(
            "results/entropy/human/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
        sidecars=expand(
            "results/entropy/human/model~{{model}}/data~{dataset}/decode~{decode}.json",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
    log:
        "results/logs/entropy_score/{model}.log",
    benchmark:
        "results/benchmarks/entropy_score/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        decodes=config["entropy"]["decodes"],
        batch_size=config["entropy"]["score"]["batch_size"],
        vocab_chunk=config["entropy"]["vocab_chunk"],
        mixture_eps=config["entropy"]["mixture_eps"],
    script:
        "../scripts/entropy_score.py"
