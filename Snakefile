# lmcal: calibration and scaling studies of language models. See README.md.
from snakemake.utils import min_version

min_version("9.19")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/ladder.smk"
include: "workflow/rules/entropy_sample.smk"
include: "workflow/rules/entropy_analysis.smk"
include: "workflow/rules/entropy_calibrate.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/emergence.smk"
include: "workflow/rules/losses.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        lmcal.core.config.final_targets(config),
