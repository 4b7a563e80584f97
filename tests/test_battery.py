"""A battery of bad configs and corrupted files (issue 10): each ends in a one-line error that
names the file or key and the fix, or in a correct result; none in a raw traceback.

Config cases run `cbdm check` as a user does; file cases call the stage's reader on a damaged
file. Self-contained: every config and file is built here."""
import copy
import gzip
import pickle
import re

import numpy as np
import pytest
import torch
import yaml

from cbdm.assets import DataError
from cbdm.cli import main as cbdm_main
from cbdm.config import ConfigError
from cbdm.io import InputError, write_npz

BASE = {
    "suite": "battery",
    "device": "cpu",
    "datasets": {"digits": {"source": "sklearn_digits", "heldout_per_class": 30,
                            "longtail": {"imbalance_factor": 5, "n_max": 60},
                            "groups": {"head": [0, 1, 2, 3, 4], "tail": [5, 6, 7, 8, 9]}}},
    "diffusion": {"num_timesteps": 100},
    "training": {"warmup_steps": 10},  # under the default 1,000 steps: no warm-up warning in the way
    "sampling": {"sampler": "ddim", "steps": 5},
    "evaluation": {"protocols": {"ours": {"labels": "exact", "num_samples": 120}}},
    "variants": {"ddpm": {"losses": [{"name": "eps_mse"}]},
                 "cbdm": {"losses": [{"name": "eps_mse"}, {"name": "cbdm"}]}},
}


def put(dotted: str, value):
    """A change to BASE: set the key at `dotted` (a.b.c); value DELETE removes it."""
    def change(config):
        *parents, last = dotted.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return change


DELETE = object()
OVERLAP = {"name": "overlap_hinge"}

# (case id, change to BASE or raw YAML text, regex the one error line must match)
CONFIG_CASES = [
    ("yaml-syntax", "suite: t\ndatasets: [\n  digits\n variants: 1\n", r":\d+: YAML syntax error: .*fix the"),
    ("yaml-tab", "suite: t\n\tdatasets: {}\n", r":2: YAML syntax error"),
    ("empty-file", "", r"is empty: a config needs at least suite, datasets, variants"),
    ("not-a-mapping", "- suite\n- datasets\n", r":1: a config is a mapping of keys"),
    ("misspelled-top-key", put("trainig", {"steps": 3}),
     r"trainig \(line \d+\): unknown key `trainig`; did you mean `training`\?"),
    ("misspelled-nested-key", put("training.stepz", 3),
     r"training.stepz \(line \d+\): unknown key `stepz`; did you mean `steps`\?"),
    ("misspelled-dataset-key", put("datasets.digits.longtial", {}),
     r"datasets.digits.longtial.*did you mean `longtail`\?"),
    ("missing-datasets", put("datasets", DELETE), r"top level: missing required key `datasets`"),
    ("missing-variants", put("variants", DELETE), r"missing required key `variants`"),
    ("wrong-type", put("training.steps", "ten"), r"training.steps \(line \d+\): 'ten' is not of type 'integer'"),
    ("unknown-source", put("datasets.digits.source", "mnist"), r"datasets.digits.source.*'mnist' is not one of"),
    ("bad-device", put("device", "gpu"), r"device.*'gpu' is not one of \['auto', 'cpu', 'cuda'\]"),
    ("suite-with-slash", put("suite", "a/b"), r"suite.*does not match"),
    ("duplicate-seeds", put("seeds", [0, 0]), r"seeds.*non-unique"),
    ("negative-guidance", put("sampling.guidance", -1), r"sampling.guidance"),
    ("negative-loss-weight", put("variants.ddpm.losses", [{"name": "eps_mse", "weight": -1}]),
     r"variants.ddpm.losses.0.weight.*less than the minimum of 0"),
    ("unknown-loss", put("variants.ddpm.losses", [{"name": "focal"}]),
     r"unknown loss 'focal'; registered losses: cbdm"),
    ("unknown-loss-option", put("variants.cbdm.losses", [{"name": "cbdm", "temperature": 1}]),
     r"variant cbdm: loss 'cbdm' has no option\(s\) \['temperature'\]; known options"),
    ("cbdm-target-choice", put("variants.cbdm.losses", [{"name": "cbdm", "target": "balanced"}]),
     r"option target must be one of \['train_prior', 'uniform'\], got 'balanced'"),
    ("time-weight-choice", put("variants.cbdm.losses", [{**OVERLAP, "time_weight": "cosine"}]),
     r"option time_weight must be one of \['kl', 'kl_raw', 'snr_clipped', 'linear', 'constant'\]"),
    ("negative-tau", put("variants.cbdm.losses", [{"name": "cbdm", "tau": -1.0}]), r"option tau must be >= 0"),
    ("zero-temperature", put("variants.cbdm.losses", [{"name": "overlap_infonce", "temperature": 0}]),
     r"option temperature must be > 0"),
    ("fractional-negatives", put("variants.cbdm.losses", [{**OVERLAP, "num_negatives": 1.5}]),
     r"option num_negatives must be of type int"),
    ("margin-as-text", put("variants.cbdm.losses", [{**OVERLAP, "margin": "big"}]),
     r"option margin must be of type float"),
    ("no-losses", put("variants.ddpm.losses", DELETE), r"variant ddpm declares no `losses`"),
    ("external-with-losses", put("variants.ddpm.external", True), r"is external .*remove its `losses`"),
    ("external-without-extension", put("variants.x", {"external": True}), r"no `extensions:` rule file"),
    ("variant-override-key", put("variants.ddpm.training", {"stepz": 1}),
     r"variants.ddpm.training.stepz: unknown key `stepz`; did you mean `steps`\?"),
    ("init-from-cycle", put("variants.ddpm.training", {"init_from": "ddpm"}), r"cycle: ddpm -> ddpm"),
    ("init-from-unknown", put("variants.ddpm.training", {"init_from": "nope"}), r"unknown variant 'nope'"),
    ("ancestral-steps", put("sampling.sampler", "ancestral"), r"ancestral sampling takes every one of the 100"),
    ("empty-classes", put("datasets.digits.longtail.imbalance_factor", 1000),
     r"datasets.digits.longtail: imbalance_factor 1000 with n_max 60 gives class\(es\) \[6, 7, 8, 9\] no training"),
    ("n-max-beyond-pool", put("datasets.digits.longtail.n_max", 200),
     r"datasets.digits.longtail.n_max 200: class 0 would need 200 images but its training pool holds 148"),
    ("default-n-max-beyond-pool", put("datasets.digits.longtail.n_max", None),
     r"longtail.n_max 149.7: class 0 would need 149 images but its training pool holds 148"),
    ("heldout-everything", put("datasets.digits.heldout_per_class", 180),
     r"heldout_per_class 180 holds out every image of class 8"),
    ("imbalance-below-one", put("datasets.digits.longtail.imbalance_factor", [5, 0.5]), r"imbalance_factor 0.5 < 1"),
    ("group-class-out-of-range", put("datasets.digits.groups.tail", [5, 10]), r"groups.tail names class\(es\) \[10\]"),
    ("group-named-all", put("datasets.digits.groups.all", [0]), r"'all' is reported anyway"),
    ("overlapping-overlap-groups",
     put("datasets.digits.groups", {"head": [0, 1, 2, 3, 4, 5], "tail": [4, 5, 6, 7, 8, 9]}),
     r"groups: tail and head share class\(es\) \[4, 5\].*make the two groups disjoint"),
    ("overlap-unknown-group", put("evaluation.overlap", {"source": "few", "target": "head"}),
     r"evaluation.overlap names group\(s\) \['few'\]"),
    ("exact-not-multiple", put("evaluation.protocols.ours.num_samples", 125), r"num_samples 125 is not a multiple"),
    ("is-splits-beyond-samples", put("evaluation.is_splits", 13),
     r"evaluation.is_splits 13: protocol ours's 120 samples give splits of 9, fewer than the 10 classes of digits.*"
     r"set evaluation.is_splits to at most 12"),
    ("unknown-baseline", put("evaluation.baseline", "ddim"), r"evaluation.baseline 'ddim' is not a declared variant"),
    ("unknown-report-protocol", put("evaluation.report_protocol", "paper"), r"report_protocol 'paper' is not one of"),
    ("missing-extension", put("extensions", ["nowhere.smk"]), r"rule file 'nowhere.smk' does not exist"),
    ("missing-registry", put("published", "nowhere.yaml"), r"registry 'nowhere.yaml' does not exist"),
    ("cifar-files-missing", put("datasets.digits", {"source": "cifar10", "root": "nodata",
                                                    "longtail": {"n_max": 50, "imbalance_factor": 10},
                                                    "groups": {"head": [0], "tail": [9]}}),
     r"dataset digits \(cifar10, root nodata\): cifar10: .*not found .*fetch: cbdm assets fetch --config"),
    ("inception-weights-missing", put("features", {"extractor": "inception", "inception_weights": "w.pth"}),
     r"Inception weights \(w.pth\): .*not found at w.pth.*cbdm assets fetch"),
]


def write_config(tmp_path, change) -> str:
    path = tmp_path / "config.yaml"
    if isinstance(change, str):
        path.write_text(change)
    else:
        config = copy.deepcopy(BASE)
        change(config)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def check(path, capsys) -> tuple[int, str]:
    code = cbdm_main(["check", path])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("change, message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_config_gets_one_line_naming_the_file_the_key_and_the_fix(tmp_path, monkeypatch, capsys, change, message):
    monkeypatch.chdir(tmp_path)  # relative paths (extensions, registry, data) resolve here
    path = write_config(tmp_path, change)
    code, err = check(path, capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(path), lines[0]
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]


def test_a_non_round_guidance_is_planned_and_found_by_its_exact_label(tmp_path, capsys):
    from cbdm.labels import factor_label, same_factor

    path = write_config(tmp_path, put("variants.ddpm.sampling", {"guidance": [1.0, 1.2345678]}))
    assert check(path, capsys)[0] == 0
    label = factor_label(1.2345678)
    assert label == "1.2345678" and float(label) == 1.2345678 and same_factor(label, 1.2345678)
    assert not same_factor(label, 1.23457)


def test_device_cuda_without_a_gpu_is_a_warning_not_an_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = check(write_config(tmp_path, put("device", "cuda")), capsys)
    assert code == 0 and "warning: device: cuda, but torch sees no GPU" in err and len(err.strip().splitlines()) == 1


def test_command_line_list_values_are_typed():
    from cbdm.config import command_line_values

    # what Snakemake's --config 'seeds=[0,1]' 'sampling={guidance: [1, 1.5]}' hands over
    assert command_line_values({"seeds": ["0", "1"], "sampling": {"guidance": ["1", "1.5"], "sampler": "ddim"},
                                "suite": "x"}) == {"seeds": [0, 1], "sampling": {"guidance": [1, 1.5],
                                                                                "sampler": "ddim"}, "suite": "x"}


# --- corrupted files ----------------------------------------------------------------------------

def model_payload(**identity) -> dict:
    from cbdm.networks import build_unet

    model = build_unet({"base_channels": 8, "channel_mult": [1], "attention_levels": [], "num_res_blocks": 1,
                        "dropout": 0.0, "norm_groups": 4}, image_channels=1, image_size=8, num_classes=10,
                       num_timesteps=10)
    return {"format": "cbdm.model/1", "unet": model.cfg.to_dict(),
            "diffusion": {"num_timesteps": 10, "beta_start": 1e-4, "beta_end": 0.02},
            "state_dict": model.state_dict(), "meta": {"identity": identity} if identity else {}}


IDENTITY = {"variant": "ddpm", "dataset": "digits", "imbalance_factor": "5", "seed": 0}


def truncated_json(path):
    path.write_text('{"class_counts": [60, 40')
    from cbdm.io import read_json
    read_json(path)


def missing_json(path):
    from cbdm.io import read_json
    read_json(path)


def garbage_npz(path):
    path.write_bytes(b"PK\x03\x04 garbage")
    from cbdm.io import read_npz
    read_npz(path)


def image_set(images, labels, **expect):
    def load(path):
        write_npz(path, images=images, labels=labels)
        from cbdm.dataset import read_image_set
        read_image_set(str(path), "", **expect)
    return load


def torch_file(payload, loader: str):
    def load(path):
        torch.save(payload, path)
        import cbdm.modelfile as modelfile
        if loader == "identity":
            payload_read = modelfile.load_model(path)[2]
            modelfile.check_identity(path, payload_read, IDENTITY)
        else:
            getattr(modelfile, loader)(path)
    return load


def raw_bytes(data: bytes, loader):
    def load(path):
        path.write_bytes(data)
        loader(path)
    return load


def missing_labels(path):
    from cbdm.dataset import read_image_set
    write_npz(path, images=np.zeros((6, 1, 8, 8), np.uint8))
    read_image_set(str(path))


def load_model_file(path):
    from cbdm.modelfile import load_model
    load_model(path)


def load_checkpoint_file(path):
    from cbdm.modelfile import load_checkpoint
    load_checkpoint(path)


def load_classifier_file(path):
    from cbdm.classifier import load_classifier
    load_classifier(path, "cpu")


def read_idx_file(path):
    from cbdm.sources import read_idx
    read_idx(path)


def read_cifar_file(path):
    from cbdm.sources import read_cifar_pickle
    read_cifar_pickle(path, "labels")


def features_file(features, labels):
    def load(path):
        from cbdm.evaluate import evaluate
        write_npz(path, features=features, logits=np.zeros((len(labels), 10), np.float32), labels=labels,
                  predicted=labels)
        evaluate(generated_npz=str(path), reference_npz=str(path), groups={}, num_classes=10, evaluation={},
                 cell={}, device="cpu", out_json=str(path) + ".json")
    return load


def bad_registry(path):
    from cbdm.config import load_published
    path.write_text(yaml.safe_dump([{"source": "cifar10", "method": "DDPM", "value": 6.17}]))
    load_published(str(path))


U8 = np.zeros((6, 1, 8, 8), np.uint8)
LABELS = np.arange(6)

# (case id, file name, what damages and reads it, regex of the error, which must also name the file)
FILE_CASES = [
    ("manifest-truncated", "manifest.json", truncated_json,
     r"is not valid JSON .*re-run its stage: add `--forcerun .*manifest.json` to the same snakemake command"),
    ("manifest-missing", "manifest.json", missing_json, r"does not exist: run the stage that makes it"),
    ("npz-garbage", "train.npz", garbage_npz, r"is corrupt or truncated .*--forcerun .*train.npz"),
    ("npz-missing-array", "train.npz", missing_labels, r"lacks the array 'labels'.*re-run its stage"),
    ("images-3d", "samples.npz", image_set(np.zeros((6, 8, 8), np.uint8), LABELS), r"expected 4 dims"),
    ("images-float", "samples.npz", image_set(np.zeros((6, 1, 8, 8)), LABELS), r"images are float64, expected uint8"),
    ("labels-out-of-range", "samples.npz", image_set(U8, np.array([0, 1, 2, 3, 4, 11]), num_classes=10),
     r"labels range 0..11, but the dataset has classes 0..9.*--forcerun"),
    ("labels-negative", "samples.npz", image_set(U8, np.array([-1, 1, 2, 3, 4, 5]), num_classes=10),
     r"labels range -1..5"),
    ("labels-count", "samples.npz", image_set(U8, np.arange(5)), r"6 images but 5 labels"),
    ("image-size", "samples.npz", image_set(U8, LABELS, image_shape=[1, 16, 16]),
     r"images are \[1, 8, 8\] \[C, H, W\], but the dataset's are \[1, 16, 16\]"),
    ("model-garbage", "model.pt", raw_bytes(b"garbage", load_model_file),
     r"is corrupt or truncated.*--forcerun .*model.pt.*cbdm/modelfile.py"),
    ("model-other-format", "model.pt", torch_file({"format": "other/1"}, "load_model"), r"is not a cbdm.model/1 file"),
    ("model-inconsistent", "model.pt", torch_file({**model_payload(), "state_dict": {}}, "load_model"),
     r"does not hold a consistent model"),
    ("model-no-identity", "model.pt", torch_file(model_payload(), "identity"), r"records no identity"),
    ("model-foreign", "model.pt", torch_file(model_payload(**{**IDENTITY, "variant": "cbdm"}), "identity"),
     r"was trained for variant cbdm.*needs variant ddpm.*--forcerun .*model.pt"),
    ("model-other-seed", "model.pt", torch_file(model_payload(**{**IDENTITY, "seed": 3}), "identity"),
     r"seed 3.*needs .*seed 0"),
    ("checkpoint-garbage", "checkpoint.pt", raw_bytes(b"PK\x03\x04", load_checkpoint_file),
     r"delete the checkpoint to restart"),
    ("checkpoint-pickle", "checkpoint.pt",
     raw_bytes(pickle.dumps({"format": "cbdm.checkpoint/1"}), load_checkpoint_file),
     r"corrupt or truncated.*delete the checkpoint"),
    ("classifier-garbage", "classifier.pt", raw_bytes(b"not a zip", load_classifier_file),
     r"corrupt or truncated.*--forcerun .*classifier.pt"),
    ("idx-truncated", "train-images-idx3-ubyte.gz", raw_bytes(gzip.compress(b"\0\0\x08\x03" + (5).to_bytes(4, "big")
                                                                         + (28).to_bytes(4, "big") * 2 + b"\0" * 10),
                                                           read_idx_file), r"is truncated: header says \(5, 28, 28\)"),
    ("idx-not-idx", "train-images-idx3-ubyte.gz", raw_bytes(gzip.compress(b"hello world"), read_idx_file),
     r"is not an IDX file of unsigned bytes: re-fetch it"),
    ("cifar-not-a-batch", "data_batch_1", raw_bytes(pickle.dumps({"data": [1, 2, 3]}), read_cifar_file),
     r"is not a CIFAR batch file .*re-extract the archive"),
    ("features-labels-out-of-range", "features.npz", features_file(np.zeros((4, 8)), np.array([0, 1, 2, 12])),
     r"labels range 0..12.*--forcerun .*features.npz"),
    ("registry-fields", "published.yaml", bad_registry, r"entry 1: fields must be exactly"),
]


@pytest.mark.parametrize("name, load, message", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_a_damaged_file_gets_one_line_naming_the_file_and_the_fix(tmp_path, name, load, message):
    path = tmp_path / name
    with pytest.raises((InputError, DataError, ConfigError), match=message) as caught:
        load(path)
    text = str(caught.value)
    assert "\n" not in text and (str(path) in text or name in text), text


def test_the_battery_has_at_least_forty_cases():
    assert len(CONFIG_CASES) + len(FILE_CASES) >= 40


def test_a_warmup_longer_than_the_training_is_a_warning_naming_the_variant(tmp_path, monkeypatch, capsys):
    """The schema's defaults (1,000 steps, 5,000 warm-up steps) never reach the configured lr."""
    monkeypatch.chdir(tmp_path)
    code, err = check(write_config(tmp_path, put("training.warmup_steps", 10_000)), capsys)
    assert code == 0 and "warning: variant ddpm: training.warmup_steps 10000 >= steps" in err
    code, err = check(write_config(tmp_path, put("training.warmup_steps", 1)), capsys)
    assert code == 0 and "warmup_steps" not in err


def test_bf16_on_a_cpu_that_emulates_it_is_a_warning_naming_the_key_and_the_fix(tmp_path, monkeypatch, capsys):
    """The default suite once trained in bf16: on an AVX2-only CPU its training step ran at 41
    images/s against fp32's 430, and README's command 1 had done 3 of 92 jobs after 12 minutes."""
    import cbdm.acceleration
    import cbdm.cli
    import cbdm.workflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cbdm.cli, "_torch_sees_a_gpu", lambda: False)
    monkeypatch.setattr(cbdm.workflow, "visible_gpus", lambda: 0)
    monkeypatch.setattr(cbdm.acceleration, "bf16_is_native", lambda device: False)
    code, err = check(write_config(tmp_path, put("training.precision", "bf16")), capsys)
    assert code == 0 and "warning: training.precision: bf16 (variants ddpm, cbdm) on a CPU without native bfloat" in err
    assert "set training.precision: fp32" in err and "sampling.precision" not in err
    code, err = check(write_config(tmp_path, put("sampling.precision", "fp32")), capsys)
    assert code == 0 and "bfloat16" not in err
    gpu_suite = {**BASE, "device": "auto", "resources": {"gpus_per_job": 1}, "training": {"precision": "bf16"}}
    code, err = check(write_config(tmp_path, yaml.safe_dump(gpu_suite)), capsys)  # its jobs run on GPU nodes
    assert code == 0 and "bfloat16" not in err
    monkeypatch.setattr(cbdm.workflow, "visible_gpus", lambda: 1)  # the workflow gives its jobs this GPU
    auto = {**BASE, "device": "auto", "training": {"precision": "bf16"}}
    code, err = check(write_config(tmp_path, yaml.safe_dump(auto)), capsys)
    assert code == 0 and "bfloat16" not in err
    monkeypatch.setattr(cbdm.workflow, "visible_gpus", lambda: 0)
    monkeypatch.setattr(cbdm.acceleration, "bf16_is_native", lambda device: True)
    code, err = check(write_config(tmp_path, put("training.precision", "bf16")), capsys)
    assert code == 0 and "bfloat16" not in err


def test_a_variant_that_trains_and_samples_as_another_is_a_warning_naming_both(tmp_path, monkeypatch, capsys):
    """A copied variant whose edit did not change anything (here a weight at the loss's default)
    trained, sampled and was reported as a second row with the same numbers (ddpm2 = ddpm, +0
    in every difference, on the tiny suite), with no word that the two are one setting."""
    monkeypatch.chdir(tmp_path)
    code, err = check(write_config(tmp_path, put("variants.ddpm2", {"losses": [{"name": "eps_mse", "weight": 1}]})),
                      capsys)
    assert code == 0 and ("warning: variants ddpm and ddpm2 train and sample alike (the same losses, training and "
                          "sampling settings): their rows will repeat each other; change one, or remove it") in err
    code, err = check(write_config(tmp_path, put("variants.ddpm2", {"losses": [{"name": "eps_mse", "weight": 2}]})),
                      capsys)
    assert code == 0 and "alike" not in err
