# Stage 2: train every built-in variant (one whose model is not built by an extension rule).


rule train:
    conda:
        "../envs/cbdm.yaml"
    input:
        train=TRAIN_NPZ,
        init=init_model,
    output:
        model=MODEL,
        loss=LOSS_LOG,
    wildcard_constraints:
        variant="|".join(BUILT_IN_VARIANTS) or "^$",
    params:
        settings=lambda wc: training_settings(wc.variant),
        network=config["network"],
        diffusion=config["diffusion"],
        device=config["device"],
        identity=lambda wc: model_identity(wc, digest=False),
        train_origin=train_origin,
        num_classes=num_classes,
        seed=lambda wc: int(wc.seed),
        checkpoint_path=f"{RESULTS}/models/{RUN}/checkpoint.pt",
    threads: lambda wc: VARIANTS[wc.variant]["training"]["threads"]
    priority: training_priority
    resources:
        **stage_resources("train", gpus=train_gpus),
    log:
        f"{LOGS}/train/{RUN}.log",
    benchmark:
        f"{BENCH}/train/{RUN}.tsv"
    script:
        "../scripts/train.py"
