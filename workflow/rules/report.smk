# README results section (lmcal.report): the claim records of every enabled study's summary -> markdown naming
# seeds, intervals, verdict rules and the machine, plus a snapshot per study. `python -m lmcal.report splice`
# copies the snapshots to docs/results/ and puts the section into README.md between the results markers.
#   results/report/results.md               the generated section
#   results/report/snapshot/{study}.json    claim records + machine, as cited by the section
import lmcal.core.config


rule results_section:
    input:
        summaries=expand(
            "results/{study}/summary.json",
            study=lmcal.core.config.claim_studies(config),
        ),
    output:
        section="results/report/results.md",
        snapshots=directory("results/report/snapshot"),
    log:
        "results/logs/results_section/results_section.log",
    benchmark:
        "results/benchmarks/results_section/results_section.tsv"
    conda:
        "../../envs/lmcal.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        studies=lmcal.core.config.claim_studies(config),
    script:
        "../scripts/results_section.py"
