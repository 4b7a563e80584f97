# Stage 1: real images -> training pool + held-out set -> long-tailed training sets.


rule prepare_source:
    conda:
        "../envs/cbdm.yaml"
    output:
        npz=SOURCE_NPZ,
        json=SOURCE_JSON,
    params:
        spec=source_spec,
        origin=source_origin,
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/prepare_source/{{dataset}}.log",
    benchmark:
        f"{BENCH}/prepare_source/{{dataset}}.tsv"
    script:
        "../scripts/prepare_source.py"


rule longtail:
    conda:
        "../envs/cbdm.yaml"
    input:
        npz=SOURCE_NPZ,
        json=SOURCE_JSON,
    output:
        npz=TRAIN_NPZ,
        manifest=MANIFEST,
    params:
        longtail=longtail_spec,
        imbalance_factor=imbalance_factor,
        source_origin=source_origin,
        origin=train_origin,
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/longtail/{{dataset}}-IF{{imb}}.log",
    script:
        "../scripts/longtail.py"
