# Stage 5: metrics of every sample set, for all classes, each class group and each class.


rule metrics:
    conda:
        "../envs/cbdm.yaml"
    input:
        generated=FEATURES,
        reference=lambda wc: REFERENCE_FEATURES.format(
            dataset=wc.dataset, imb=wc.imb, reference=config["evaluation"]["reference"]),
    output:
        metrics=METRICS,
    params:
        groups=lambda wc: dataset_spec(wc)["groups"],
        num_classes=num_classes,
        evaluation=config["evaluation"],
        cell=lambda wc: dict(dataset=wc.dataset, imbalance_factor=float(wc.imb), variant=wc.variant,
                             seed=int(wc.seed), guidance=float(wc.guidance),
                             sample_seed=int(wc.sample_seed),
                             reference=config["evaluation"]["reference"]),
    log:
        f"{LOGS}/metrics/{CELL}.log",
    benchmark:
        f"{BENCH}/metrics/{CELL}.tsv"
    script:
        "../scripts/metrics.py"
