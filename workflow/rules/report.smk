# Stage 6: one comparison table and set of plots per long-tailed dataset.


rule report:
    conda:
        "../envs/cbdm.yaml"
    input:
        unpack(report_inputs),
    output:
        **{key: f"{REPORT_DIR}/{name}" for key, name in REPORT_FILES.items()},
    params:
        expected_cells=lambda wc: list(cells(wc.dataset, wc.imb)),
        variants=list(VARIANTS),
        built_in=BUILT_IN_VARIANTS,
        groups=lambda wc: dataset_spec(wc)["groups"],
        overlap=config["evaluation"]["overlap"],
        evaluation=config["evaluation"],
        declared_guidance={name: v["guidance"][0] for name, v in VARIANTS.items()},
        sampling={name: v["sampling"] for name, v in VARIANTS.items()},
        features=config["features"],
        published=published_results,
        title=lambda wc: f"{config['suite']}: {wc.dataset}, imbalance factor {wc.imb}",
    log:
        f"{LOGS}/report/{{dataset}}-IF{{imb}}.log",
    script:
        "../scripts/report.py"
