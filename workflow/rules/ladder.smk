# The model ladder: a BPE tokenizer and small Llama models trained on the default corpora.
import lmcal.workflow.datasets


rule train_tokenizer:
    input:
        documents=expand("results/data/{dataset}/documents.parquet", dataset=config["ladder"]["datasets"]),
    output:
        tokenizer="results/ladder/tokenizer/tokenizer.json",
        tokens="results/ladder/tokens.safetensors",
        manifest="results/ladder/tokens.json",
    log:
        "results/logs/train_tokenizer/train_tokenizer.log",
    benchmark:
        "results/benchmarks/train_tokenizer/train_tokenizer.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        vocab_size=config["ladder"]["vocab_size"],
        tokenizer_chars=config["ladder"]["tokenizer_chars"],
        eval_fraction=config["ladder"]["eval_fraction"],
        train_only=lmcal.workflow.datasets.ladder_train_only(config),
        seed=config["seed"],
    script:
        "../scripts/train_tokenizer.py"


rule train_ladder_model:
    input:
        tokenizer="results/ladder/tokenizer/tokenizer.json",
        tokens="results/ladder/tokens.safetensors",
    output:
        info="results/models/ladder-{size}/model_info.json",
        weights="results/models/ladder-{size}/model.safetensors",
        history="results/ladder/history/ladder-{size}.parquet",
    log:
        "results/logs/train_ladder_model/{size}.log",
    benchmark:
        "results/benchmarks/train_ladder_model/{size}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: config["ladder"]["threads"]
    resources:
        mem_mb=4000,
    params:
        arch=lookup(dpath="ladder/sizes/{size}", within=config),
        steps=config["ladder"]["train"]["steps"],
        batch_size=config["ladder"]["train"]["batch_size"],
        seq_len=config["ladder"]["train"]["seq_len"],
        lr=config["ladder"]["train"]["lr"],
        warmup_steps=config["ladder"]["train"]["warmup_steps"],
        eval_tokens=config["ladder"]["train"]["eval_tokens"],
        seed=config["seed"],
        checkpoint_dir="results/ladder/checkpoints/ladder-{size}",
    script:
        "../scripts/train_ladder_model.py"


rule ladder_summary:
    input:
        infos=expand("results/models/ladder-{size}/model_info.json", size=config["ladder"]["sizes"]),
        histories=expand("results/ladder/history/ladder-{size}.parquet", size=config["ladder"]["sizes"]),
    output:
        table="results/ladder/ladder.parquet",
        figure=report(
            "results/ladder/loss_vs_size.png", caption="../report/ladder_loss_vs_size.rst", category="Ladder"
        ),
        tables_html=report(
            "results/ladder/tables.html", caption="../report/ladder_tables.rst", category="Ladder"
        ),
        summary=report("results/ladder/summary.json", caption="../report/summary.rst", category="Ladder"),
    log:
        "results/logs/ladder_summary/ladder_summary.log",
    benchmark:
        "results/benchmarks/ladder_summary/ladder_summary.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        sizes=list(config["ladder"]["sizes"]),
        n_boot=200,
        seed=config["seed"],
    script:
        "../scripts/ladder_summary.py"
