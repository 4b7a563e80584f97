"""The Inception feature path, offline: randomly initialised weights saved in the exact file
format torch-fidelity loads, through cbdm's features stage and asset checks."""
import numpy as np
import pytest
import torch

from cbdm.assets import DataError, asset_lock, file_digest, require_weights
from cbdm.classifier import CLASSIFIER_FORMAT, FeatureClassifier
from cbdm.features import extract_features, save_random_inception_weights
from cbdm.io import read_npz, write_npz


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A state dict with the keys and shapes of the real file, random values."""
    path = tmp_path_factory.mktemp("weights") / "weights-inception-random.pth"
    save_random_inception_weights(path)
    return path


@pytest.fixture
def trusted(monkeypatch, random_inception_weights):
    """Let the lock accept the random file, as it accepts the real one."""
    entry = asset_lock()["weights"]["inception_v3_fid"]
    monkeypatch.setitem(entry, "digest", file_digest(random_inception_weights))
    return random_inception_weights


def test_inception_features_through_the_features_stage(tmp_path, trusted):
    classifier = FeatureClassifier(1, 10, 8)
    torch.save({"format": CLASSIFIER_FORMAT, "hparams": classifier.hparams, "state_dict": classifier.state_dict()},
               tmp_path / "classifier.pt")
    rng = np.random.RandomState(0)
    write_npz(tmp_path / "samples.npz", images=rng.randint(0, 256, size=(6, 1, 8, 8), dtype=np.uint8),
              labels=np.arange(6) % 3)
    cfg = {"extractor": "inception", "inception_weights": str(trusted), "inception_preprocessing": "torch_fidelity"}
    extract_features(features_cfg=cfg, classifier_path=str(tmp_path / "classifier.pt"),
                     images_npz=str(tmp_path / "samples.npz"), prefix="", device="cpu",
                     out_npz=str(tmp_path / "features.npz"))
    out = read_npz(tmp_path / "features.npz")
    assert out["features"].shape == (6, 2048) and out["logits"].shape == (6, 1008)
    assert np.isfinite(out["features"]).all() and out["features"].std() > 0
    assert out["predicted"].shape == (6,) and out["predicted"].max() < 10  # classes from the domain classifier


def test_inception_features_are_labelled_by_the_classifier_that_predicts_their_classes(tmp_path, trusted):
    """Under Inception the predicted classes (acc, leakage) still come from the domain classifier:
    the label named Inception only, so two runs whose classifiers differ shared a leaderboard card
    and their features could be compared, while their acc came from different classifiers."""
    write_npz(tmp_path / "samples.npz", images=np.full((4, 1, 8, 8), 9, np.uint8), labels=np.arange(4))
    cfg = {"extractor": "inception", "inception_weights": str(trusted), "inception_preprocessing": "torch_fidelity"}
    labels = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        extract_features(features_cfg=cfg, classifier_path=classifier_file(tmp_path / f"c{seed}.pt"),
                         images_npz=str(tmp_path / "samples.npz"), prefix="", device="cpu",
                         out_npz=str(tmp_path / f"f{seed}.npz"))
        labels.append(str(read_npz(tmp_path / f"f{seed}.npz")["extractor"]))
    assert labels[0] != labels[1]
    assert all(label.startswith("inception torch_fidelity preprocessing") for label in labels)


def test_missing_weights_name_the_fetch_command(tmp_path):
    with pytest.raises(DataError, match=r"cbdm assets fetch.*torch-fidelity/releases"):
        require_weights("inception_v3_fid", tmp_path / "nope.pth")


def test_weights_that_are_not_the_official_file_are_refused(random_inception_weights):
    with pytest.raises(DataError, match="sha256-prefix:6726825d"):
        require_weights("inception_v3_fid", random_inception_weights)


def classifier_file(path, channels=1, classes=10, dim=8):
    model = FeatureClassifier(channels, classes, dim)
    torch.save({"format": CLASSIFIER_FORMAT, "hparams": model.hparams, "state_dict": model.state_dict()}, path)
    return str(path)


def test_a_classifier_for_another_dataset_or_config_is_refused(tmp_path):
    """A 3-class 8-d classifier on a 10-class dataset whose config says 32-d was accepted: classes
    3-9 could never be predicted."""
    import json

    from cbdm.io import InputError

    write_npz(tmp_path / "s.npz", images=np.full((4, 1, 8, 8), 7, np.uint8), labels=np.arange(4))
    (tmp_path / "source.json").write_text(json.dumps({"num_classes": 10, "image_shape": [1, 8, 8]}))
    cfg = {"extractor": "classifier", "feature_dim": 32}

    def extract(classifier):
        extract_features(features_cfg=cfg, classifier_path=classifier, images_npz=str(tmp_path / "s.npz"), prefix="",
                         device="cpu", out_npz=str(tmp_path / "f.npz"), source_json=str(tmp_path / "source.json"))

    with pytest.raises(InputError, match=r"is a classifier with num_classes 3, feature_dim 8, but this dataset and "
                                         r"config need num_classes 10, feature_dim 32: it was trained for another "
                                         r"dataset or config; re-run"):
        extract(classifier_file(tmp_path / "c3.pt", classes=3))
    with pytest.raises(InputError, match=r"with image_channels 3, but .* need image_channels 1:"):
        extract(classifier_file(tmp_path / "rgb.pt", channels=3, dim=32))
    extract(classifier_file(tmp_path / "ok.pt", dim=32))
    assert str(read_npz(tmp_path / "f.npz")["extractor"]).startswith("classifier ")


def test_metrics_refuse_feature_files_of_two_extractors(tmp_path):
    """Two classifiers of one width (a retrained one beside a stale cache) give features of one
    dimension: only the recorded extractor tells them apart."""
    from cbdm.evaluate import check_feature_sets
    from cbdm.io import InputError

    def arrays(extractor):
        return {"features": np.zeros((4, 8)), "labels": np.arange(4), "extractor": np.asarray(extractor)}

    check_feature_sets({"a": arrays("classifier 1"), "b": arrays("classifier 1")}, 10)
    check_feature_sets({"a": arrays("classifier 1"), "b": {k: v for k, v in arrays("x").items() if k != "extractor"}},
                       10)  # a file written before extractors were recorded
    with pytest.raises(InputError, match="feature files made by different extractors"):
        check_feature_sets({"a": arrays("classifier 1"), "b": arrays("classifier 2")}, 10)
