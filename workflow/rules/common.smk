# Config validation, result paths and the factors the DAG expands over.
import itertools
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

import cbdm.config as cbdm_config
from cbdm.sources import NUM_CLASSES
from cbdm.workflow import visible_gpus


validate(config, "../schemas/config.schema.yaml")
try:
    cbdm_config.check(config)
except cbdm_config.ConfigError as err:
    raise WorkflowError(f"config error: {err}")

RESULTS = f"results/{config['suite']}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
VARIANTS = {name: cbdm_config.variant_settings(config, name) for name in config["variants"]}


def training_settings(variant):
    """What a training job depends on (sampling settings are not: changing them must not retrain)."""
    settings = VARIANTS[variant]
    return {key: settings[key] for key in ("name", "losses", "training")}


def sampling_settings(variant, labelset=None):
    """A variant's sampling settings; for a sample set of a protocol that overrides them
    (labelset 'exact-1000-<protocol>'), that protocol's."""
    return {"name": variant, "sampling": variant_sampling(variant, labelset_protocol(labelset))}


def variant_sampling(variant, protocol=None):
    """The sampling settings `variant` is evaluated with under `protocol` (None: its own)."""
    settings = VARIANTS[variant]
    return settings["protocol_sampling"].get(protocol, settings["sampling"])


def declared_guidance(variant, protocol):
    """The first guidance scale `variant` lists under `protocol` (the 'declared' choice)."""
    return cbdm_config.as_list(variant_sampling(variant, protocol)["guidance"])[0]


def labelset_protocol(labelset):
    """The protocol a sample set's name carries ('exact-1000-published' -> 'published'), or None."""
    if labelset is None:
        return None
    parts = labelset.split("-", 2)
    return parts[2] if len(parts) == 3 else None
BUILT_IN_VARIANTS = [name for name, v in VARIANTS.items() if not v["external"]]

# Paths of the stages; {imb} and {guidance} are factor_label()s of numbers, e.g. 10 or 0.8.
# A sample set is CELL/{labelset}, e.g. .../w1-s0/exact-1000; its metrics are CELL/{protocol}.
RUN = "{dataset}/IF{imb}/{variant}/seed{seed}"
CELL = f"{RUN}/w{{guidance}}-s{{sample_seed}}"
PROTOCOLS = config["evaluation"]["protocols"]
MAIN_PROTOCOL = config["evaluation"]["report_protocol"] or next(iter(PROTOCOLS))
SOURCE_NPZ = f"{RESULTS}/data/{{dataset}}/source.npz"
SOURCE_JSON = f"{RESULTS}/data/{{dataset}}/source.json"
TRAIN_NPZ = f"{RESULTS}/data/{{dataset}}/IF{{imb}}/train.npz"
MANIFEST = f"{RESULTS}/data/{{dataset}}/IF{{imb}}/manifest.json"
CLASSIFIER = f"{RESULTS}/classifier/{{dataset}}/classifier.pt"
MODEL = f"{RESULTS}/models/{RUN}/model.pt"
LOSS_LOG = f"{RESULTS}/models/{RUN}/loss.csv"
SAMPLES = f"{RESULTS}/samples/{CELL}/{{labelset}}.npz"
FEATURES = f"{RESULTS}/features/{CELL}/{{labelset}}.npz"
REFERENCE_FEATURES = f"{RESULTS}/features/{{dataset}}/IF{{imb}}/reference-{{reference}}.npz"
METRICS = f"{RESULTS}/metrics/{CELL}/{{protocol}}.json"
DIAGNOSTICS = f"{RESULTS}/diagnostics/{CELL}/{{labelset}}.json"
REPORT_DIR = f"{RESULTS}/report/{{dataset}}-IF{{imb}}"

# Where each reference set's images live: (file, array prefix).
REFERENCE_IMAGES = {
    "heldout": (SOURCE_NPZ, "heldout_"),
    "balanced_train": (SOURCE_NPZ, "pool_"),
    "longtail_train": (TRAIN_NPZ, ""),
}


def gpus_per_job():
    """GPUs a GPU job asks for: the config's choice, else whether this machine has an NVIDIA GPU."""
    chosen = config["resources"]["gpus_per_job"]
    if chosen is not None:
        return chosen
    if config["device"] == "cpu":
        return 0
    return 1 if config["device"] == "cuda" or visible_gpus() else 0


def stage_resources(stage, gpus=0):
    """Snakemake resources of a rule: GPUs (a number, or a function of the wildcards), memory
    (MB) and runtime (minutes) from the config."""
    return dict(gpu=gpus, **config["resources"][stage])


def train_gpus(wildcards):
    """One GPU per data-parallel training process."""
    return VARIANTS[wildcards.variant]["training"]["processes"] * gpus_per_job()


def model_path(variant):
    """Path pattern of a variant's model file, with {dataset}, {imb} and {seed} left open."""
    return MODEL.replace("{variant}", variant)


def loss_log_path(variant):
    return LOSS_LOG.replace("{variant}", variant)


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def num_classes(wildcards):
    return NUM_CLASSES[config["datasets"][wildcards.dataset]["source"]]


def dataset_factors():
    """(dataset, imbalance-factor label) pairs."""
    return [(name, cbdm_config.factor_label(f))
            for name, spec in config["datasets"].items()
            for f in cbdm_config.imbalance_factors(spec)]


def labelset(protocol, variant=None):
    """The sample set a protocol evaluates: its label policy and size, e.g. 'exact-1000'; with the
    protocol's name appended where it overrides `variant`'s sampling, e.g. 'exact-1000-published'."""
    spec = PROTOCOLS[protocol]
    name = f"{spec['labels']}-{spec['num_samples']}"
    if variant is not None and protocol in VARIANTS[variant]["protocol_sampling"]:
        name += f"-{protocol}"
    return name


# Sample-set names: label policy, size and, for a protocol's own sampling, the protocol.
LABELSET_PATTERN = (r"(exact|uniform_random|train_prior)-\d+"
                    + (f"(-({'|'.join(map(re.escape, PROTOCOLS))}))?"))


def cells(dataset, imb):
    """Wildcard dicts of every evaluation of one long-tailed dataset: variant x training seed x
    guidance x sampling seed x protocol."""
    for variant, protocol in itertools.product(VARIANTS, PROTOCOLS):
        sampling = variant_sampling(variant, protocol)
        for seed, guidance, sample_seed in itertools.product(
                config["seeds"], cbdm_config.as_list(sampling["guidance"]), sampling["seeds"]):
            yield dict(dataset=dataset, imb=imb, variant=variant, seed=seed,
                       guidance=cbdm_config.factor_label(guidance), sample_seed=sample_seed,
                       protocol=protocol, labelset=labelset(protocol, variant))


REPORT_FILES = {
    "csv": "table.csv", "runs": "runs.csv", "stats": "stats.csv", "paper": "paper_table.csv",
    "md": "table.md", "tex": "table.tex",
    "fid_vs_count": "fid_vs_count.png", "groups": "groups.png", "guidance": "guidance.png",
    "confusion": "confusion.png", "samples": "samples.png", "loss": "loss.png",
}


# Outputs of the report rule that Snakemake's HTML report (snakemake --report) shows, with the
# caption file (workflow/report/<caption>.rst) that explains each.
REPORT_CAPTIONS = {
    "csv": "table", "runs": "runs", "stats": "stats", "paper": "paper", "fid_vs_count": "fid_vs_count",
    "groups": "groups", "guidance": "guidance", "confusion": "confusion", "samples": "samples", "loss": "loss",
}
PROVENANCE = f"{RESULTS}/provenance.json"
RESOLVED_CONFIG = f"{RESULTS}/config.yaml"


def report_output(key):
    path = f"{REPORT_DIR}/{REPORT_FILES[key]}"
    if key not in REPORT_CAPTIONS:
        return path
    return report(path, caption=f"../report/{REPORT_CAPTIONS[key]}.rst", category="{dataset} IF {imb}")


def report_outputs():
    return [f"{REPORT_DIR}/{name}".format(dataset=dataset, imb=imb)
            for dataset, imb in dataset_factors() for name in REPORT_FILES.values()] + [PROVENANCE, RESOLVED_CONFIG]


def all_models():
    return [MODEL.format(dataset=dataset, imb=imb, variant=variant, seed=seed)
            for dataset, imb in dataset_factors() for variant in VARIANTS for seed in config["seeds"]]


def init_model(wildcards):
    """The model a variant starts from (training.init_from), same dataset and seed."""
    source = VARIANTS[wildcards.variant]["training"]["init_from"]
    return [] if source is None else MODEL.format(**{**wildcards, "variant": source})


def report_inputs(wildcards):
    all_cells = list(cells(wildcards.dataset, wildcards.imb))
    first_cell = {}  # the sample set in the grid: first seed, guidance, sampling seed and protocol
    for cell in all_cells:
        first_cell.setdefault(cell["variant"], cell)
    main_cells = [c for c in all_cells if c["protocol"] == MAIN_PROTOCOL]
    return {
        "metrics": [METRICS.format(**c) for c in all_cells],
        "diagnostics": [DIAGNOSTICS.format(**c) for c in main_cells],
        "samples": [SAMPLES.format(**c) for c in first_cell.values()],
        "losses": [LOSS_LOG.format(**c) for v, c in first_cell.items() if v in BUILT_IN_VARIANTS],
        "manifest": MANIFEST.format(**wildcards),
    }


def cell_fields(wildcards, protocol):
    """What a metrics file says about the evaluation it belongs to."""
    return dict(dataset=wildcards.dataset, imbalance_factor=float(wildcards.imb), variant=wildcards.variant,
                seed=int(wildcards.seed), guidance=float(wildcards.guidance),
                sample_seed=int(wildcards.sample_seed), protocol=protocol, **PROTOCOLS[protocol])


def published_results(wildcards):
    """Registry entries (config `published:`) for one long-tailed dataset."""
    if config["published"] is None:
        return []
    spec = dataset_spec(wildcards)
    return [e for e in cbdm_config.load_published(config["published"])
            if e["source"] == spec["source"] and float(e["imbalance_factor"]) == float(wildcards.imb)]
