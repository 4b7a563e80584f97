# Stage 6: one comparison table and set of plots per long-tailed dataset.


rule report:
    conda:
        "../envs/cbdm.yaml"
    input:
        unpack(report_inputs),
    output:
        **{key: report_output(key) for key in REPORT_FILES},
    # The names of cbdm.report.ReportSettings' fields; built_in names the variants of the loss logs,
    # train_origin what the training set records and sample_origins what each variant's shown sample
    # set must record (cbdm.report.ReportFiles).
    params:
        title=lambda wc: f"{config['suite']}: {wc.dataset}, imbalance factor {wc.imb}",
        variants=list(VARIANTS),
        groups=lambda wc: dataset_spec(wc)["groups"],
        overlap=config["evaluation"]["overlap"],
        evaluation=config["evaluation"],
        protocol=MAIN_PROTOCOL,
        baseline=cbdm_config.baseline_variant(config),
        protocol_guidance={p: {name: declared_guidance(name, p) for name in VARIANTS} for p in PROTOCOLS},
        sampling={name: variant_sampling(name, MAIN_PROTOCOL) for name in VARIANTS},
        features=config["features"],
        published=published_results,
        expected_cells=lambda wc: list(cells(wc.dataset, wc.imb)),
        built_in=BUILT_IN_VARIANTS,
        train_origin=train_origin,
        sample_origins=shown_origins,
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
        identities=all_model_identities(),
        seeds={"training": config["seeds"],
               "sampling": sorted({s for v in VARIANTS for p in PROTOCOLS for s in variant_sampling(v, p)["seeds"]})},
        code_dir=workflow.basedir,
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/provenance.log",
    script:
        "../scripts/provenance.py"


# One table per suite across every variant and external entry evaluated (cbdm/leaderboard.py),
# with the reference statistics that let others score against the same reference.
LEADERBOARD = [f"{RESULTS}/leaderboard.csv", f"{RESULTS}/leaderboard.md"]


rule leaderboard:
    conda:
        "../envs/cbdm.yaml"
    input:
        metrics=[METRICS.format(**c) for d, imb in dataset_factors() for c in cells(d, imb)],
        stats=[REFERENCE_STATS.format(dataset=d, imb=imb, reference=r)
               for d, imb in dataset_factors() for r in REFERENCE_IMAGES],
    output:
        csv=LEADERBOARD[0],
        md=LEADERBOARD[1],
    params:
        config=config,
        results_dir=lambda wc, output: output.csv.rsplit("/", 1)[0],
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/leaderboard.log",
    script:
        "../scripts/leaderboard.py"
