"""Small stand-ins for downloaded datasets, written in the exact on-disk formats."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_cifar(root: Path, name: str = "cifar10", per_batch: int = 60, num_classes: int = 10,
                seed: int = 0) -> np.ndarray:
    """A CIFAR python archive layout with random pixels; returns the training labels in file order."""
    rng = np.random.RandomState(seed)
    if name == "cifar10":
        folder, test, key = root / "cifar-10-batches-py", ["test_batch"], "labels"
        train = [f"data_batch_{i}" for i in range(1, 6)]
    else:
        folder, train, test, key = root / "cifar-100-python", ["train"], ["test"], "fine_labels"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = []
    for file in train + test:
        labels = rng.permutation(np.arange(per_batch) % num_classes).tolist()  # balanced, as CIFAR is
        entry = {"batch_label": f"fake {file}", key: labels,
                 "data": rng.randint(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8),
                 "filenames": [f"img_{i}.png" for i in range(per_batch)]}
        if name == "cifar100":
            entry["coarse_labels"] = [label // 5 for label in labels]
        with open(folder / file, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        if file in train:
            train_labels += labels
    return np.array(train_labels)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\0\0\x08" + bytes([array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> None:
    rng = np.random.RandomState(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 256, size=(n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
