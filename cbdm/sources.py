"""Readers for the real image datasets a suite can be built from.

Every reader returns uint8 images [N, C, H, W] with int64 labels, in the order of the
official files (which the long-tail selection relies on), and the digests of what it read.
Nothing here downloads unless the config says `download: true`.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml


class DataError(RuntimeError):
    """A dataset file is missing or not what it should be; the message names the fix."""


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def subset(self, indices: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Source:
    train: ImageSet
    test: ImageSet | None       # None: the source has no official test split
    files: dict[str, str]       # file name -> digest of what was read


NUM_CLASSES = {"sklearn_digits": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


@cache
def asset_lock() -> dict:
    return yaml.safe_load(resources.files("cbdm").joinpath("assets.lock.yaml").read_text())


def file_digest(path: Path, algorithm: str = "sha256", decompressed: bool = False) -> str:
    h = hashlib.new(algorithm)
    opener = gzip.open if decompressed else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def check_file(path: Path, entry: dict, verify: bool) -> str:
    """Digest of `path` in the lock's algorithm; raises DataError on a mismatch when `verify`."""
    algorithm, expected = entry["digest"].split(":")
    digest = file_digest(path, algorithm, entry.get("decompressed", False))
    if verify and digest != entry["digest"]:
        raise DataError(
            f"{path} has {digest} but the official file has {entry['digest']}: the file is "
            f"corrupt or not the official release. Delete it and fetch it again, or set "
            f"verify_checksums: false for this dataset if you use a deliberate variant.")
    return digest


def load_source(spec: dict) -> Source:
    """Read the dataset named by a config `datasets.<name>` entry."""
    readers = {"sklearn_digits": _read_digits, "fashion_mnist": _read_fashion_mnist,
               "cifar10": _read_cifar, "cifar100": _read_cifar}
    return readers[spec["source"]](spec)


def _read_digits(spec: dict) -> Source:
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are counts 0..16 of an 4x4 block; map them onto the usual 0..255 range.
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    data_file = resources.files("sklearn.datasets").joinpath("data", "digits.csv.gz")
    files = {f"sklearn-{sklearn.__version__}/digits.csv.gz": file_digest(Path(str(data_file)))}
    return Source(ImageSet(images, digits.target.astype(np.int64)), None, files)


def _require_root(spec: dict, hint: str) -> Path:
    if spec.get("root") is None:
        raise DataError(f"dataset source {spec['source']!r} needs `root:` in its config entry: {hint}")
    return Path(spec["root"]).expanduser()


def _read_fashion_mnist(spec: dict) -> Source:
    hint = ("the folder with train-images-idx3-ubyte.gz and the three other IDX files "
            "(Debian: `apt-get install dataset-fashion-mnist` puts them in "
            "/usr/share/datasets/fashion-mnist), or any folder with `download: true`")
    root = _require_root(spec, hint)
    entries = asset_lock()["datasets"]["fashion_mnist"]["files"]
    folder = next((d for d in (root, root / "FashionMNIST" / "raw")
                   if all((d / name).exists() for name in entries)), None)
    if folder is None and spec.get("download"):
        from torchvision.datasets import FashionMNIST
        FashionMNIST(str(root), train=True, download=True)
        folder = root / "FashionMNIST" / "raw"
    if folder is None:
        missing = [name for name in entries if not (root / name).exists()]
        raise DataError(f"Fashion-MNIST files {missing} not found in {root} (nor in "
                        f"{root / 'FashionMNIST' / 'raw'}). Set root to {hint}.")
    verify = spec.get("verify_checksums", True)
    files = {name: check_file(folder / name, entry, verify) for name, entry in entries.items()}

    def split(prefix):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        return ImageSet(images[:, None], labels.astype(np.int64))

    return Source(split("train"), split("t10k"), files)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format) of unsigned bytes, gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes: re-fetch it")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: header says {shape}, file holds {payload.size} values")
    return payload.reshape(shape)


def _read_cifar(spec: dict) -> Source:
    name = spec["source"]
    lock = asset_lock()["datasets"][name]
    hint = (f"the folder that holds {lock['folder']}/ (extract {lock['archive']['url']} there, "
            f"or set `download: true` to let torchvision fetch it)")
    root = _require_root(spec, hint)
    folder = root / lock["folder"]
    if not all((folder / f).exists() for f in lock["files"]) and spec.get("download"):
        from torchvision import datasets
        getattr(datasets, {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name])(str(root), download=True)
    missing = [f for f in lock["files"] if not (folder / f).exists()]
    if missing:
        raise DataError(f"{name}: {', '.join(str(folder / f) for f in missing)} not found. "
                        f"Set root to {hint}.")
    verify = spec.get("verify_checksums", True)
    files = {f: check_file(folder / f, lock["files"][f], verify) for f in lock["files"]}

    def split(names):
        parts = [read_cifar_pickle(folder / n, lock["label_key"]) for n in names]
        return ImageSet(np.concatenate([p.images for p in parts]),
                        np.concatenate([p.labels for p in parts]))

    return Source(split(lock["train"]), split(lock["test"]), files)


def read_cifar_pickle(path: Path, label_key: str) -> ImageSet:
    """One batch file of the CIFAR python archive: {'data': uint8 [N, 3072], label_key: [N]}."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path} is not a CIFAR batch file ({err!r}): re-extract the archive") from err
    return ImageSet(data.reshape(-1, 3, 32, 32), labels)
