# Stage 6: one comparison table and set of plots per long-tailed dataset.


rule report:
    conda:
        "../envs/cbdm.yaml"
    input:
        unpack(report_inputs),
    output:
        **{key: f"{REPORT_DIR}/{name}" for key, name in REPORT_FILES.items()},
    params:
        variants=list(VARIANTS),
        built_in=BUILT_IN_VARIANTS,
        groups=lambda wc: dataset_spec(wc)["groups"],
        overlap=config["evaluation"]["overlap"],
        evaluation=config["evaluation"],
        title=lambda wc: f"{config['suite']}: {wc.dataset}, imbalance factor {wc.imb}",
    log:
        f"{LOGS}/report/{{dataset}}-IF{{imb}}.log",
    script:
        "../scripts/report.py"
