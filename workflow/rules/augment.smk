# Stage 5b: the augmentation experiment, one row (real images only, or a variant's fill) per job.


rule augment:
    conda:
        "../envs/cbdm.yaml"
    input:
        train=TRAIN_NPZ,
        source=SOURCE_NPZ,
        samples=fill_samples,
    output:
        augmentation=AUGMENT,
    params:
        augmentation=config["augmentation"],
        row=lambda wc: wc.row,
        origin=fill_origin,
        train_origin=train_origin,
        source_origin=source_origin,
        groups=lambda wc: dataset_spec(wc)["groups"],
        num_classes=num_classes,
        device=config["device"],
    threads: config["augmentation"]["threads"]
    resources:
        **stage_resources("diagnostics", gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/augment/{{dataset}}/IF{{imb}}/{{row}}.log",
    benchmark:
        f"{BENCH}/augment/{{dataset}}/IF{{imb}}/{{row}}.tsv"
    script:
        "../scripts/augment.py"
