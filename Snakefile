# cbdm: class-imbalanced diffusion benchmark.
# Data flow: dataset -> train -> sample -> features -> metrics -> report, one rule file each.
# Run: snakemake --cores 8 all [--configfile config/paper/cifar10-lt.yaml]

from snakemake.utils import min_version

min_version("8.0")


# A suite given with --configfile replaces the embedded default instead of merging into it.
if "datasets" not in config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"



wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(config["variants"]),
    imb=r"[0-9.e+]+",
    guidance=r"[0-9.e+]+",
    seed=r"\d+",
    sample_seed=r"\d+",
    labelset=LABELSET_PATTERN,
    protocol="|".join(config["evaluation"]["protocols"]),


include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/report.smk"


# User rules that build external variants (README: "Adding a variant by declaring a rule").
for extension in config["extensions"]:

    include: extension


rule all:
    input:
        report_outputs(),
    default_target: True
