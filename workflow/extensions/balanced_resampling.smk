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
# Available here: RESULTS, LOGS, BENCH, TRAIN_NPZ, MODEL, model_path(), VARIANTS (resolved
# settings), training_settings(), stage_resources(), config, num_classes(), train_origin() (what
# TRAIN_NPZ records, and the train rule checks its training set for), and the built-in rules to
# reuse with `use rule ... with:`.

RESAMPLED_NPZ = f"{RESULTS}/data/{{dataset}}/IF{{imb}}/train-resampled.npz"
# How balanced_resampling.py draws the set; change it with the script.
RESAMPLING = "every class repeated up to the largest class's count, the remainder by numpy RandomState(0)"


def resampled_origin(wildcards):
    """What RESAMPLED_NPZ records and its training job expects: the origin of the train.npz it was
    drawn from, and how it was drawn, so that train.npz itself, or a set re-sampled otherwise, put
    in its place is refused rather than trained on."""
    return {**train_origin(wildcards), "resampling": RESAMPLING}


rule resample_balanced:
    conda:
        "../envs/cbdm.yaml"
    input:
        train=TRAIN_NPZ,
    output:
        npz=RESAMPLED_NPZ,
    params:
        origin=train_origin,
        resampled_origin=resampled_origin,
    resources:
        **stage_resources("other"),
    log:
        f"{LOGS}/resample_balanced/{{dataset}}-IF{{imb}}.log",
    benchmark:
        f"{BENCH}/resample_balanced/{{dataset}}-IF{{imb}}.tsv"
    script:
        "balanced_resampling.py"


# The built-in train rule (its model and checkpoint paths, log, benchmark, threads and GPUs) on
# the resampled set; only the variant and its loss differ: a plain DDPM, eps_mse as the config
# would list it (an external variant declares no `losses`), resolved by the package.
use rule train as train_ddpm_resampled with:
    input:
        train=RESAMPLED_NPZ,
    wildcard_constraints:
        variant="ddpm_resampled",
    params:
        train_origin=resampled_origin,
        settings=lambda wc: {**training_settings(wc.variant),
                             "losses": cbdm_config.loss_terms(wc.variant, [{"name": "eps_mse"}])},
