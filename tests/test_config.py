import copy
from pathlib import Path

import pytest
import yaml

from cbdm.config import (
    ConfigError,
    deep_merge,
    factor_value,
    load_config,
    loss_terms,
    validate_config,
    variant_settings,
)

MINIMAL = {
    "suite": "t",
    "datasets": {"digits": {"source": "sklearn_digits", "longtail": {"n_max": 100},
                            "groups": {"head": [0, 1], "tail": [8, 9]}}},
    "variants": {"ddpm": {"losses": [{"name": "eps_mse"}]}},
}


def config(**overrides):
    return validate_config(deep_merge(copy.deepcopy(MINIMAL), overrides))


def test_defaults_are_filled_from_the_schema():
    c = config()
    assert c["training"]["label_drop"] == {"policy": "batch", "probability": 0.1}
    assert c["diffusion"] == {"num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert c["datasets"]["digits"]["longtail"]["profile"] == "exponential"
    assert c["seeds"] == [0]


def test_the_shipped_configs_validate(repo, monkeypatch):
    monkeypatch.chdir(repo)  # their paths (published registry) are relative to the repository
    for path in [repo / "config/config.yaml", *sorted((repo / "config/paper").glob("*.yaml"))]:
        load_config(path)


def test_variant_settings_merge_overrides_and_resolve_loss_options():
    c = config(variants={"cbdm": {"losses": [{"name": "eps_mse"}, {"name": "cbdm", "tau": 2.0}],
                                  "training": {"batch_size": 48}, "sampling": {"guidance": [0.8, 1.6]}}})
    s = variant_settings(c, "cbdm")
    assert s["training"]["batch_size"] == 48 and s["training"]["lr"] == c["training"]["lr"]
    assert s["guidance"] == [0.8, 1.6]
    assert s["losses"][1] == {"name": "cbdm", "weight": 1.0,
                              "options": {"tau": 2.0, "commitment": 0.25, "target": "train_prior"}}


@pytest.mark.parametrize("overrides, message", [
    ({"variants": {"x": {"losses": [{"name": "focal"}]}}}, "registered losses: cbdm, ccua, cm, coral, eps_mse"),
    ({"variants": {"x": {"losses": [{"name": "cbdm", "temperature": 1}]}}}, "known options"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "training": {"stepz": 3}}}}, "stepz"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "training": {"lr": "fast"}}}}, "not of type"),
    ({"variants": {"x": {}}}, "declares no `losses`"),
    ({"datasets": {"digits": {"groups": {"tail": [10]}}}}, "classes 0..9"),
    ({"datasets": {"digits": {"longtail": {"imbalance_factor": [10, 0.5]}}}}, "imbalance_factor 0.5 < 1"),
    ({"datasets": {"digits": {"groups": {"many": [0]}}},
      "evaluation": {"overlap": {"source": "few", "target": "many"}}},
     "evaluation.overlap names group"),
    ({"training": {"steps": "ten"}}, "not of type 'integer'"),
    ({"datasets": {"digits": {"source": "mnist"}}}, "is not one of"),
    ({"variants": {"x": {"external": True}}}, "no `extensions:`"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "training": {"init_from": "x"}}}}, "cycle"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "training": {"init_from": "nope"}}}},
     "unknown variant 'nope'"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "sampling": {"sampler": "ancestral", "steps": 50}}}},
     "set sampler: ddim"),
    ({"extensions": ["missing.smk"]}, "does not exist"),
    ({"training": {"group_norm": "channels_last"}}, "^training: group_norm 'channels_last' keeps a channels-last "
                                                    "layout, but channels_last is false; set channels_last: true"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "training": {"group_norm": "channels_last"}}}},
     "^variants.x.training: group_norm 'channels_last'"),
    ({"training": {"group_norm": "nhwc"}}, "training.group_norm: 'nhwc' is not one of"),
    ({"training": {"checkpoint_every": 7, "log_every": 5}}, "^training: checkpoint_every 7 is not a multiple of "
                                                             "log_every 5; set checkpoint_every to a multiple"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}], "training": {"log_every": 3}}}},
     "^variants.x.training: checkpoint_every 5000 is not a multiple of log_every 3"),
    ({"variants": {"x": {"losses": [{"name": "eps_mse"}, {"name": "coral"}], "training": {"init_from": "ddpm"}}}},
     r"^variant x: training.init_from 'ddpm' has another network \(ddpm's losses add no parameters, x's add head "
     r"coral_projection \(128\)\), so its model file cannot initialise x; .* or remove init_from"),
    ({"variants": {"x": {"losses": [{"name": "cm"}]},
                   "y": {"losses": [{"name": "cm", "rank_ratio": 0.2}], "training": {"init_from": "x"}}}},
     r"x's losses add a low-rank branch \(ratio 0.1\), y's add a low-rank branch \(ratio 0.2\)"),
])
def test_bad_configs_get_errors_that_name_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


def test_a_variant_may_start_from_one_whose_losses_add_the_same_parameters():
    coral = [{"name": "eps_mse"}, {"name": "coral"}]
    c = config(variants={"a": {"losses": coral},
                         "b": {"losses": [*coral, {"name": "cbdm"}], "training": {"init_from": "a"}},
                         "c": {"losses": [{"name": "eps_mse"}, {"name": "cbdm"}], "training": {"init_from": "ddpm"}}})
    assert variant_settings(c, "b")["training"]["init_from"] == "a"


def test_unknown_variant_lists_the_declared_ones():
    with pytest.raises(ConfigError, match="declared variants: ddpm"):
        variant_settings(config(), "cbdm")


def test_load_config_reports_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_load_config_reads_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    assert load_config(path)["suite"] == "t"


def test_the_published_registry_is_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pub.yaml").write_text(
        "- {source: cifar10, imbalance_factor: 100, method: X, metric: fid, value: 1.0}\n")
    with pytest.raises(ConfigError, match=r"missing \['inception_preprocessing', 'protocol', 'reference', "
                                          r"'reference_statistics', 'samples', 'status', 'variant'\]"):
        config(published="pub.yaml")
    (tmp_path / "pub.yaml").write_text(
        "- {source: cifar10, imbalance_factor: 100, method: X, variant: null, metric: fid, value: about 6,"
        " status: s, samples: null, reference_statistics: null, inception_preprocessing: not stated,"
        " protocol: p, reference: r}\n")
    with pytest.raises(ConfigError, match="number or null"):
        config(published="pub.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        config(published="missing.yaml")


def test_each_config_gets_its_own_copy_of_a_schema_default():
    first, second = config(), config()
    first["training"]["label_drop"]["probability"] = 0.5
    first["seeds"].append(1)
    assert second["training"]["label_drop"] == {"policy": "batch", "probability": 0.1}
    assert second["seeds"] == [0] and config()["seeds"] == [0]


def test_validation_is_the_package_own_and_needs_no_snakemake(repo):
    import subprocess
    import sys

    code = ("import sys, cbdm.config as c; c.load_config('config/config.yaml'); "
            "print('snakemake' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=repo)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_a_factor_label_gives_back_the_config_number_and_an_undeclared_one_is_an_error():
    assert factor_value("10", [100, 10.0], "imbalance_factor") == 10.0
    assert factor_value("1.2345678", [1.2345678], "guidance") == 1.2345678
    with pytest.raises(ConfigError, match=r"guidance: 2 is not declared \(1, 1.5\)"):
        factor_value("2", [1, 1.5], "guidance")


def test_loss_terms_resolve_as_a_variant_does_and_name_the_variant_on_an_error():
    c = config(variants={"cbdm": {"losses": [{"name": "eps_mse"}, {"name": "cbdm", "tau": 2.0}]}})
    assert loss_terms("cbdm", c["variants"]["cbdm"]["losses"]) == variant_settings(c, "cbdm")["losses"]
    with pytest.raises(ConfigError, match="variant mine: unknown loss 'epsmse'"):
        loss_terms("mine", [{"name": "epsmse"}])


def test_a_term_without_a_weight_takes_its_loss_s_vetted_weight_not_one():
    """`- name: coral` trained at weight 1.0, 100x the paper's 0.01, and `- name: overlap_hinge`
    at 1.0 with the kl time weight, where the sweep found 0.1 already unstable: a declared term
    now takes its loss's registered weight (README, "Variants and losses")."""
    terms = {t["name"]: t for t in loss_terms("v", [{"name": "eps_mse"}, {"name": "coral"}, {"name": "cbdm"},
                                                    {"name": "overlap_hinge"}])}
    assert {name: t["weight"] for name, t in terms.items()} == \
        {"eps_mse": 1.0, "coral": 0.01, "cbdm": 1.0, "overlap_hinge": 0.01}
    assert terms["overlap_hinge"]["options"]["time_weight"] == "snr_clipped"
    assert loss_terms("v", [{"name": "eps_mse"}, {"name": "coral", "weight": 0.5}])[1]["weight"] == 0.5
    c = config(variants={"coral": {"losses": [{"name": "eps_mse"}, {"name": "coral"}]}})
    assert [t["weight"] for t in variant_settings(c, "coral")["losses"]] == [1.0, 0.01]


def test_the_cli_prints_a_config_error_once_naming_the_file(tmp_path, capsys):
    from cbdm.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL, "seeds": "zero"}))
    for argv in (["check", str(bad)], ["assets", "verify", "--config", str(bad)]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count(str(bad)) == 1 and "seeds (line" in err, err


def test_the_field_suite_and_the_overlap_sweep_are_the_default_with_other_variants():
    """README compares their rows with the default table's: they must differ from the default only
    where they say (the field suite adds variants; the sweep replaces them and skips augmentation)."""
    config_dir = Path(__file__).parent.parent / "config"
    default = yaml.safe_load((config_dir / "config.yaml").read_text())
    field = yaml.safe_load((config_dir / "field.yaml").read_text())
    sweep = yaml.safe_load((config_dir / "sweeps/overlap-weights.yaml").read_text())
    assert default["training"]["precision"] == default["sampling"]["precision"] == "fp32"
    same = {key for key in default if key not in ("suite", "variants", "augmentation")}
    assert {key: field[key] for key in same} == {key: default[key] for key in same}
    assert {key: sweep[key] for key in same} == {key: default[key] for key in same}
    assert set(field) == set(default) == set(sweep)
    assert field["augmentation"] == default["augmentation"] and sweep["augmentation"] == {"enabled": False}
    assert {name: field["variants"][name] for name in default["variants"]} == default["variants"]
    assert sweep["variants"]["ddpm"] == default["variants"]["ddpm"]
