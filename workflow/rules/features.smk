# Stage 4: the feature extractor, and features of every sample set and reference set.


rule train_classifier:
    conda:
        "../envs/cbdm.yaml"
    input:
        npz=SOURCE_NPZ,
    output:
        model=CLASSIFIER,
        report=f"{RESULTS}/classifier/{{dataset}}/classifier.json",
    params:
        features_cfg=CLASSIFIER_SETTINGS,
        device=config["device"],
        num_classes=num_classes,
        source_origin=source_origin,
    threads: config["features"]["threads"]
    resources:
        **stage_resources("features", gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/train_classifier/{{dataset}}.log",
    benchmark:
        f"{BENCH}/train_classifier/{{dataset}}.tsv"
    script:
        "../scripts/train_classifier.py"


rule features_reference:
    conda:
        "../envs/cbdm.yaml"
    input:
        images=lambda wc: REFERENCE_IMAGES[wc.reference][0],
        classifier=CLASSIFIER,
        source=SOURCE_JSON,
    output:
        features=REFERENCE_FEATURES,
    wildcard_constraints:
        reference="|".join(REFERENCE_IMAGES),
    params:
        prefix=lambda wc: REFERENCE_IMAGES[wc.reference][1],
        features_cfg=FEATURES_SETTINGS,
        device=config["device"],
        origin=lambda wc: REFERENCE_IMAGES[wc.reference][2](wc),
        reference_origin=reference_set,
        source_origin=source_origin,  # what the classifier records it was trained on
    threads: config["features"]["threads"]
    resources:
        **stage_resources("features", shared_gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/features/{{dataset}}/IF{{imb}}/reference-{{reference}}.log",
    benchmark:
        f"{BENCH}/features/{{dataset}}/IF{{imb}}/reference-{{reference}}.tsv"
    script:
        "../scripts/features.py"


rule features_samples:
    conda:
        "../envs/cbdm.yaml"
    input:
        images=SAMPLES,
        classifier=CLASSIFIER,
        source=SOURCE_JSON,
    output:
        features=FEATURES,
    params:
        prefix="",
        features_cfg=FEATURES_SETTINGS,
        device=config["device"],
        origin=sample_origin,
        source_origin=source_origin,  # what the classifier records it was trained on
    threads: config["features"]["threads"]
    resources:
        **stage_resources("features", shared_gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/features/{CELL}/{{labelset}}.log",
    benchmark:
        f"{BENCH}/features/{CELL}/{{labelset}}.tsv"
    script:
        "../scripts/features.py"


# Mean and covariance of every reference set's features per scope, in a file that travels
# (format: cbdm/refstats.py; `mu`/`sigma` as in EDM's fid.py reference files).
from cbdm.leaderboard import describe_features


rule reference_stats:
    conda:
        "../envs/cbdm.yaml"
    input:
        features=REFERENCE_FEATURES,
    output:
        stats=REFERENCE_STATS,
    wildcard_constraints:
        reference="|".join(REFERENCE_IMAGES),
    params:
        groups=lambda wc: dataset_spec(wc)["groups"],
        num_classes=num_classes,
        extractor=lambda wc: describe_features(config["features"]),
        reference=lambda wc: wc.reference,
        reference_origin=reference_set,
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/reference_stats/{{dataset}}/IF{{imb}}/{{reference}}.log",
    script:
        "../scripts/reference_stats.py"
