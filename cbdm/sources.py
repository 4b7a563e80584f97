"""Readers for the real image datasets a suite can be built from.

Every reader returns uint8 images [N, C, H, W] with int64 labels, in the order of the
official files (which the long-tail selection relies on), and the digests of what it read.
Nothing here downloads unless the config says `download: true`.
"""
from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .assets import DataError, asset_lock, check_file, file_digest


@dataclass(frozen=True)
class ImageSet:
    """uint8 images [N, C, H, W] with one label each."""

    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def subset(self, indices: np.ndarray) -> "ImageSet":
        """The images and labels at `indices`."""
        return ImageSet(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class Source:
    """A dataset as read: its training split, its official test split if any, and the files read."""

    train: ImageSet
    test: ImageSet | None       # None: the source has no official test split
    files: dict[str, str]       # file name -> digest of what was read


NUM_CLASSES = {"sklearn_digits": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
# (channels, side) of each source's images as read, before a dataset's `image_size` resize.
IMAGE_SHAPES = {"sklearn_digits": (1, 8), "fashion_mnist": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32)}
# Images per class of each source's training split (the official files; digits has no test
# split and holds out images from these), so that a config's long tail is checked before any job.
TRAIN_CLASS_SIZES = {"sklearn_digits": [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
                     "fashion_mnist": [6000] * 10, "cifar10": [5000] * 10, "cifar100": [500] * 100}
SOURCES_WITHOUT_TEST_SPLIT = {"sklearn_digits"}
# Class names in label order, for sample folders named by class (cbdm.samplesets).
CLASS_NAMES = {
    "sklearn_digits": [str(c) for c in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "cifar100": (
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
        "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
        "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
        "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
        "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
        "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
        "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
        "willow_tree wolf woman worm").split(),
}


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


HINTS = {
    "fashion_mnist": ("the folder with train-images-idx3-ubyte.gz and the three other IDX files "
                      "(Debian: `apt-get install dataset-fashion-mnist` puts them in "
                      "/usr/share/datasets/fashion-mnist)"),
    "cifar10": "the folder that holds cifar-10-batches-py/ (extract cifar-10-python.tar.gz there)",
    "cifar100": "the folder that holds cifar-100-python/ (extract cifar-100-python.tar.gz there)",
}


def fetch_source(spec: dict) -> None:
    """Download a dataset with torchvision's downloader (which checks its own checksums)."""
    from torchvision import datasets

    if spec.get("root") is None:
        raise DataError(f"dataset source {spec['source']!r} needs `root:` to download into")
    getattr(datasets, asset_lock()["datasets"][spec["source"]]["torchvision"])(str(spec["root"]), download=True)


def source_folder(spec: dict) -> Path:
    """The folder holding every file of a file-based source; downloads first if the config says
    `download: true` and the files are missing."""
    name, lock = spec["source"], asset_lock()["datasets"][spec["source"]]
    if spec.get("root") is None:
        raise DataError(f"dataset source {name!r} needs `root:` in its config entry: {HINTS[name]}")
    root = Path(spec["root"]).expanduser()
    candidates = [root / folder for folder in lock["folders"]]

    def complete():
        return next((d for d in candidates if all((d / f).exists() for f in lock["files"])), None)

    if complete() is None and spec.get("download"):
        fetch_source(spec)
    folder = complete()
    if folder is None:
        missing = [f for f in lock["files"] if not (candidates[0] / f).exists()]
        raise DataError(f"{name}: {missing} not found in {' or '.join(map(str, candidates))}. Set root to "
                        f"{HINTS[name]}, or set `download: true` (or run `cbdm assets fetch`) to let "
                        f"torchvision fetch it.")
    return folder


def verify_source(spec: dict) -> dict[str, str]:
    """file name -> digest of every file of a file-based source, checked against the lock."""
    folder, entries = source_folder(spec), asset_lock()["datasets"][spec["source"]]["files"]
    return {f: check_file(folder / f, entry, spec.get("verify_checksums", True)) for f, entry in entries.items()}


def _read_fashion_mnist(spec: dict) -> Source:
    files = verify_source(spec)
    folder, lock = source_folder(spec), asset_lock()["datasets"]["fashion_mnist"]

    def split(images_file, labels_file):
        return ImageSet(read_idx(folder / images_file)[:, None], read_idx(folder / labels_file).astype(np.int64))

    return Source(split(*lock["train"]), split(*lock["test"]), files)


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
    files = verify_source(spec)
    folder, lock = source_folder(spec), asset_lock()["datasets"][spec["source"]]

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
