# Entropy-calibration analysis: curves and EntCE per run, size fits, Zipf exponents, toy theory, figures, summary.
# Reads the sampler/scorer outputs of entropy_sample.smk (results/entropy/{samples,human}/...). Like the sampler,
# one curves job per model covers every dataset and decode, which keeps process start-up out of the CPU budget.
import lmcal.workflow.entropy
import lmcal.workflow.entropy_calibrate


rule entropy_analysis_curves:
    input:
        info="results/models/{model}/model_info.json",
        samples=expand(
            "results/entropy/samples/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
        human=expand(
            "results/entropy/human/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
    output:
        curves=expand(
            "results/entropy/curves/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
        scalars=expand(
            "results/entropy/entce/model~{{model}}/data~{dataset}/decode~{decode}.json",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
        docs=expand(
            "results/entropy/docsums/model~{{model}}/data~{dataset}/decode~{decode}.parquet",
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
    log:
        "results/logs/entropy_analysis_curves/{model}.log",
    benchmark:
        "results/benchmarks/entropy_analysis_curves/{model}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        max_len=config["entropy_analysis"]["max_len"],
        smoothing=config["entropy_analysis"]["smoothing"],
        decodes=config["entropy"]["decodes"],
    script:
        "../scripts/entropy_analysis_curves.py"


rule entropy_analysis_aggregate:
    input:
        scalars=expand(
            "results/entropy/entce/model~{model}/data~{dataset}/decode~{decode}.json",
            model=config["entropy"]["models"],
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
        docs=expand(
            "results/entropy/docsums/model~{model}/data~{dataset}/decode~{decode}.parquet",
            model=config["entropy"]["models"],
            dataset=config["entropy"]["datasets"],
            decode=list(config["entropy"]["decodes"]),
        ),
    output:
        table="results/entropy/entce.parquet",
        fits="results/entropy/size_fits.parquet",
        draws="results/entropy/size_fit_draws.parquet",
        temperatures="results/entropy/temperature.parquet",
    log:
        "results/logs/entropy_analysis_aggregate/entropy_analysis_aggregate.log",
    benchmark:
        "results/benchmarks/entropy_analysis_aggregate/entropy_analysis_aggregate.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        families=config["entropy_analysis"]["families"],
        reference_decode=config["entropy_analysis"]["reference_decode"],
        decodes=config["entropy"]["decodes"],
        temperature_decodes=config["entropy_analysis"]["temperature_decodes"],
        size_key=config["entropy_analysis"]["size_key"],
        size_unit=config["entropy_analysis"]["size_unit"],
        negative=config["entropy_analysis"]["negative"],
        n_boot=config["entropy_analysis"]["n_boot"],
        ci=config["entropy_analysis"]["ci"],
        seed=config["seed"],
    script:
        "../scripts/entropy_analysis_aggregate.py"


rule entropy_analysis_zipf:
    input:
        documents="results/data/{dataset}/documents.parquet",
        tokenizer=lmcal.workflow.entropy.zipf_tokenizer_inputs(
            config["entropy_analysis"]["zipf"]["tokenizer"]
        ),
    output:
        zipf="results/entropy/zipf/data~{dataset}.json",
        rank_freq="results/entropy/zipf/data~{dataset}.parquet",
    log:
        "results/logs/entropy_analysis_zipf/{dataset}.log",
    benchmark:
        "results/benchmarks/entropy_analysis_zipf/{dataset}.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        top_k=config["entropy_analysis"]["zipf"]["top_k"],
        tokenizer=config["entropy_analysis"]["zipf"]["tokenizer"],
        n_boot=config["entropy_analysis"]["zipf"]["n_boot"],
        ci=config["entropy_analysis"]["ci"],
        seed=config["seed"],
    script:
        "../scripts/entropy_analysis_zipf.py"


rule entropy_analysis_theory:
    output:
        rates="results/entropy/theory/singleton_rates.parquet",
        slopes="results/entropy/theory/slopes.parquet",
        toy="results/entropy/theory/toy_generator.parquet",
        toy_slopes="results/entropy/theory/toy_slopes.parquet",
    log:
        "results/logs/entropy_analysis_theory/entropy_analysis_theory.log",
    benchmark:
        "results/benchmarks/entropy_analysis_theory/entropy_analysis_theory.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        theory=config["entropy_analysis"]["theory"],
        seed=config["seed"],
    script:
        "../scripts/entropy_analysis_theory.py"


rule entropy_analysis_figures:
    input:
        table="results/entropy/entce.parquet",
        fits="results/entropy/size_fits.parquet",
        draws="results/entropy/size_fit_draws.parquet",
        temperatures="results/entropy/temperature.parquet",
        curves=expand(
            "results/entropy/curves/model~{model}/data~{dataset}/decode~{decode}.parquet",
            model=config["entropy"]["models"],
            dataset=config["entropy"]["datasets"],
            decode=config["entropy_analysis"]["reference_decode"],
        ),
        rates="results/entropy/theory/singleton_rates.parquet",
        zipf=expand("results/entropy/zipf/data~{dataset}.json", dataset=config["entropy"]["datasets"]),
        rank_freq=expand("results/entropy/zipf/data~{dataset}.parquet", dataset=config["entropy"]["datasets"]),
    output:
        fig1=report(
            "results/entropy/figures/fig1_entce_vs_size.png",
            caption="../report/entropy_fig1.rst",
            category="Entropy",
            subcategory="Figures",
        ),
        fig2=report(
            "results/entropy/figures/fig2_curves_smoothed.png",
            caption="../report/entropy_fig2.rst",
            category="Entropy",
            subcategory="Figures",
        ),
        fig2_raw=report(
            "results/entropy/figures/fig2_curves_raw.png",
            caption="../report/entropy_fig2_raw.rst",
            category="Entropy",
            subcategory="Figures",
        ),
        fig3=report(
            "results/entropy/figures/fig3_entce_vs_logloss.png",
            caption="../report/entropy_fig3.rst",
            category="Entropy",
            subcategory="Figures",
        ),
        fig4=report(
            "results/entropy/figures/fig4_theory.png",
            caption="../report/entropy_fig4.rst",
            category="Entropy",
            subcategory="Figures",
        ),
    log:
        "results/logs/entropy_analysis_figures/entropy_analysis_figures.log",
    benchmark:
        "results/benchmarks/entropy_analysis_figures/entropy_analysis_figures.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        reference_decode=config["entropy_analysis"]["reference_decode"],
        families=config["entropy_analysis"]["families"],
        size_key=config["entropy_analysis"]["size_key"],
        size_unit=config["entropy_analysis"]["size_unit"],
        ci=config["entropy_analysis"]["ci"],
        fig3_models=config["entropy_analysis"]["fig3_models"],
        instruct=config["entropy_analysis"]["instruct"],
        fig_alphas=config["entropy_analysis"]["theory"]["fig_alphas"],
    script:
        "../scripts/entropy_analysis_figures.py"


rule entropy_analysis_summary:
    input:
        table="results/entropy/entce.parquet",
        fits="results/entropy/size_fits.parquet",
        zipf=expand("results/entropy/zipf/data~{dataset}.json", dataset=config["entropy"]["datasets"]),
        slopes="results/entropy/theory/slopes.parquet",
        toy_slopes="results/entropy/theory/toy_slopes.parquet",
        figures=rules.entropy_analysis_figures.output,
        calibrated=lmcal.workflow.entropy_calibrate.summary_targets(config),
    output:
        summary=report(
            "results/entropy/summary.json",
            caption="../report/summary.rst",
            category="Entropy",
            subcategory="Tables",
        ),
        exponents="results/entropy/exponents.parquet",
        tables_html=report(
            "results/entropy/tables.html",
            caption="../report/entropy_tables.rst",
            category="Entropy",
            subcategory="Tables",
        ),
    log:
        "results/logs/entropy_analysis_summary/entropy_analysis_summary.log",
    benchmark:
        "results/benchmarks/entropy_analysis_summary/entropy_analysis_summary.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        datasets=config["entropy"]["datasets"],
        theory=config["entropy_analysis"]["theory"],
        settings=config["entropy_analysis"],
    script:
        "../scripts/entropy_analysis_summary.py"
