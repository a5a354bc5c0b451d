# Entropy calibration, part A: prompts, samples with exact per-step entropy, and human-text scoring.
# One job per model (like the reference's per-model scripts): a job loads the weights once and covers every
# dataset and decode, which keeps process start-up out of the CPU budget. Outputs per (model, dataset[, decode]):
#   results/entropy/prompts/model~{model}/data~{dataset}.parquet (+ .json: the selected ids)
#   results/entropy/samples/model~{model}/data~{dataset}/decode~{decode}.parquet (+ .json sidecar)
#   results/entropy/human/model~{model}/data~{dataset}/decode~{decode}.parquet   (+ .json sidecar)
# With entropy.granularity: shard (clusters) the same files come from a prompts job per model and per-part
# sampling/scoring jobs, gathered. Torch threads: entropy.threads (default 1: on a 2-core laptop a 2-thread job
# waits for both cores and the small models gain little).
import re

import lmcal.workflow.entropy

if lmcal.workflow.entropy.granularity(config) == "model":

    # prompts -> samples -> human scores in ONE job per model: for small models process start-up (torch +
    # transformers imports, ~9 s) is nearly all of a job, so three jobs per model would triple it.
    rule entropy_sample:
        input:
            info="results/models/{model}/model_info.json",
            documents=expand(
                "results/data/{dataset}/documents.parquet", dataset=config["entropy"]["datasets"]
            ),
        output:
            prompts=expand(
                "results/entropy/prompts/model~{{model}}/data~{dataset}.parquet",
                dataset=config["entropy"]["datasets"],
            ),
            selection=expand(
                "results/entropy/prompts/model~{{model}}/data~{dataset}.json",
                dataset=config["entropy"]["datasets"],
            ),
            samples=expand(
                "results/entropy/samples/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
                dataset=config["entropy"]["datasets"],
                decode=list(config["entropy"]["decodes"]),
            ),
            sample_sidecars=expand(
                "results/entropy/samples/model~{{model}}/data~{dataset}/decode~{decode}.json",
                dataset=config["entropy"]["datasets"],
                decode=list(config["entropy"]["decodes"]),
            ),
            human=expand(
                "results/entropy/human/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
                dataset=config["entropy"]["datasets"],
                decode=list(config["entropy"]["decodes"]),
            ),
            human_sidecars=expand(
                "results/entropy/human/model~{{model}}/data~{dataset}/decode~{decode}.json",
                dataset=config["entropy"]["datasets"],
                decode=list(config["entropy"]["decodes"]),
            ),
        log:
            "results/logs/entropy_sample/{model}.log",
        benchmark:
            "results/benchmarks/entropy_sample/{model}.tsv"
        conda:
            "../../envs/lmcal.yaml"
        threads: config["entropy"]["threads"]
        resources:
            mem_mb=8000,
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
            decodes=config["entropy"]["decodes"],
            seed=config["entropy"]["seed"],
            batch_size=config["entropy"]["batch_size"],
            shard_size=config["entropy"]["shard_size"],
            samples_per_prompt=config["entropy"]["samples_per_prompt"],
            shard_root="results/entropy/shards/model~{model}",
            score_batch_size=config["entropy"]["score"]["batch_size"],
            vocab_chunk=config["entropy"]["vocab_chunk"],
            mixture_eps=config["entropy"]["mixture_eps"],
        script:
            "../scripts/entropy_model.py"

else:
    # granularity: shard (clusters): one job per (model, dataset, decode, part of shard_samples samples) and per
    # (model, dataset, part) for scoring; the gather rules merge the parts into the same files as above.

    rule entropy_prompts:
        input:
            info="results/models/{model}/model_info.json",
            documents=expand(
                "results/data/{dataset}/documents.parquet", dataset=config["entropy"]["datasets"]
            ),
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

    rule entropy_sample_part:
        input:
            info="results/models/{model}/model_info.json",
            prompts="results/entropy/prompts/model~{model}/data~{dataset}.parquet",
        output:
            samples="results/entropy/parts/samples/model~{model}/part~{part}/data~{dataset}/decode~{decode}.parquet",
            sidecar="results/entropy/parts/samples/model~{model}/part~{part}/data~{dataset}/decode~{decode}.json",
        log:
            "results/logs/entropy_sample_part/{model}/{dataset}/{decode}/{part}.log",
        benchmark:
            "results/benchmarks/entropy_sample_part/{model}/{dataset}/{decode}/{part}.tsv"
        wildcard_constraints:
            part="[0-9]+",
            decode="|".join(map(re.escape, config["entropy"]["decodes"])),
        conda:
            "../../envs/lmcal.yaml"
        threads: config["entropy"]["threads"]
        resources:
            mem_mb=8000,
        params:
            decodes=config["entropy"]["decodes"],
            seed=config["entropy"]["seed"],
            max_new_tokens=config["entropy"]["max_new_tokens"],
            batch_size=config["entropy"]["batch_size"],
            shard_size=config["entropy"]["shard_size"],
            samples_per_prompt=config["entropy"]["samples_per_prompt"],
            shard_root="results/entropy/shards/model~{model}/part~{part}-{dataset}-{decode}",
            sample_range=lambda w: lmcal.workflow.entropy.part_range(
                w.part, config["entropy"]["shard_samples"]
            ),
        script:
            "../scripts/entropy_sample.py"

    rule entropy_gather_samples:
        input:
            parts=lambda w: expand(
                "results/entropy/parts/samples/model~{model}/part~{part}/data~{dataset}/decode~{decode}.parquet",
                part=range(lmcal.workflow.entropy.n_sample_parts(config)),
                allow_missing=True,
                **w,
            ),
        output:
            samples="results/entropy/samples/model~{model}/data~{dataset}/decode~{decode}.parquet",
            sidecar="results/entropy/samples/model~{model}/data~{dataset}/decode~{decode}.json",
        log:
            "results/logs/entropy_gather_samples/{model}/{dataset}/{decode}.log",
        benchmark:
            "results/benchmarks/entropy_gather_samples/{model}/{dataset}/{decode}.tsv"
        conda:
            "../../envs/lmcal.yaml"
        threads: 1
        resources:
            mem_mb=4000,
        params:
            kind="samples",
        script:
            "../scripts/entropy_gather.py"

    rule entropy_score_part:
        input:
            info="results/models/{model}/model_info.json",
            prompts="results/entropy/prompts/model~{model}/data~{dataset}.parquet",
        output:
            human=expand(
                "results/entropy/parts/human/model~{{model}}/part~{{part}}/data~{{dataset}}/decode~{decode}.parquet",
                decode=list(config["entropy"]["decodes"]),
            ),
            sidecars=expand(
                "results/entropy/parts/human/model~{{model}}/part~{{part}}/data~{{dataset}}/decode~{decode}.json",
                decode=list(config["entropy"]["decodes"]),
            ),
        log:
            "results/logs/entropy_score_part/{model}/{dataset}/{part}.log",
        benchmark:
            "results/benchmarks/entropy_score_part/{model}/{dataset}/{part}.tsv"
        wildcard_constraints:
            part="[0-9]+",
        conda:
            "../../envs/lmcal.yaml"
        threads: config["entropy"]["threads"]
        resources:
            mem_mb=8000,
        params:
            decodes=config["entropy"]["decodes"],
            batch_size=config["entropy"]["score"]["batch_size"],
            vocab_chunk=config["entropy"]["vocab_chunk"],
            mixture_eps=config["entropy"]["mixture_eps"],
            doc_range=lambda w: lmcal.workflow.entropy.part_range(w.part, config["entropy"]["shard_samples"]),
        script:
            "../scripts/entropy_score.py"

    rule entropy_gather_human:
        input:
            parts=lambda w: expand(
                "results/entropy/parts/human/model~{model}/part~{part}/data~{dataset}/decode~{decode}.parquet",
                part=range(lmcal.workflow.entropy.n_score_parts(config)),
                allow_missing=True,
                **w,
            ),
        output:
            human="results/entropy/human/model~{model}/data~{dataset}/decode~{decode}.parquet",
            sidecar="results/entropy/human/model~{model}/data~{dataset}/decode~{decode}.json",
        log:
            "results/logs/entropy_gather_human/{model}/{dataset}/{decode}.log",
        benchmark:
            "results/benchmarks/entropy_gather_human/{model}/{dataset}/{decode}.tsv"
        conda:
            "../../envs/lmcal.yaml"
        threads: 1
        resources:
            mem_mb=4000,
        params:
            kind="human",
        script:
            "../scripts/entropy_gather.py"
