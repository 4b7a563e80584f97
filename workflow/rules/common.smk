# What the stages share: the config (resolved once, by the package), result paths, the variants'
# settings and resources; then the helpers of each stage, one section per stage. They live here
# and not beside their rules because Snakemake's linter (tests/test_style.py) refuses a file that
# mixes rules and functions.
import itertools
import re
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError

import cbdm.config as cbdm_config
import cbdm.origins as cbdm_origins
from cbdm.dataset import data_origin, longtail_settings, reference_origin, source_settings
from cbdm.origins import labelset_protocol  # noqa: F401 (the rules call it)
from cbdm.sources import NUM_CLASSES
from cbdm.workflow import gpus_per_job, resolve_config, suite_paths


# --config values typed, a profile's placeholders refused, the schema's defaults filled, everything
# checked (cbdm.config.validate_config, as `cbdm check` does); one line naming the file on an error.
try:
    resolve_config(config, workflow)
except ValueError as err:
    raise WorkflowError(str(err))

PATHS = suite_paths(config["suite"])
RESULTS = PATHS["results"]
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
VARIANTS = {name: cbdm_config.variant_settings(config, name) for name in config["variants"]}


def training_settings(variant):
    """What a training job depends on (sampling settings are not: changing them must not retrain)."""
    return cbdm_origins.training_settings(VARIANTS[variant])


def variant_sampling(variant, protocol=None):
    """The sampling settings `variant` is evaluated with under `protocol` (None: its own)."""
    return cbdm_origins.variant_sampling(VARIANTS[variant], protocol)


def declared_guidance(variant, protocol):
    """The first guidance scale `variant` lists under `protocol` (the 'declared' choice)."""
    return cbdm_config.as_list(variant_sampling(variant, protocol)["guidance"])[0]


def guidance_scale(wildcards, protocol):
    """The guidance scale (the config's number, as a float) that a cell's {guidance} label names."""
    values = variant_sampling(wildcards.variant, protocol)["guidance"]
    return float(cbdm_config.factor_value(wildcards.guidance, values, f"variant {wildcards.variant}: guidance"))


def imbalance_factor(wildcards):
    """The imbalance factor (the config's number, as a float) that an {imb} label names."""
    return cbdm_origins.imbalance_factor(config, wildcards.dataset, wildcards.imb)


# Imported variants (`samples:`) are neither trained nor sampled: rule import_samples reads their files.
IMPORTED_VARIANTS = [name for name, v in VARIANTS.items() if v.get("samples")]
BUILT_IN_VARIANTS = [name for name, v in VARIANTS.items() if cbdm_origins.trained_by_cbdm(v)]
SAMPLED_VARIANTS = [name for name in VARIANTS if name not in IMPORTED_VARIANTS]

# Paths of the stages; {imb} and {guidance} are factor_label()s of numbers, e.g. 10 or 0.8.
# A sample set is CELL/{labelset}, e.g. .../w1-s0/exact-1000; its metrics are CELL/{protocol}.
RUN = "{dataset}/IF{imb}/{variant}/seed{seed}"
CELL = f"{RUN}/w{{guidance}}-s{{sample_seed}}"
PROTOCOLS = config["evaluation"]["protocols"]
MAIN_PROTOCOL = cbdm_config.report_protocol(config)

# The patterns `cbdm evaluate` also reads come from the package (cbdm.workflow.suite_paths).
SOURCE_NPZ, SOURCE_JSON = PATHS["source_npz"], PATHS["source_json"]
TRAIN_NPZ, MANIFEST, CLASSIFIER = PATHS["train_npz"], PATHS["manifest"], PATHS["classifier"]
REFERENCE_FEATURES, REFERENCE_STATS = PATHS["reference"], PATHS["reference_stats"]
MODEL = f"{RESULTS}/models/{RUN}/model.pt"
LOSS_LOG = f"{RESULTS}/models/{RUN}/loss.csv"
SAMPLES = f"{RESULTS}/samples/{CELL}/{{labelset}}.npz"
FEATURES = f"{RESULTS}/features/{CELL}/{{labelset}}.npz"
METRICS = f"{RESULTS}/metrics/{CELL}/{{protocol}}.json"
DIAGNOSTICS = f"{RESULTS}/diagnostics/{CELL}/{{labelset}}.json"
# The domain classifier on the real held-out images: the floor of the samples' leakage (cbdm.phenomenon).
HELDOUT_RATES = f"{RESULTS}/diagnostics/{{dataset}}/IF{{imb}}/heldout.json"
REPORT_DIR = f"{RESULTS}/report/{{dataset}}-IF{{imb}}"
AUGMENT = f"{RESULTS}/augment/{{dataset}}/IF{{imb}}/{{row}}.json"


def source_origin(wildcards):
    """What the job's prepared source (SOURCE_NPZ) records and every job reading it expects
    (cbdm.dataset.data_origin): one split with other settings is refused instead of used."""
    return data_origin(wildcards.dataset, dataset_spec(wildcards))


def train_origin(wildcards):
    """What the job's long-tailed training set (TRAIN_NPZ) records and every job reading it
    expects (cbdm.dataset.data_origin): one drawn with other settings is refused instead of used."""
    return data_origin(wildcards.dataset, dataset_spec(wildcards), imbalance_factor(wildcards))


# Where each reference set's images live: (file, array prefix, what the file records).
REFERENCE_IMAGES = {
    "heldout": (SOURCE_NPZ, "heldout_", source_origin),
    "balanced_train": (SOURCE_NPZ, "pool_", source_origin),
    "longtail_train": (TRAIN_NPZ, "", train_origin),
}


def stage_resources(stage, gpus=0, shared_gpus=0):
    """Snakemake resources of a rule: GPUs (a number, or a function of the wildcards), memory
    (MB) and runtime (minutes) from the config. `shared_gpus`: a small GPU job (features,
    metrics) runs on a GPU it shares with other jobs (`gpu_shared`, limited in the default
    profile) instead of claiming a whole one (`gpu`)."""
    return dict(gpu=gpus, gpu_shared=shared_gpus, **config["resources"][stage])


def model_path(variant):
    """Path pattern of a variant's model file, with {dataset}, {imb} and {seed} left open."""
    return MODEL.replace("{variant}", variant)


def model_identity(wildcards, variant=None, digest=True):
    """What a model file must say it was trained for (cbdm.origins.model_identity, which
    cbdm.modelfile.check_identity compares); `variant` for a rule whose path names the variant
    instead of a {variant} wildcard; `digest=False` for the training job, which computes the
    digest of its training settings itself."""
    return cbdm_origins.model_identity(config, dataset=wildcards.dataset, imb=wildcards.imb,
                                       variant=variant or wildcards.variant, seed=wildcards.seed, digest=digest,
                                       variants=VARIANTS)


def loss_log_path(variant):
    """Path pattern of a variant's training-loss log, with {dataset}, {imb} and {seed} left open."""
    return LOSS_LOG.replace("{variant}", variant)


def dataset_spec(wildcards):
    """The config entry of the job's {dataset}."""
    return config["datasets"][wildcards.dataset]


def source_spec(wildcards):
    """What the job's prepared source depends on: its dataset entry less the long tail and the
    class groups, which every job downstream of it would otherwise rerun for (training included)."""
    return source_settings(dataset_spec(wildcards))


def longtail_spec(wildcards):
    """The long-tail settings of one imbalance factor's job: the list of factors is left out, so
    that adding a factor does not rebuild the others."""
    return longtail_settings(dataset_spec(wildcards))


def num_classes(wildcards):
    """Classes of the job's {dataset}."""
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


def labelset_labels(wildcards):
    """The label policy a sample set's name starts with ('exact-1000-published' -> 'exact')."""
    return wildcards.labelset.split("-")[0]


def labelset_size(wildcards):
    """The sample count a sample set's name carries ('exact-1000-published' -> 1000; for 'fill-<n>',
    the fill percent)."""
    return int(wildcards.labelset.split("-")[1])


# Sample-set names: label policy, size and, for a protocol's own sampling, the protocol.
LABELSET_PATTERN = (r"(exact|uniform_random|train_prior|fill)-\d+"
                    + (f"(-({'|'.join(map(re.escape, PROTOCOLS))}))?"))


# train.smk


def train_gpus(wildcards):
    """One GPU per data-parallel training process."""
    return VARIANTS[wildcards.variant]["training"]["processes"] * gpus_per_job(config)


def init_model(wildcards):
    """The model a variant starts from (training.init_from), same dataset and seed."""
    source = VARIANTS[wildcards.variant]["training"]["init_from"]
    return [] if source is None else MODEL.format(**{**wildcards, "variant": source})


def training_priority(wildcards):
    """Longest training first: its cost grows with steps and the passes per step (about one per
    loss term), so the short trainings and the evaluation jobs fill the cores at the end instead
    of one long training running alone (benchmarks/README.md, 'The default suite's time')."""
    settings = VARIANTS[wildcards.variant]
    return settings["training"]["steps"] * len(settings["losses"])


# sample.smk


# Settings of the whole grid or of the job's execution, not of one cell's images: left out of the
# sample rule's params, since Snakemake reruns a job whose params change, and adding a guidance
# scale or a sampling seed would otherwise redraw every finished sample set.
NOT_A_CELLS_SETTING = ("guidance", "seeds", "threads")


def sampling_settings(variant, labelset):
    """A variant's sampling settings for one sample set (less NOT_A_CELLS_SETTING); for a sample
    set of a protocol that overrides them (labelset 'exact-1000-<protocol>'), that protocol's."""
    sampling = variant_sampling(variant, labelset_protocol(labelset))
    return {"name": variant, "sampling": {k: v for k, v in sampling.items() if k not in NOT_A_CELLS_SETTING}}


def sample_origin(wildcards, labelset=None):
    """What a sample set is of (cbdm.origins.sample_origin), for the sample set `labelset`, else
    the job's {labelset}: its sample or import job writes it into the set, and every job that
    reads the set or its features compares it with its own (cbdm.fingerprint.check_origin), as
    the readers of a finished suite do (cbdm.phenomenon)."""
    return cbdm_origins.sample_origin(config, dataset=wildcards.dataset, imb=wildcards.imb,
                                      variant=wildcards.variant, seed=wildcards.seed, guidance=wildcards.guidance,
                                      sample_seed=wildcards.sample_seed, labelset=labelset or wildcards.labelset,
                                      variants=VARIANTS)


# features.smk

def reference_set(wildcards, reference=None):
    """What the features of reference set `reference` (else the job's {reference}) record and
    every job reading them expects (cbdm.dataset.reference_origin): a features file of another
    set, or of this set drawn from other data, is refused instead of scored against."""
    return reference_origin(wildcards.dataset, dataset_spec(wildcards), reference or wildcards.reference,
                            imbalance_factor(wildcards))

# The domain classifier's recipe (train_classifier, and the diagnostics' CAS classifiers): it is
# trained whatever the extractor, so Inception's keys are left out; `threads` stays, since the thread
# count changes its weights.
CLASSIFIER_SETTINGS = {key: config["features"][key] for key in ("feature_dim", "epochs", "batch_size", "lr", "seed",
                                                                 "threads")}

# What a features job's output depends on: the extractor, and Inception's keys only when it is the
# extractor; `threads` is how fast, not what (see NOT_A_CELLS_SETTING).
FEATURES_SETTINGS = {key: value for key, value in config["features"].items()
                     if key != "threads" and (config["features"]["extractor"] == "inception"
                                              or not key.startswith("inception_"))}


# metrics.smk


def cell_fields(wildcards, protocol):
    """What a metrics file says about the evaluation it belongs to, with the sampler and steps its
    samples were drawn with (the leaderboard labels the row by them, not by the config it reads)."""
    sampling = variant_sampling(wildcards.variant, protocol)
    return dict(dataset=wildcards.dataset, imbalance_factor=imbalance_factor(wildcards), variant=wildcards.variant,
                seed=int(wildcards.seed), guidance=guidance_scale(wildcards, protocol),
                sample_seed=int(wildcards.sample_seed), protocol=protocol, **PROTOCOLS[protocol],
                sampler=sampling["sampler"], steps=sampling["steps"])


# augment.smk


def fill_cells(wildcards):
    """The sample sets filling an augmentation row, as the wildcards of their sample jobs: labels
    'fill-<percent>' at the variant's first guidance and sampling seed, one per training seed that a
    classifier seed uses (classifier seed k takes training seed k, cycling; cbdm.augment); none for
    the control rows."""
    if wildcards.row in ("real_only", "real_oversampled"):
        return []
    seeds = VARIANTS[wildcards.row].get("seeds", config["seeds"])[:len(config["augmentation"]["seeds"])]
    return [SimpleNamespace(dataset=wildcards.dataset, imb=wildcards.imb, variant=wildcards.row, seed=seed,
                            guidance=cbdm_config.factor_label(declared_guidance(wildcards.row, None)),
                            sample_seed=variant_sampling(wildcards.row)["seeds"][0],
                            labelset=f"fill-{config['augmentation']['fill_percent']}") for seed in seeds]


def fill_samples(wildcards):
    """The generated fills of an augmentation row (fill_cells); none for the control rows."""
    return [SAMPLES.format(**vars(cell)) for cell in fill_cells(wildcards)]


def fill_origin(wildcards):
    """The origins (sample_origin) the fills of an augmentation row must record, in fill_samples' order."""
    return [sample_origin(cell) for cell in fill_cells(wildcards)]


# report.smk (and the Snakefile's `all`)


def cells(dataset, imb):
    """Wildcard dicts of every evaluation of one long-tailed dataset: variant x training seed x
    guidance x sampling seed x protocol."""
    for variant, protocol in itertools.product(VARIANTS, PROTOCOLS):
        sampling = variant_sampling(variant, protocol)
        for seed, guidance, sample_seed in itertools.product(
                VARIANTS[variant].get("seeds", config["seeds"]), cbdm_config.as_list(sampling["guidance"]),
                sampling["seeds"]):
            yield dict(dataset=dataset, imb=imb, variant=variant, seed=seed,
                       guidance=cbdm_config.factor_label(guidance), sample_seed=sample_seed,
                       protocol=protocol, labelset=labelset(protocol, variant))


def augment_rows():
    """Rows of the augmentation experiment: the two controls without generated images (real only,
    real oversampled), then the fill of every variant the suite samples itself."""
    # An imported sample set has the per-class counts its author chose, not the fill this needs.
    return ["real_only", "real_oversampled", *SAMPLED_VARIANTS] if config["augmentation"]["enabled"] else []


REPORT_FILES = {
    "csv": "table.csv", "runs": "runs.csv", "stats": "stats.csv", "paper": "paper_table.csv",
    "augmentation": "augmentation.csv",
    "md": "table.md", "tex": "table.tex", "html": "table.html", "protocol": "protocol.html",
    "page_main": "main.html", "page_per_class": "per_class.html", "page_diagnostics": "diagnostics.html",
    "page_comparisons": "comparisons.html", "page_data": "data.html",
    "fid_vs_count": "fid_vs_count.png", "precision_recall": "precision_recall.png", "groups": "groups.png",
    "guidance": "guidance.png", "confusion": "confusion.png", "samples": "samples.png",
    "memorization": "memorization.png", "loss": "loss.png",
}


# Outputs of the report job that Snakemake's HTML report (snakemake --report) shows, with category
# (numbered so the menu lists the stages in order, the protocol first), the item's label and the
# caption file (workflow/report/<caption>.rst) that explains it.
REPORT_ITEMS = {
    "protocol": ("1. Protocol", "protocol card", "protocol"),
    "html": ("1. Protocol", "all tables on one page", "tables"),
    "page_data": ("2. Data", "training set per class", "data"),
    "loss": ("3. Training", "training loss", "loss"),
    "samples": ("4. Samples", "sample grid", "samples"),
    "memorization": ("4. Samples", "tail near-copies", "memorization"),
    "page_main": ("5. Metrics", "main table", "main"),
    "page_per_class": ("5. Metrics", "per-class table", "per_class"),
    "page_diagnostics": ("5. Metrics", "overlap and memorization tables", "diagnostics"),
    "fid_vs_count": ("5. Metrics", "per-class FID and KID plot", "fid_vs_count"),
    "precision_recall": ("5. Metrics", "precision-recall plot", "precision_recall"),
    "groups": ("5. Metrics", "class groups plot", "groups"),
    "guidance": ("5. Metrics", "guidance plot", "guidance"),
    "confusion": ("5. Metrics", "tail leakage (confusion) plot", "confusion"),
    "csv": ("5. Metrics", "every metric (CSV)", "table"),
    "runs": ("5. Metrics", "every run (CSV)", "runs"),
    "page_comparisons": ("6. Comparisons", "comparison tables", "comparisons"),
    "paper": ("6. Comparisons", "paper comparison (CSV)", "paper"),
    "stats": ("6. Comparisons", "paired statistics (CSV)", "stats"),
    "augmentation": ("6. Comparisons", "augmentation experiment (CSV)", "augmentation"),
}
PROVENANCE = f"{RESULTS}/provenance.json"
PROVENANCE_HTML = f"{RESULTS}/provenance.html"
RESOLVED_CONFIG = f"{RESULTS}/config.yaml"


def report_output(key):
    """The report job's output `key`, marked for Snakemake's HTML report where REPORT_ITEMS lists it."""
    path = f"{REPORT_DIR}/{REPORT_FILES[key]}"
    if key not in REPORT_ITEMS:
        return path
    category, label, caption = REPORT_ITEMS[key]
    return report(path, caption=f"../report/{caption}.rst", category=category, subcategory="{dataset} IF {imb}",
                  labels={"item": label})


def report_outputs():
    """Every report file of every long-tailed dataset, and the suite's provenance files."""
    return [f"{REPORT_DIR}/{name}".format(dataset=dataset, imb=imb)
            for dataset, imb in dataset_factors() for name in REPORT_FILES.values()] + [PROVENANCE, PROVENANCE_HTML,
                                                                                   RESOLVED_CONFIG]


def model_cells():
    """The wildcards of every model file the suite samples from."""
    return [SimpleNamespace(dataset=dataset, imb=imb, variant=variant, seed=seed)
            for dataset, imb in dataset_factors() for variant in SAMPLED_VARIANTS for seed in config["seeds"]]


def all_models():
    """Every model file the suite samples from (provenance lists them)."""
    return [MODEL.format(**vars(cell)) for cell in model_cells()]


def all_model_identities():
    """What each of all_models() must say it was trained for (model_identity), in its order:
    provenance refuses a file trained for another cell instead of listing it as this one's run."""
    return [model_identity(cell) for cell in model_cells()]


def shown_cells(wildcards):
    """{variant: the cell whose sample set the report shows (its grid and memorization figure)
    and whose training loss it plots}: the first seed, guidance, sampling seed and protocol."""
    first_cell = {}
    for cell in cells(wildcards.dataset, wildcards.imb):
        first_cell.setdefault(cell["variant"], cell)
    return first_cell


def shown_origins(wildcards):
    """{variant: the origin (sample_origin) its shown sample set must record}: the report refuses
    a set copied over another cell's, or kept from older settings, instead of showing its images."""
    return {variant: sample_origin(SimpleNamespace(**cell)) for variant, cell in shown_cells(wildcards).items()}


def report_inputs(wildcards):
    """The files one report reads: every metrics file, the main protocol's diagnostics, one sample
    set and loss log per variant (shown_cells), the data and the augmentation rows."""
    all_cells = list(cells(wildcards.dataset, wildcards.imb))
    first_cell = shown_cells(wildcards)
    main_cells = [c for c in all_cells if c["protocol"] == MAIN_PROTOCOL]
    return {
        "metrics": [METRICS.format(**c) for c in all_cells],
        "diagnostics": [DIAGNOSTICS.format(**c) for c in main_cells],
        "samples": [SAMPLES.format(**c) for c in first_cell.values()],
        "losses": [LOSS_LOG.format(**c) for v, c in first_cell.items() if v in BUILT_IN_VARIANTS],
        "manifest": MANIFEST.format(**wildcards),
        "train": TRAIN_NPZ.format(**wildcards),
        "augmentation": [AUGMENT.format(dataset=wildcards.dataset, imb=wildcards.imb, row=row) for row in augment_rows()],
        "heldout": HELDOUT_RATES.format(**wildcards),
    }


def published_results(wildcards):
    """Registry entries (config `published:`) for one long-tailed dataset."""
    if config["published"] is None:
        return []
    spec = dataset_spec(wildcards)
    return [e for e in cbdm_config.load_published(config["published"])
            if e["source"] == spec["source"] and cbdm_config.factor_label(e["imbalance_factor"]) == wildcards.imb]


def unbuilt_external_variants(rules):
    """External variants no rule in `rules` writes a model file for (checked once the extensions
    are included): Snakemake would plan nothing for them on a finished suite ("Nothing to be done":
    it keeps an existing report whose new inputs no rule can make), leaving them out unannounced."""
    (dataset, imb), seed = next(iter(dataset_factors())), config["seeds"][0]
    return [variant for variant, settings in VARIANTS.items() if settings["external"] and not any(
        r.is_producer(MODEL.format(dataset=dataset, imb=imb, variant=variant, seed=seed)) for r in rules)]
