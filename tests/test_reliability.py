"""Regression tests of issue 10: reused files prove what produced them, outputs keep the umask,
a full disk and a non-finite loss say what happened and what comes next."""
import errno
import os
import shutil

import numpy as np
import pytest
import torch

import cbdm.sample as sample_module
from cbdm.io import DiskFullError, atomic_path, write_json, write_npz
from cbdm.modelfile import IDENTITY_KEYS, save_model
from cbdm.networks import build_unet
from cbdm.sample import sample
from cbdm.train import restart_point

from helpers import dry_run_output, sampling_settings, write_tiny_config

NETWORK = {"base_channels": 8, "channel_mult": [1], "attention_levels": [], "num_res_blocks": 1,
           "dropout": 0.0, "norm_groups": 4}
DIFFUSION = {"num_timesteps": 20, "beta_start": 1e-4, "beta_end": 0.02}
SAMPLING = sampling_settings(sampler="ddim", steps=3, batch_size=10)
IDENTITY = {"variant": "ddpm", "dataset": "digits", "imbalance_factor": "10", "seed": 0, "data_digest": "d"}


def model_file(path, weight_seed: int, **identity) -> str:
    torch.manual_seed(weight_seed)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=10, num_timesteps=20)
    save_model(path, model, DIFFUSION, meta={},
               identity={**IDENTITY, "training_digest": "t", **identity})
    return str(path)


def draw(model_path, out, sampling=SAMPLING, identity=IDENTITY) -> np.ndarray:
    sample({"name": "ddpm", "sampling": sampling}, model_path=model_path, guidance=1.0, sample_seed=0,
           labels="exact", num_samples=30, class_counts=[5] * 10, device="cpu", out_npz=str(out),
           identity=identity)
    return np.load(out)["images"]


def killed_after_batches(model_path, out, monkeypatch, sampling=SAMPLING):
    """A sample job that dies after its batches, before the final file: the shards stay."""
    def write_or_die(path, **arrays):
        if path == str(out):
            raise KeyboardInterrupt
        write_npz(path, **arrays)

    monkeypatch.setattr(sample_module, "write_npz", write_or_die)
    with pytest.raises(KeyboardInterrupt):
        draw(model_path, out, sampling)
    monkeypatch.undo()
    assert len(list((out.parent / f"{out.name}.shards").iterdir())) == 3


@pytest.mark.parametrize("change", ["retrained model", "other steps"])
def test_stale_sample_shards_are_not_reused(tmp_path, monkeypatch, change):
    model = model_file(tmp_path / "model.pt", 0)
    out = tmp_path / "run" / "samples.npz"
    killed_after_batches(model, out, monkeypatch)
    sampling = SAMPLING
    if change == "retrained model":
        model_file(tmp_path / "model.pt", 1)  # same identity, other weights
    else:
        sampling = {**SAMPLING, "steps": 4}
    resumed = draw(model, out, sampling)
    fresh = draw(model, tmp_path / "fresh" / "samples.npz", sampling)
    assert np.array_equal(resumed, fresh)


def test_shards_of_the_same_job_are_reused(tmp_path, monkeypatch, capsys):
    model = model_file(tmp_path / "model.pt", 0)
    out = tmp_path / "run" / "samples.npz"
    killed_after_batches(model, out, monkeypatch)
    resumed = draw(model, out)
    assert "reused 3 finished batch(es)" in capsys.readouterr().out
    assert np.array_equal(resumed, draw(model, tmp_path / "fresh.npz"))


@pytest.mark.parametrize("key, value", [("variant", "cbdm"), ("dataset", "fashion"),
                                        ("imbalance_factor", "100"), ("seed", 1)])
def test_a_model_file_trained_for_something_else_is_refused(tmp_path, key, value):
    foreign = model_file(tmp_path / "model.pt", 0, **{key: value})
    with pytest.raises(Exception, match=f"was trained for .*{key} {value}.* but this job needs .*{key} "
                                        f"{IDENTITY[key]}.*--forcerun .*model.pt"):
        draw(foreign, tmp_path / "s.npz")


def test_a_model_file_without_identity_is_refused(tmp_path):
    path = model_file(tmp_path / "model.pt", 0)
    payload = torch.load(path, weights_only=True)
    del payload["meta"]["identity"]
    torch.save(payload, path)
    with pytest.raises(Exception, match="records no identity.*save_model"):
        draw(path, tmp_path / "s.npz")


def test_save_model_requires_the_whole_identity(tmp_path):
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=10, num_timesteps=20)
    with pytest.raises(ValueError, match="identity needs exactly"):
        save_model(tmp_path / "m.pt", model, DIFFUSION, meta={}, identity={"variant": "x"})
    assert set(IDENTITY) | {"training_digest"} == set(IDENTITY_KEYS)


def test_outputs_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_a_killed_writers_temporary_file_does_not_survive_the_rerun(tmp_path):
    leftover = tmp_path / ".groups.png.abc123.tmp"
    leftover.write_bytes(b"")
    other = tmp_path / ".other.png.abc123.tmp"  # another file's: left alone
    other.write_bytes(b"")
    with atomic_path(tmp_path / "groups.png") as tmp:
        tmp.write_bytes(b"png")
    assert not leftover.exists() and other.exists() and (tmp_path / "groups.png").read_bytes() == b"png"


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:778] . "
                                                  "PytorchStreamWriter failed writing file data/3: file write failed")])
def test_a_full_disk_names_the_file(tmp_path, monkeypatch, failure):
    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=10, num_timesteps=20)
    with pytest.raises(DiskFullError, match=r"writing .*model.pt failed: the disk is full") as err:
        save_model(tmp_path / "model.pt", model, DIFFUSION, meta={}, identity={**IDENTITY, "training_digest": "t"})
    assert err.value.errno == errno.ENOSPC and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_other_write_errors_pass_unchanged(tmp_path):
    with pytest.raises(RuntimeError, match="^unrelated$"):
        with atomic_path(tmp_path / "x"):
            raise RuntimeError("unrelated")


def test_cbdms_model_copied_over_ddpms_is_refused(tmp_path):
    cbdm_model = model_file(tmp_path / "cbdm.pt", 0, variant="cbdm")
    shutil.copy(cbdm_model, tmp_path / "ddpm.pt")
    with pytest.raises(Exception, match="variant cbdm.*needs variant ddpm"):
        draw(str(tmp_path / "ddpm.pt"), tmp_path / "s.npz")


def test_the_non_finite_loss_error_says_where_a_rerun_starts():
    assert "resumes from step 500 (ck.pt)" in restart_point(500, "ck.pt")
    assert "starts over from step 0" in restart_point(None, "ck.pt")


def test_sample_sets_of_the_wrong_size_or_classes_are_refused_naming_the_file(tmp_path):
    from cbdm.features import extract_features
    from cbdm.io import InputError

    write_json(tmp_path / "source.json", {"num_classes": 10, "image_shape": [1, 8, 8]})
    cases = {"small.npz": (np.zeros((4, 1, 4, 4), np.uint8), np.zeros(4, np.int64), r"images are \[1, 4, 4\]"),
             "labels.npz": (np.zeros((4, 1, 8, 8), np.uint8), np.array([0, 1, 2, 11]), r"labels range 0..11")}
    for name, (images, labels, message) in cases.items():
        write_npz(tmp_path / name, images=images, labels=labels)
        with pytest.raises(InputError, match=f"{name}: {message}.*--forcerun .*{name}"):
            extract_features(features_cfg={"extractor": "classifier"}, classifier_path="unused.pt",
                             images_npz=str(tmp_path / name), prefix="", device="cpu",
                             out_npz=str(tmp_path / "features.npz"), source_json=str(tmp_path / "source.json"))
    assert not (tmp_path / "features.npz").exists()


def test_feature_files_of_different_dimensions_are_refused_before_any_metric(tmp_path):
    from cbdm.evaluate import evaluate
    from cbdm.io import InputError

    for name, dim in (("gen.npz", 8), ("ref.npz", 16)):
        write_npz(tmp_path / name, features=np.zeros((20, dim)), logits=np.zeros((20, 10), np.float32),
                  labels=np.arange(20) % 10, predicted=np.arange(20) % 10)
    with pytest.raises(InputError, match="feature files of different dimensions.*gen.npz.*ref.npz"):
        evaluate(generated_npz=str(tmp_path / "gen.npz"), reference_npz=str(tmp_path / "ref.npz"), groups={},
                 num_classes=10, evaluation={}, cell={}, device="cpu", out_json=str(tmp_path / "m.json"))


def tiny_config(repo, tmp_path, change=None):
    path = write_tiny_config(repo, tmp_path / "suite.yaml", extension=False)
    if change:
        import yaml

        config = yaml.safe_load(path.read_text())
        change(config)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def dry_run(repo, workdir, *args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n", *args],
                          cwd=workdir, capture_output=True, text=True, timeout=300)


def test_a_configfile_without_datasets_stands_alone(tmp_path, repo):
    path = tiny_config(repo, tmp_path, lambda c: c.pop("datasets"))
    result = dry_run(repo, tmp_path, "--configfile", str(path))
    assert result.returncode != 0
    assert f"config error in {path}: top level: missing required key `datasets`" in result.stdout + result.stderr
    assert "train" not in result.stdout  # nothing planned from the default suite


def test_a_bad_value_given_with_config_names_the_command_line_not_only_the_file(tmp_path, repo):
    """A key given with --config was reported as an error in the config file, which does not hold it."""
    path = tiny_config(repo, tmp_path, lambda c: None)
    result = dry_run(repo, tmp_path, "--configfile", str(path), "--config", "seedz=[0,1]")
    assert result.returncode != 0
    assert f"config error in {path} with --config seedz: " in result.stdout + result.stderr


def test_seeds_from_the_command_line_and_a_non_round_guidance_expand_the_dag(tmp_path, repo):
    path = tiny_config(repo, tmp_path, lambda c: c["variants"]["ddpm"].update(sampling={"guidance": [1.2345678]}))
    output = dry_run_output(repo, tmp_path, path, "--config", "seeds=[0,1]")  # the jobs, then their counts
    assert ["train", "8"] in [line.split() for line in output.splitlines()]  # 4 variants x 2 seeds
    assert "ddpm/seed1/w1.2345678-s0/exact-120.npz" in output


def test_the_report_finds_a_non_round_guidance_by_its_label():
    import pandas as pd

    from cbdm.report import at_guidance, check_complete

    runs = pd.DataFrame({"variant": ["ddpm", "ddpm"], "guidance": [1.2345678, 2.0], "seed": [0, 0],
                         "sample_seed": [0, 0], "protocol": ["ours", "ours"]})
    assert at_guidance(runs, {"ddpm": 1.2345678}).tolist() == [True, False]
    check_complete(runs, [{"variant": "ddpm", "seed": 0, "guidance": "1.2345678", "sample_seed": 0,
                           "protocol": "ours"}])


def test_the_default_profile_redoes_the_jobs_a_kill_interrupted(repo):
    import yaml

    assert yaml.safe_load((repo / "profiles/default/config.yaml").read_text())["rerun-incomplete"] is True


def test_cbdm_losses_lists_each_options_allowed_values(capsys):
    from cbdm.cli import main

    main(["losses"])
    out = capsys.readouterr().out
    assert "target='train_prior' (one of train_prior|uniform)" in out and "tau=1.0 (>= 0)" in out


def test_a_model_file_trained_with_other_settings_is_refused_where_the_digest_is_known(tmp_path):
    """Same variant, dataset, factor and seed, other training settings (a file copied from another
    suite): refused by the digest; a job that knows no digest (an external variant) checks the rest."""
    path = model_file(tmp_path / "model.pt", 0)  # training digest "t"
    draw(path, tmp_path / "a.npz")
    draw(path, tmp_path / "b.npz", identity={**IDENTITY, "training_digest": "t"})
    with pytest.raises(Exception, match="was trained with the settings of training digest t, but this config's "
                                        "settings are of training digest 0123456789abcdef: it was copied from "
                                        "another suite"):
        draw(path, tmp_path / "c.npz", identity={**IDENTITY, "training_digest": "0123456789abcdef"})


def test_a_model_file_that_records_no_training_data_is_refused_with_retrain(tmp_path):
    """A model file written before model files recorded their training data's digest proves
    nothing about the data it was trained on: refused, naming the fix, not sampled."""
    path = model_file(tmp_path / "model.pt", 0)
    payload = torch.load(path, weights_only=True)
    del payload["meta"]["identity"]["data_digest"]
    torch.save(payload, path)
    with pytest.raises(Exception, match=r"model\.pt records no data digest \(it predates model files recording "
                                        r"their training data\), so nothing proves what it was trained on: retrain "
                                        r"it; re-run its stage: add `--forcerun"):
        draw(path, tmp_path / "a.npz")
    assert not (tmp_path / "a.npz").exists()


def test_a_fill_that_needs_no_images_writes_an_empty_sample_set(tmp_path):
    """Every class already at the fill target: zero labels (np.concatenate of nothing failed)."""
    from cbdm.augment import augmented_set
    from cbdm.sources import ImageSet

    out = tmp_path / "fill.npz"
    sample({"name": "ddpm", "sampling": SAMPLING}, model_path=model_file(tmp_path / "model.pt", 0), guidance=1.0,
           sample_seed=0, labels="fill", num_samples=100, class_counts=[5] * 10, device="cpu", out_npz=str(out),
           identity=IDENTITY)
    fill = np.load(out)
    assert fill["images"].shape == (0, 1, 8, 8) and fill["labels"].shape == (0,)
    train = ImageSet(np.zeros((50, 1, 8, 8), np.uint8), np.repeat(np.arange(10), 5))
    assert len(augmented_set(train, ImageSet(fill["images"], fill["labels"]), 100, 10).labels) == 50


def test_the_same_tensors_saved_twice_give_the_same_file(tmp_path):
    """A classifier file's digest labels its features (cbdm.features.extractor_label): saved
    under atomic_path's random temporary name, torch.save named the archive after it, and two
    trainings with identical weights got different digests, so their rows never shared a card."""
    from cbdm.io import save_torch

    state = {"format": "x", "state_dict": {"w": torch.arange(6.0)}}
    save_torch(state, tmp_path / "a.pt")
    save_torch(state, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]["w"], torch.arange(6.0))


# What a sample set is of (cbdm.origins.sample_origin): a cell of ddpm, and the same cell of cbdm.
ORIGIN = {"dataset": "digits", "imbalance_factor": "10", "variant": "ddpm", "seed": 0, "guidance": "1",
          "sample_seed": 0, "labelset": "exact-30", "training_digest": "t", "sampling": "s"}
OTHER_CELL = {**ORIGIN, "variant": "cbdm"}


def test_a_sample_set_copied_over_another_cells_is_refused_by_every_job_that_reads_it(tmp_path):
    """ddpm's exact-1000.npz copied over cbdm's (mtimes touched, or the features rerun) was
    featurised, diagnosed and scored as cbdm's without a word: cbdm's row showed ddpm's numbers."""
    from cbdm.augment import run_augmentation
    from cbdm.diagnose import diagnose
    from cbdm.features import extract_features
    from cbdm.io import InputError

    out = tmp_path / "cbdm" / "exact-30.npz"
    sample({"name": "ddpm", "sampling": SAMPLING}, model_path=model_file(tmp_path / "model.pt", 0), guidance=1.0,
           sample_seed=0, labels="exact", num_samples=30, class_counts=[5] * 10, device="cpu", out_npz=str(out),
           identity=IDENTITY, origin=ORIGIN)
    source = tmp_path / "source.npz"  # the held-out images the diagnostics read first
    write_npz(source, heldout_images=np.zeros((10, 1, 8, 8), np.uint8), heldout_labels=np.arange(10))
    refused = rf"{out} was made for variant ddpm, but this job needs variant cbdm: .*--forcerun {out}"
    with pytest.raises(InputError, match=refused):
        extract_features(features_cfg={"extractor": "classifier"}, classifier_path="unused.pt", images_npz=str(out),
                         prefix="", device="cpu", out_npz=str(tmp_path / "features.npz"), origin=OTHER_CELL)
    with pytest.raises(InputError, match=refused):
        diagnose(samples_npz=str(out), train_npz="unused.npz", source_npz=str(source), groups={}, num_classes=10,
                 classifier_cfg={}, memorization_cfg={}, device="cpu", cell={}, out_json=str(tmp_path / "d.json"),
                 origin=OTHER_CELL)
    with pytest.raises(InputError, match=refused):
        run_augmentation(augmentation={}, row="cbdm", train_npz=str(out), source_npz=str(source),
                         samples_npz=[str(out)], groups={}, num_classes=10, device="cpu",
                         out_json=str(tmp_path / "a.json"), origin=[OTHER_CELL])
    assert not any((tmp_path / name).exists() for name in ("features.npz", "d.json", "a.json"))


def test_a_sample_set_without_an_origin_is_refused(tmp_path):
    from cbdm.features import extract_features
    from cbdm.io import InputError

    write_npz(tmp_path / "old.npz", images=np.zeros((10, 1, 8, 8), np.uint8), labels=np.arange(10))
    with pytest.raises(InputError, match=r"old.npz records no origin.*--forcerun"):
        extract_features(features_cfg={"extractor": "classifier"}, classifier_path="unused.pt",
                         images_npz=str(tmp_path / "old.npz"), prefix="", device="cpu",
                         out_npz=str(tmp_path / "features.npz"), origin=ORIGIN)


def feature_file(path, origin=None, dim=8):
    from cbdm.fingerprint import origin_array

    write_npz(path, features=np.random.RandomState(0).randn(40, dim), logits=np.zeros((40, 10), np.float32),
              labels=np.arange(40) % 10, predicted=np.arange(40) % 10, **origin_array(origin))
    return str(path)


@pytest.mark.parametrize("recorded, message", [
    ({**ORIGIN, "variant": "cbdm"}, "was made for variant cbdm, but this job needs variant ddpm"),
    ({**ORIGIN, "sampling": "older"}, "was made for sampling older, but this job needs sampling s"),
    (None, "records no origin")])
def test_metrics_refuse_features_of_another_cell_naming_the_file(tmp_path, recorded, message):
    """A features file copied from another cell, or an older run's of other sampling settings."""
    from cbdm.evaluate import evaluate
    from cbdm.io import InputError

    generated = feature_file(tmp_path / "gen.npz", recorded)
    with pytest.raises(InputError, match=f"{generated} {message}"):
        evaluate(generated_npz=generated, reference_npz=feature_file(tmp_path / "ref.npz"), groups={},
                 num_classes=10, evaluation={}, cell={}, device="cpu", out_json=str(tmp_path / "m.json"),
                 origin=ORIGIN)
    assert not (tmp_path / "m.json").exists()


def test_a_classifier_trained_with_another_recipe_is_refused_by_the_features_job(tmp_path, longtail_digits):
    """A classifier file copied from a suite with other `features` settings (or kept under
    --rerun-triggers mtime after they changed) has the same classes and feature size, so it was
    used without a word, and the leaderboard card named this config's recipe for its features."""
    from cbdm.classifier import train_classifier
    from cbdm.features import extract_features
    from cbdm.io import InputError

    source = longtail_digits.parent / "source.npz"
    recipe = {"feature_dim": 8, "epochs": 1, "batch_size": 64, "lr": 3e-3, "seed": 0, "threads": 1}
    train_classifier(recipe, source_npz=str(source), num_classes=10, device="cpu",
                     out_model=str(tmp_path / "classifier.pt"), out_report=str(tmp_path / "classifier.json"))
    features_cfg = {"extractor": "classifier", **recipe, "epochs": 2}
    del features_cfg["threads"]  # the features jobs' settings leave it out
    with pytest.raises(InputError, match=r"classifier.pt was trained with epochs 1, but this config's features "
                                         r"and data settings have epochs 2: .*--forcerun"):
        extract_features(features_cfg=features_cfg, classifier_path=str(tmp_path / "classifier.pt"),
                         images_npz=str(longtail_digits), prefix="", device="cpu",
                         out_npz=str(tmp_path / "features.npz"))
    extract_features(features_cfg={**features_cfg, "epochs": 1}, classifier_path=str(tmp_path / "classifier.pt"),
                     images_npz=str(longtail_digits), prefix="", device="cpu", out_npz=str(tmp_path / "features.npz"))
    assert (tmp_path / "features.npz").exists()


def test_check_recorded_names_each_differing_key_with_both_values_and_the_fix(tmp_path):
    """The one refusal every reused file's check words: the file, each key that differs (one only
    the file records, one only the job expects, included) with both values, the cause, the fix;
    equal keys are left out and equal dicts pass."""
    from cbdm.fingerprint import check_recorded
    from cbdm.io import InputError, rebuild

    path = tmp_path / "x.npz"
    same = {"seed": 0, "variant": "ddpm"}
    check_recorded(path, same, dict(reversed(same.items())), holds="h", needs="n", cause="c")
    with pytest.raises(InputError) as refused:
        check_recorded(path, {"variant": "ddpm", "seed": 0, "old": 1}, {"variant": "cbdm", "seed": 0, "new": 2},
                       holds="was made for", needs="this job needs", cause="it was copied")
    assert str(refused.value) == (f"{path} was made for variant ddpm, new (absent), old 1, but this job needs "
                                  f"variant cbdm, new 2, old (absent): it was copied; {rebuild(path)}")
    with pytest.raises(InputError, match=r"made for seed None, but this job needs seed \(absent\)"):
        check_recorded(path, {"seed": None}, {}, holds="was made for", needs="this job needs", cause="c")
