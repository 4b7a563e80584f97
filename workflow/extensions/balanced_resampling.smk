# Example extension: a variant that is not a loss, built by its own rules.
#
# Class-balanced re-sampling, a classic long-tail baseline: every class is oversampled (its
# images repeated) up to the size of the largest class, then a plain DDPM is trained on that.
# To use it, add to a config:
#
#   extensions: [workflow/extensions/balanced_resampling.smk]
#   variants:
#     ddpm_resampled: {external: true, description: DDPM on a class-balanced resampled set}
#
# The contract with the rest of the workflow is one file: the rule must write
# model_path("<variant name>"), a model file in the format documented in cbdm/modelfile.py,
# with cbdm.modelfile.save_model and the identity model_identity(wildcards, "<variant name>")
# (scripts/train.py does both), or sampling refuses it.
# From there the variant is sampled, evaluated and reported like the built-in ones.
# Available here: RESULTS, LOGS, TRAIN_NPZ, model_path(), VARIANTS (resolved settings),
# config, num_classes().

RESAMPLED_NPZ = f"{RESULTS}/data/{{dataset}}/IF{{imb}}/train-resampled.npz"


rule resample_balanced:
    conda:
        "../envs/cbdm.yaml"
    input:
        train=TRAIN_NPZ,
    output:
        npz=RESAMPLED_NPZ,
    log:
        f"{LOGS}/resample_balanced/{{dataset}}-IF{{imb}}.log",
    script:
        "balanced_resampling.py"


rule train_ddpm_resampled:
    conda:
        "../envs/cbdm.yaml"
    input:
        train=RESAMPLED_NPZ,
    output:
        model=model_path("ddpm_resampled"),
        loss=loss_log_path("ddpm_resampled"),
    params:
        settings={**training_settings("ddpm_resampled"),
                  "losses": [{"name": "eps_mse", "weight": 1.0, "options": {}}]},
        network=config["network"],
        diffusion=config["diffusion"],
        device=config["device"],
        identity=lambda wc: model_identity(wc, "ddpm_resampled"),
        num_classes=num_classes,
        checkpoint=lambda wc: model_path("ddpm_resampled").format(**wc).replace("model.pt", "checkpoint.pt"),
    threads: VARIANTS["ddpm_resampled"]["training"]["threads"]
    log:
        f"{LOGS}/train/{{dataset}}/IF{{imb}}/ddpm_resampled/seed{{seed}}.log",
    benchmark:
        f"{BENCH}/train/{{dataset}}/IF{{imb}}/ddpm_resampled/seed{{seed}}.tsv"
    script:
        "../scripts/train.py"
