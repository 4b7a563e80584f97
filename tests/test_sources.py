import gzip
import json

import numpy as np
import pytest
import torch

from cbdm.dataset import build_longtail, prepare_source, read_image_set
from cbdm.sources import DataError, load_source, read_idx
from cbdm.train import train

from fakes import write_cifar, write_fashion_mnist
from helpers import training_settings


def cifar_spec(root, name="cifar10", verify=False):
    return {"source": name, "root": str(root), "download": False, "verify_checksums": verify}


def test_fake_cifar10_loads_in_file_order(tmp_path):
    labels = write_cifar(tmp_path)
    source = load_source(cifar_spec(tmp_path))
    assert source.train.images.shape == (300, 3, 32, 32) and source.train.images.dtype == np.uint8
    assert np.array_equal(source.train.labels, labels)
    assert source.test.images.shape == (60, 3, 32, 32)
    # Row-major CHW: the first 1024 bytes of a row are the red plane.
    import pickle
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"]
    assert np.array_equal(source.train.images[0, 0].ravel(), raw[0, :1024])
    assert set(source.files) == {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch"}


def test_fake_cifar100_uses_fine_labels(tmp_path):
    labels = write_cifar(tmp_path, "cifar100", per_batch=400, num_classes=100)
    source = load_source(cifar_spec(tmp_path, "cifar100"))
    assert np.array_equal(source.train.labels, labels)
    assert source.train.labels.max() > 19  # fine, not coarse labels


def test_checksums_catch_files_that_are_not_the_official_release(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DataError, match="corrupt or not the official release"):
        load_source(cifar_spec(tmp_path, verify=True))


def test_missing_archive_says_where_to_put_it_and_how_to_fetch_it(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz.*download: true"):
        load_source(cifar_spec(tmp_path))
    with pytest.raises(DataError, match="needs `root:`"):
        load_source({"source": "cifar100", "root": None})


def test_truncated_cifar_batch_is_reported(tmp_path):
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR batch file"):
        load_source(cifar_spec(tmp_path))


def test_longtail_selection_on_fake_cifar_equals_the_reference_rule_and_trains(tmp_path):
    labels = write_cifar(tmp_path, per_batch=200)
    spec = cifar_spec(tmp_path)
    prepare_source(spec, tmp_path / "source.npz", tmp_path / "source.json")
    longtail = {"profile": "exponential", "n_max": None, "seed": 0}
    build_longtail(longtail, 10.0, tmp_path / "source.npz", tmp_path / "source.json",
                   tmp_path / "train.npz", tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n_max"] == 100.0  # pool size / classes, as the reference computes it
    np.random.seed(0)
    expected = []
    for c, n in enumerate(manifest["class_counts"]):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        expected += idx[:n].tolist()
    assert manifest["indices_into_pool"] == expected
    subset = read_image_set(tmp_path / "train.npz")
    assert np.bincount(subset.labels, minlength=10).tolist() == manifest["class_counts"]

    settings = training_settings([{"name": "eps_mse"}, {"name": "cbdm"}], steps=2, batch_size=4, lr=1e-3,
                                 warmup_steps=1, ema_decay=0.9, hflip=True, checkpoint_every=1, log_every=1)
    network = {"base_channels": 8, "channel_mult": [1, 2], "attention_levels": [1], "num_res_blocks": 1,
               "dropout": 0.1, "norm_groups": 4}
    train(settings, network=network, diffusion={"num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02},
          train_npz=str(tmp_path / "train.npz"), num_classes=10, seed=0, device="cpu",
          out_model=str(tmp_path / "model.pt"), out_log=str(tmp_path / "loss.csv"),
          checkpoint_path=str(tmp_path / "ckpt.pt"))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["unet"]["image_channels"] == 3 and payload["unet"]["image_size"] == 32
    assert (tmp_path / "loss.csv").read_text().count("\n") == 3  # header + 2 steps


def test_fashion_mnist_idx_files(tmp_path):
    write_fashion_mnist(tmp_path)
    source = load_source({"source": "fashion_mnist", "root": str(tmp_path), "verify_checksums": False})
    assert source.train.images.shape == (200, 1, 28, 28)
    assert source.test.labels.tolist()[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    with pytest.raises(DataError, match="not the official release"):
        load_source({"source": "fashion_mnist", "root": str(tmp_path), "verify_checksums": True})


def test_fashion_mnist_missing_files_name_the_debian_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_source({"source": "fashion_mnist", "root": str(tmp_path), "verify_checksums": True})


def test_truncated_idx_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_digits_split_into_pool_and_heldout(tmp_path):
    prepare_source({"source": "sklearn_digits", "heldout_per_class": 20, "split_seed": 0},
                   tmp_path / "s.npz", tmp_path / "s.json")
    info = json.loads((tmp_path / "s.json").read_text())
    assert info["heldout_counts"] == [20] * 10
    assert sum(info["pool_counts"]) + 200 == 1797
    pool = read_image_set(tmp_path / "s.npz", "pool_")
    assert pool.images.shape[1:] == (1, 8, 8) and pool.images.max() == 255
