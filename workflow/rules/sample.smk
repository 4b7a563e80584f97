# Stage 3: draw a sample set from every trained model, per guidance scale and sampling seed.


rule sample:
    conda:
        "../envs/cbdm.yaml"
    input:
        model=MODEL,
        manifest=MANIFEST,
    output:
        samples=SAMPLES,
    wildcard_constraints:
        variant="|".join(SAMPLED_VARIANTS) or "^$",
    params:
        settings=lambda wc: sampling_settings(wc.variant, wc.labelset),
        device=config["device"],
        identity=model_identity,
        guidance=lambda wc: guidance_scale(wc, labelset_protocol(wc.labelset)),
        sample_seed=lambda wc: int(wc.sample_seed),
        labels=labelset_labels,
        num_samples=labelset_size,
        origin=sample_origin,
    threads: lambda wc: variant_sampling(wc.variant, labelset_protocol(wc.labelset))["threads"]
    resources:
        **stage_resources("sample", gpus=gpus_per_job(config)),
    log:
        f"{LOGS}/sample/{CELL}/{{labelset}}.log",
    benchmark:
        f"{BENCH}/sample/{CELL}/{{labelset}}.tsv"
    script:
        "../scripts/sample.py"
