# Stage 3 for imported variants (`samples:` in the config): a sample set made elsewhere becomes
# the suite's sample .npz at the usual path, so that features, metrics and the report treat it
# like the samples of a trained variant.
from cbdm.samplesets import source_state
from cbdm.sources import CLASS_NAMES


rule import_samples:
    conda:
        "../envs/cbdm.yaml"
    input:
        samples=lambda wc: VARIANTS[wc.variant]["samples"][wc.guidance][int(wc.seed)],
        manifest=MANIFEST,
        source=SOURCE_JSON,
        pool=SOURCE_NPZ,  # the real images the samples' pixel values are checked against
    output:
        samples=SAMPLES,
    wildcard_constraints:
        variant="|".join(IMPORTED_VARIANTS) or "^$",
    params:
        fmt=lambda wc: VARIANTS[wc.variant]["samples_format"],
        resize=lambda wc: VARIANTS[wc.variant]["samples_resize"],
        class_names=lambda wc: CLASS_NAMES[dataset_spec(wc)["source"]],
        labels=labelset_labels,
        num_samples=labelset_size,
        origin=sample_origin,
        source_origin=source_origin,
        source_state=lambda wc: source_state(VARIANTS[wc.variant]["samples"][wc.guidance][int(wc.seed)]),
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/import_samples/{CELL}/{{labelset}}.log",
    script:
        "../scripts/import_samples.py"
