# Stage 5: metrics of every sample set, for all classes, each class group and each class.
# The cell records the extractor, preprocessing and evaluation settings, so the leaderboard labels
# each row by how it was measured rather than by the config read later; the job adds the features
# file's extractor label and what an import did to the pixels (cbdm.leaderboard.measured_cell).
from cbdm.evaluate import metric_settings
from cbdm.leaderboard import measurement


rule metrics:
    conda:
        "../envs/cbdm.yaml"
    input:
        generated=lambda wc: FEATURES.format(**wc, labelset=labelset(wc.protocol, wc.variant)),
        reference=lambda wc: REFERENCE_FEATURES.format(
            dataset=wc.dataset, imb=wc.imb, reference=PROTOCOLS[wc.protocol]["reference"]),
    output:
        metrics=METRICS,
    params:
        groups=lambda wc: dataset_spec(wc)["groups"],
        num_classes=num_classes,
        evaluation=metric_settings(config["evaluation"]),
        device=config["device"],
        cell=lambda wc: {**cell_fields(wc, wc.protocol),
                         **measurement(config["features"], dataset_spec(wc), config["evaluation"])},
        origin=lambda wc: sample_origin(wc, labelset(wc.protocol, wc.variant)),
        reference_origin=lambda wc: reference_set(wc, PROTOCOLS[wc.protocol]["reference"]),
    threads: config["evaluation"]["threads"]
    resources:
        **stage_resources("other", shared_gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/metrics/{CELL}/{{protocol}}.log",
    benchmark:
        f"{BENCH}/metrics/{CELL}/{{protocol}}.tsv"
    script:
        "../scripts/metrics.py"


rule diagnostics:
    conda:
        "../envs/cbdm.yaml"
    input:
        samples=SAMPLES,
        train=TRAIN_NPZ,
        source=SOURCE_NPZ,
    output:
        diagnostics=DIAGNOSTICS,
    params:
        classifier_cfg=CLASSIFIER_SETTINGS,
        memorization_cfg=config["evaluation"]["memorization"],
        groups=lambda wc: dataset_spec(wc)["groups"],
        num_classes=num_classes,
        device=config["device"],
        cell=lambda wc: cell_fields(wc, MAIN_PROTOCOL),
        origin=sample_origin,
        source_origin=source_origin,
        train_origin=train_origin,
    threads: config["features"]["threads"]
    resources:
        **stage_resources("diagnostics", gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/diagnostics/{CELL}/{{labelset}}.log",
    benchmark:
        f"{BENCH}/diagnostics/{CELL}/{{labelset}}.tsv"
    script:
        "../scripts/diagnostics.py"


# The domain classifier's rates on the held-out real images, the floor for the leakage of samples
# (cbdm.phenomenon): read from the held-out reference features, which hold its predicted classes.
rule heldout_rates:
    conda:
        "../envs/cbdm.yaml"
    input:
        reference=lambda wc: REFERENCE_FEATURES.format(dataset=wc.dataset, imb=wc.imb, reference="heldout"),
    output:
        heldout=HELDOUT_RATES,
    params:
        groups=lambda wc: dataset_spec(wc)["groups"],
        num_classes=num_classes,
        cell=lambda wc: dict(dataset=wc.dataset, imbalance_factor=imbalance_factor(wc), reference="heldout"),
        reference_origin=lambda wc: reference_set(wc, "heldout"),
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/heldout_rates/{{dataset}}/IF{{imb}}.log",
    benchmark:
        f"{BENCH}/heldout_rates/{{dataset}}/IF{{imb}}.tsv"
    script:
        "../scripts/heldout_rates.py"
