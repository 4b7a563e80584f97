"""Mistakes a user makes in a config or on `cbdm evaluate`'s command line, each refused before any
job with one line that names the key (or option) and the fix; before, each passed `cbdm check`
and then ran with a silently wrong setting or failed late inside a job."""
import copy
import subprocess

import pytest
import yaml

from cbdm.config import ConfigError, deep_merge, load_config, validate_config, variant_settings
from cbdm.external import check_entry

from helpers import MINIMAL, minimal_config

NAME_RULE = "a variant name starts with a letter and holds only letters, digits, '_', '.' and '-'"


def problem(**overrides) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(deep_merge(copy.deepcopy(MINIMAL), overrides))
    return str(err.value)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    """PyYAML keeps the last of two `training:` blocks: the first one's settings were lost."""
    path = tmp_path / "c.yaml"
    text = yaml.safe_dump(MINIMAL) + "training:\n  steps: 10\ntraining:\n  lr: 0.001\n"
    path.write_text(text)
    line = text.splitlines().index("training:", text.splitlines().index("training:") + 1) + 1
    with pytest.raises(ConfigError, match=f"^{path}:{line}: key 'training' is given twice in one mapping: merge "
                                          f"the two"):
        load_config(path)
    inner = tmp_path / "inner.yaml"
    inner.write_text(yaml.safe_dump(MINIMAL) + "sampling:\n  steps: 5\n  steps: 6\n")
    with pytest.raises(ConfigError, match="key 'steps' is given twice"):
        load_config(inner)


def test_snakemake_refuses_a_config_file_with_a_key_given_twice(tmp_path, repo):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL) + "training:\n  steps: 10\ntraining:\n  lr: 0.001\n")
    result = subprocess.run(["snakemake", "-s", str(repo / "Snakefile"), "-n", "all", "--configfile", str(path)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "key 'training' is given twice in one mapping" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["0.1", 0.1, "a+b", "dd{x}pm", "", "my variant", "a/b", "real_only",
                                  "real_oversampled"])
def test_a_variant_name_that_breaks_paths_or_wildcards_or_is_reserved_is_refused(name):
    variants = {name: {"losses": [{"name": "eps_mse"}]}}
    with pytest.raises(ConfigError) as err:
        validate_config({**copy.deepcopy(MINIMAL), "variants": variants})
    assert str(err.value) == f"variants: the name {name!r} is not allowed: {NAME_RULE} (it names folders and " \
                             f"Snakemake wildcards); real_only and real_oversampled are reserved for the " \
                             f"augmentation experiment's control rows"


def test_variant_names_the_shipped_configs_use_are_accepted():
    for name in ("ddpm", "cbdm_overlap", "hinge_snr_w0.01", "ddpm-resampled"):
        config = {**copy.deepcopy(MINIMAL), "variants": {name: {"losses": [{"name": "eps_mse"}]}}}
        assert name in validate_config(config)["variants"]


def test_an_ema_decay_of_one_is_refused():
    """At 1 the EMA model, which is what is sampled, keeps its initial weights."""
    assert problem(training={"ema_decay": 1.0}).startswith("training.ema_decay: 1.0 is greater than or equal to "
                                                           "the maximum of 1")
    assert minimal_config(training={"ema_decay": 0.999})["training"]["ema_decay"] == 0.999


@pytest.mark.parametrize(("section", "value", "message"), [
    ("training", {"stpes": 3}, "variants.ddpm.training.stpes: unknown key `stpes`; did you mean `steps`?"),
    ("training", {"steps": 0}, "variants.ddpm.training.steps: 0 is less than the minimum of 1"),
    ("sampling", {"guidance": -2}, "variants.ddpm.sampling.guidance: -2 is less than the minimum of 0")])
def test_a_variants_override_names_the_key_that_is_wrong(section, value, message):
    variants = {"ddpm": {"losses": [{"name": "eps_mse"}], section: value}}
    assert problem(variants=variants).startswith(message)


def test_a_quoted_number_where_a_number_or_a_list_is_accepted_says_to_unquote_it():
    assert problem(sampling={"guidance": "1.5"}) == (
        "sampling.guidance: '1.5' is none of the accepted forms (number, array); write the number without quotes")
    assert problem(datasets={"digits": {"longtail": {"imbalance_factor": "100"}}}).startswith(
        "datasets.digits.longtail.imbalance_factor: '100' is none of the accepted forms (number, array)")


def test_an_evaluate_entry_name_or_path_is_checked_before_anything_is_built(tmp_path):
    config, samples = minimal_config(), tmp_path / "s.npz"
    samples.write_bytes(b"")
    check_entry(config, "mine-1.0", str(samples), None)
    with pytest.raises(ConfigError, match=r"--name '../../escaped': use letters, digits"):
        check_entry(config, "../../escaped", str(samples), None)
    with pytest.raises(ConfigError, match="--name 'ddpm' is a variant of the suite: give the entry another name"):
        check_entry(config, "ddpm", str(samples), None)
    with pytest.raises(ConfigError, match=f"--samples {tmp_path / 'typo.npz'}: does not exist"):
        check_entry(config, "mine", str(tmp_path / "typo.npz"), None)
    with pytest.raises(ConfigError, match="--ref-stats missing.npz: does not exist"):
        check_entry(config, "mine", str(samples), "missing.npz")


@pytest.mark.parametrize(("loss", "option", "value"), [
    ("coral", "temperature", 0.0), ("coral", "time_temperature", -1.0), ("coral", "projection_dim", 0),
    ("ccua", "temperature", -0.1), ("ccua", "gamma", -1.0), ("cm", "w_div", -0.2)])
def test_a_field_loss_option_out_of_its_range_is_refused(loss, option, value):
    """A temperature of 0 made the loss non-finite at the first step, reported as a learning-rate problem."""
    message = problem(variants={"ddpm": {"losses": [{"name": "eps_mse"}, {"name": loss, option: value}]}})
    assert message.startswith(f"variant ddpm: loss {loss!r}: option {option} must be ") and str(value) in message


@pytest.mark.parametrize(("overrides", "message"), [
    ({"network": {"norm_groups": 5, "base_channels": 16, "channel_mult": [1, 2]}},
     "network: norm_groups=5 must divide every level width [16, 32] (dataset digits: 8x8 images)"),
    ({"network": {"attention_levels": [5], "channel_mult": [1, 2]}},
     "network: attention_levels [5] out of range for 2 levels (dataset digits: 8x8 images)"),
    ({"network": {"channel_mult": [1, 2, 2, 2]}, "datasets": {"digits": {"image_size": 12}}},
     "network: image_size=12 is not divisible by 2**3: use fewer channel_mult levels (dataset digits: 12x12 images)"),
    ({"sampling": {"sampler": "ddim", "steps": 5000}},
     "variant ddpm: sampling.steps 5000 exceeds diffusion.num_timesteps 1000; DDIM takes at most one step"),
    ({"training": {"processes": 3, "batch_size": 64}},
     "training: batch_size 64 is not a multiple of processes 3: each process takes an equal share of a batch"),
    ({"diffusion": {"beta_start": 0.05, "beta_end": 0.0001}},
     "diffusion: beta_start 0.05 is not below beta_end 0.0001; the noise schedule must grow")])
def test_settings_that_failed_inside_a_job_or_ran_wrong_are_refused_by_check(overrides, message):
    """Each passed `cbdm check`: the network's geometry and the DDIM step count failed in the train
    or sample job (after the training), and a reversed noise schedule trained without a word."""
    assert problem(**overrides).startswith(message)


def test_a_loss_listed_twice_in_one_variant_is_refused():
    """A term copied twice passed `cbdm check` and trained at the summed weight, while the loss log
    (one column per loss name, cbdm.objective) kept only the last of the two terms' values."""
    losses = [{"name": "eps_mse"}, {"name": "overlap_hinge", "weight": 0.1}, {"name": "eps_mse"}]
    assert problem(variants={"ddpm": {"losses": losses}}) == (
        "variant ddpm: loss 'eps_mse' is listed twice (losses 1 and 3); the loss log keeps one column per "
        "loss: give it once, with the summed weight")


def test_a_variant_initialised_from_an_imported_variant_is_refused(tmp_path):
    """An imported variant (`samples:`) has no model file: a variant starting from it passed `cbdm
    check`, and `snakemake all` on a finished suite said "Nothing to be done" (Snakemake keeps an
    existing report whose new inputs no rule can make), leaving the variant out without a word."""
    samples = tmp_path / "mine.npz"
    samples.write_bytes(b"")
    variants = {"ddpm": {"losses": [{"name": "eps_mse"}]}, "mine": {"samples": str(samples)},
                "ft": {"losses": [{"name": "eps_mse"}], "training": {"init_from": "mine"}}}
    assert problem(variants=variants) == (
        "variant ft: training.init_from 'mine' is an imported variant (samples:), which has no model file to "
        "start from; start ft from a trained or external variant, or remove init_from")


def test_an_external_variant_that_no_extension_rule_builds_is_refused_when_snakemake_loads(tmp_path, repo):
    """With its extension listed but no rule writing its model, an external variant passed every
    check; on a finished suite `snakemake all` said "Nothing to be done" (Snakemake keeps an
    existing report whose new inputs no rule can make), on a new one it failed in the DAG."""
    from helpers import write_tiny_config

    config = yaml.safe_load(write_tiny_config(repo, tmp_path / "tiny.yaml").read_text())
    config["variants"]["mine"] = {"external": True}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["snakemake", "-s", str(repo / "Snakefile"), "-n", "all", "--configfile", "tiny.yaml"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0
    assert ("variant(s) mine: external, but no rule writes their model file (results/tiny/models/{dataset}/IF{imb}/"
            "mine/seed{seed}/model.pt); add one to an `extensions:` rule file, writing model_path(\"mine\")"
            ) in result.stdout + result.stderr


def test_one_sample_file_given_for_two_runs_of_an_imported_variant_is_refused(tmp_path):
    """The same file under two training seeds (a copied line) was imported twice and counted as two
    runs: a spread of 0 over them, and a paired difference whose seeds were one set."""
    samples = tmp_path / "run.npz"
    samples.write_bytes(b"")
    variants = {"ddpm": {"losses": [{"name": "eps_mse"}]},
                "mine": {"samples": {1.0: {0: str(samples), 1: str(tmp_path / "." / "run.npz")}}}}
    assert problem(seeds=[0, 1], variants=variants) == (
        f"variants.mine.samples: {samples} is given for guidance 1 seed 0 and for guidance 1 seed 1: one set would "
        f"count as two runs; give each run its own samples")


def test_a_variant_whose_every_loss_weight_is_zero_is_refused():
    """Weights of 0 on every term passed `cbdm check`: the loss is 0 at every step, so the model
    kept its initial weights, and its samples were scored and reported as a method."""
    variants = {"ddpm": {"losses": [{"name": "eps_mse", "weight": 0}, {"name": "cbdm", "weight": 0.0}]}}
    assert problem(variants=variants) == (
        "variant ddpm: every loss term has weight 0, so training would never change the model; give a term a "
        "positive weight")


def test_a_variant_of_regularizers_alone_is_refused_naming_them():
    """`losses: [{name: cbdm}]` (the DDPM term forgotten when copying a variant) passed `cbdm
    check` and trained: CBDM's term pulls two predictions together and never toward the noise,
    so the model learnt no denoiser and its samples were scored as a method. A denoising term
    at weight 0 leaves the regularizers alone as well; a user's own loss is not a regularizer
    unless registered as one."""
    message = ("variant mine: its losses ({}) are regularizers only: nothing would teach the network to predict "
               "the noise; add `- name: eps_mse` (or another denoising loss: t2h, cm)")
    assert problem(variants={"mine": {"losses": [{"name": "cbdm"}]}}) == message.format("cbdm")
    only_weighted = [{"name": "eps_mse", "weight": 0}, {"name": "overlap_hinge"}, {"name": "coral", "weight": 0.1}]
    assert problem(variants={"mine": {"losses": only_weighted}}) == message.format("overlap_hinge, coral")
    for denoising in ("eps_mse", "t2h", "cm"):
        config = deep_merge(copy.deepcopy(MINIMAL), {"variants": {"mine": {"losses": [{"name": denoising},
                                                                                       {"name": "ccua"}]}}})
        assert variant_settings(validate_config(config), "mine")["losses"][0]["name"] == denoising


def test_names_that_differ_only_in_case_are_refused():
    """`ddpm` and `DDPM` were two variants with two folders on Linux, and one folder on macOS,
    where the second's model and samples overwrote the first's."""
    variants = {"ddpm": {"losses": [{"name": "eps_mse"}]}, "DDPM": {"losses": [{"name": "eps_mse", "weight": 2}]}}
    assert problem(variants=variants) == ("variants: 'ddpm' and 'DDPM' differ only in case: on a case-insensitive "
                                          "file system (macOS, Windows) their folders are one; rename one of them")
    digits = MINIMAL["datasets"][next(iter(MINIMAL["datasets"]))]
    config = {**copy.deepcopy(MINIMAL), "datasets": {"digits": digits, "Digits": digits}}
    with pytest.raises(ConfigError, match="^datasets: 'digits' and 'Digits' differ only in case"):
        validate_config(config)
