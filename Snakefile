# cbdm: class-imbalanced diffusion benchmark.
# Data flow: dataset -> train -> sample -> features -> metrics (and augment) -> report, one rule file each.
# Run: snakemake --cores all all [--configfile config/paper/cifar10-lt.yaml]

from snakemake.utils import min_version

from cbdm.config import DEFAULT_CONFIG
from cbdm.workflow import check_profile_placeholders

min_version("8.0")


# A suite given with --configfile stands alone: the embedded default is read only without one.
if not workflow.overwrite_configfiles:

    configfile: DEFAULT_CONFIG


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"



# Names are matched literally: a '.' in a variant name (hinge_w0.01) is not a regex wildcard.
wildcard_constraints:
    dataset="|".join(map(re.escape, config["datasets"])),
    variant="|".join(map(re.escape, config["variants"])),
    imb=r"[0-9.e+-]+",
    guidance=r"[0-9.e+-]+",
    seed=r"\d+",
    sample_seed=r"\d+",
    labelset=LABELSET_PATTERN,
    row="|".join(map(re.escape, ["real_only", "real_oversampled", *config["variants"]])),
    protocol="|".join(map(re.escape, config["evaluation"]["protocols"])),


include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/augment.smk"
include: "workflow/rules/report.smk"


# Seconds of work each: on a cluster they run in the Snakemake process instead of queueing as jobs
# (prepare_source also reads or downloads the source archive, where compute nodes may have no network).
localrules:
    all,
    prepare_source,
    longtail,
    report,
    provenance,


# The container image is known only once the run starts (Snakemake 9 fills its remote execution
# settings after parsing), which is still before any job is submitted or any pod pulls it.
onstart:
    try:
        check_profile_placeholders({"container-image": workflow.remote_execution_settings.container_image})
    except ValueError as err:
        raise WorkflowError(str(err))


# User rules that build external variants (README: "Adding a variant by declaring a rule").
for extension in config["extensions"]:

    include: extension


missing = unbuilt_external_variants(workflow.rules)
if missing:
    raise WorkflowError(f"variant(s) {', '.join(missing)}: external, but no rule writes their model file "
                        f"({model_path(missing[0])}); add one to an `extensions:` rule file, writing "
                        f"model_path(\"{missing[0]}\") (README, 'Adding a variant by declaring a rule')")


rule all:
    input:
        report_outputs(),
        LEADERBOARD,
    default_target: True
