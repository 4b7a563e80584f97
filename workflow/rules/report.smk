# Stage 6: one comparison table and set of plots per long-tailed dataset.


rule report:
    conda:
        "../envs/cbdm.yaml"
    input:
        unpack(report_inputs),
    output:
        **{key: report_output(key) for key in REPORT_FILES},
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
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/report/{{dataset}}-IF{{imb}}.log",
    script:
        "../scripts/report.py"


rule provenance:
    conda:
        "../envs/cbdm.yaml"
    input:
        models=all_models(),
    output:
        provenance=report(PROVENANCE, caption="../report/provenance.rst", category="7. Provenance",
                          labels={"item": "provenance (JSON)"}),
        html=report(PROVENANCE_HTML, caption="../report/provenance.rst", category="7. Provenance",
                    labels={"item": "provenance"}),
        config=report(RESOLVED_CONFIG, caption="../report/provenance.rst", category="7. Provenance",
                      labels={"item": "resolved config"}),
    params:
        config=config,
        seeds={"training": config["seeds"],
               "sampling": sorted({s for v in VARIANTS.values() for s in v["sampling"]["seeds"]})},
        code_dir=workflow.basedir,
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/provenance.log",
    script:
        "../scripts/provenance.py"
