"""Stage 1: real images -> a training pool, a held-out set and long-tailed training sets.

The long-tailed subset follows the LDAM-DRW construction used by CBDM and DiffROP: class c
keeps n_c = int(n_max * (1/IF) ** (c / (C - 1))) images, chosen by seeding numpy's legacy
generator once and, class by class in label order, shuffling that class's indices and
keeping the first n_c. With the reference seed (0) the subset equals the reference's.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .fingerprint import ORIGIN, check_origin, fingerprint, origin_array
from .io import InputError, read_json, read_npz, rebuild, write_json, write_npz
from .labels import factor_label
from .sources import NUM_CLASSES, DataError, ImageSet, load_source


def longtail_counts(num_classes: int, n_max: float, imbalance_factor: float, profile: str) -> list[int]:
    """Images per class, class 0 the largest."""
    if imbalance_factor < 1:
        raise ValueError(f"imbalance factor {imbalance_factor} < 1: it is n_max / n_min, so use a value >= 1 "
                         f"(the reference code's imb_factor=0.01 is IF=100)")
    if profile == "exponential":
        # Written as (1/IF) ** x, not IF ** -x, so that int() truncates exactly as the reference does.
        ratio = 1.0 / imbalance_factor
        return [int(n_max * ratio ** (c / (num_classes - 1.0))) for c in range(num_classes)]
    if profile == "step":
        head = num_classes // 2
        return [int(n_max) if c < head else int(n_max / imbalance_factor) for c in range(num_classes)]
    raise ValueError(f"unknown long-tail profile {profile!r}; use 'exponential' or 'step'")


def longtail_plan(longtail: dict, imbalance_factor: float, num_classes: int,
                  pool_size: int) -> tuple[float, list[int]]:
    """(n_max, images per class) of a `longtail` section at one imbalance factor, for a training
    pool of `pool_size` images over `num_classes` classes (n_max null: the pool's mean class size)."""
    n_max = longtail["n_max"] if longtail["n_max"] is not None else pool_size / num_classes
    return n_max, longtail_counts(num_classes, n_max, imbalance_factor, longtail["profile"])


def select_longtail(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """Indices of the long-tailed subset, grouped by class in label order."""
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n_c in enumerate(counts):
        idx = np.where(labels == c)[0]
        if n_c > len(idx):
            raise DataError(f"class {c} has {len(idx)} images in the training pool but the long-tail "
                            f"profile asks for {n_c}: lower longtail.n_max (or heldout_per_class)")
        rng.shuffle(idx)
        chosen.append(idx[:n_c])
    return np.concatenate(chosen)


def split_heldout(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, held-out) indices: `per_class` random images of each class are held out."""
    rng = np.random.RandomState(seed)
    heldout = []
    for c in np.unique(labels):
        idx = np.where(labels == c)[0]
        if per_class >= len(idx):
            raise DataError(f"class {c} has {len(idx)} images; holding out {per_class} leaves none "
                            f"to train on: lower heldout_per_class")
        heldout.append(rng.permutation(idx)[:per_class])
    heldout = np.sort(np.concatenate(heldout))
    pool = np.setdiff1d(np.arange(len(labels)), heldout)
    return pool, heldout


# A dataset entry's keys that its prepared source (pool and held-out set) does not depend on.
NOT_OF_THE_SOURCE = ("longtail", "groups")


def source_settings(spec: dict) -> dict:
    """What a dataset's prepared source depends on: its entry less NOT_OF_THE_SOURCE."""
    return {key: value for key, value in spec.items() if key not in NOT_OF_THE_SOURCE}


def longtail_settings(spec: dict) -> dict:
    """What one imbalance factor's long-tailed set depends on besides the factor: the entry's
    `longtail` section less its list of factors."""
    return {key: value for key, value in spec["longtail"].items() if key != "imbalance_factor"}


def data_digest(spec: dict, imbalance_factor: float | None = None) -> str:
    """A digest of the settings that define a dataset's images (its source_settings; with an
    imbalance factor, also the long tail drawn at it: the training set). A model file and a
    reference features file record it, and the jobs reading them compare it with their config's,
    so a file made from other data (another n_max, long-tail seed, source or held-out split)
    is refused instead of measured as this suite's."""
    parts = [source_settings(spec)]
    if imbalance_factor is not None:
        parts += [longtail_settings(spec), float(imbalance_factor)]
    return fingerprint(*parts)


def data_origin(dataset: str, spec: dict, imbalance_factor: float | None = None) -> dict:
    """What a prepared data file records and every job reading it expects: for source.npz the
    dataset and the digest of its source settings; for a long-tailed train.npz (`imbalance_factor`
    given) also the factor's label, the digest then covering the long tail (data_digest). A file
    kept from other settings (--rerun-triggers mtime) or copied from another suite would
    otherwise be trained on and scored against as this config's (cbdm.fingerprint.check_origin)."""
    origin = {"dataset": dataset, "data_digest": data_digest(spec, imbalance_factor)}
    if imbalance_factor is not None:
        origin["imbalance_factor"] = factor_label(imbalance_factor)
    return origin


# Reference sets drawn from the long-tailed training set rather than the prepared source.
TRAINING_SET_REFERENCES = ("longtail_train",)


def reference_origin(dataset: str, spec: dict, reference: str, imbalance_factor: float) -> dict:
    """What a reference set's features file records, and its readers expect: which set of which
    data (the held-out set and the pool do not depend on the imbalance factor)."""
    factor = imbalance_factor if reference in TRAINING_SET_REFERENCES else None
    return {"dataset": dataset, "reference": reference, "data_digest": data_digest(spec, factor)}


def array_digest(*arrays: np.ndarray) -> str:
    """'sha256:<hex>' of the arrays' bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return f"sha256:{h.hexdigest()}"


def split_source(spec: dict) -> tuple[ImageSet, ImageSet, str, dict]:
    """(training pool, held-out set, how they were split, the source's files) of one dataset, at
    its image size: what prepare_source writes, and what `cbdm check` holds imported samples to."""
    source = load_source(spec)
    if source.test is not None:
        pool, heldout = source.train, source.test
        split = "official train / test split"
    else:
        pool_idx, heldout_idx = split_heldout(source.train.labels, spec["heldout_per_class"], spec["split_seed"])
        pool, heldout = source.train.subset(pool_idx), source.train.subset(heldout_idx)
        split = f"{spec['heldout_per_class']} images per class held out (seed {spec['split_seed']})"
    if spec.get("image_size") and spec["image_size"] != pool.images.shape[-1]:
        pool, heldout = resize(pool, spec["image_size"]), resize(heldout, spec["image_size"])
        split += f"; resized to {spec['image_size']}x{spec['image_size']}"
    return pool, heldout, split, source.files


def prepare_source(spec: dict, out_npz: str, out_json: str, origin: dict | None = None) -> None:
    """Write the training pool and the held-out set of one dataset, with provenance; the .npz and
    the .json record `origin` (data_origin) for the jobs that read them (read_image_set,
    read_source_record)."""
    pool, heldout, split, files = split_source(spec)
    num_classes = NUM_CLASSES[spec["source"]]
    write_npz(out_npz, pool_images=pool.images, pool_labels=pool.labels,
              heldout_images=heldout.images, heldout_labels=heldout.labels, **origin_array(origin))
    write_json(out_json, {
        "source": spec["source"],
        "files": files,
        "split": split,
        "num_classes": num_classes,
        "image_shape": list(pool.images.shape[1:]),
        "pool_counts": np.bincount(pool.labels, minlength=num_classes).tolist(),
        "heldout_counts": np.bincount(heldout.labels, minlength=num_classes).tolist(),
        "pool_digest": array_digest(pool.images, pool.labels),
        **({ORIGIN: origin} if origin is not None else {}),
    })


def resize(images: ImageSet, side: int) -> ImageSet:
    """Antialiased bilinear resize of uint8 images to side x side."""
    import torch
    from torch.nn.functional import interpolate

    out = []
    for start in range(0, len(images.images), 4096):
        x = torch.from_numpy(images.images[start:start + 4096]).float()
        out.append(interpolate(x, size=(side, side), mode="bilinear", antialias=True,
                               align_corners=False).round().clamp(0, 255).to(torch.uint8).numpy())
    return ImageSet(np.concatenate(out), images.labels)


def images_to_model_range(images):
    """uint8 [0, 255] tensor -> float [-1, 1], the range the networks see."""
    return images.float() / 127.5 - 1.0


def read_image_set(npz: str, prefix: str = "", num_classes: int | None = None,
                   image_shape: tuple | list | None = None, origin: dict | None = None) -> ImageSet:
    """The `<prefix>images` and `<prefix>labels` arrays of an .npz file: prefix 'pool_' or
    'heldout_' in a prepared source, '' in a training or sample set. Checked: uint8 images, one
    label per image, labels in 0..num_classes-1, images of `image_shape` [C, H, W] (where given)
    and the `origin` it records (a sample set's cell, a prepared data file's data_origin;
    cbdm.fingerprint.check_origin); an InputError names the file otherwise."""
    data = read_npz(npz, {f"{prefix}images": 4, f"{prefix}labels": 1})
    check_origin(npz, data.get(ORIGIN), origin)
    images, labels = data[f"{prefix}images"], data[f"{prefix}labels"]
    problem = image_set_problem(images, labels, num_classes, image_shape)
    if problem:
        raise InputError(f"{npz}: {problem}; it does not belong to this dataset: {rebuild(npz)}")
    return ImageSet(images, labels.astype(np.int64))


def image_set_problem(images: np.ndarray, labels: np.ndarray, num_classes: int | None,
                      image_shape: tuple | list | None) -> str | None:
    """What is wrong with an image set, or None."""
    if images.dtype != np.uint8:
        return f"images are {images.dtype}, expected uint8"
    if len(images) != len(labels):
        return f"{len(images)} images but {len(labels)} labels"
    if not np.issubdtype(labels.dtype, np.integer):
        return f"labels are {labels.dtype}, expected integers"
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        return f"labels range {labels.min()}..{labels.max()}, but the dataset has classes 0..{num_classes - 1}"
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        return f"images are {list(images.shape[1:])} [C, H, W], but the dataset's are {list(image_shape)}"
    return None


def read_source_record(path, origin: dict | None = None) -> dict:
    """A prepared source's source.json (prepare_source), refused unless it records `origin` (the
    source's data_origin) where given: its class count and image shape check every image set read
    against it, and a record kept from other settings (another split, another image size) would
    check them against the wrong ones without a word."""
    record = read_json(path)
    check_origin(path, record.get(ORIGIN), origin)
    return record


def read_manifest(path, origin: dict | None = None) -> dict:
    """A long-tailed training set's manifest.json (build_longtail), refused unless it records
    `origin` (the training set's data_origin) where given: the class counts the sample and import
    jobs draw labels from, and the report shows, would otherwise be those of another long tail
    (a manifest kept from other settings, or copied from another suite) without a word."""
    manifest = read_json(path)
    check_origin(path, manifest.get(ORIGIN), origin)
    return manifest


def build_longtail(longtail: dict, imbalance_factor: float, source_npz: str, source_json: str,
                   out_npz: str, out_manifest: str, source_origin: dict | None = None,
                   origin: dict | None = None) -> None:
    """Draw the long-tailed training set from the pool; the manifest records how. A source of
    other settings than `source_origin` is refused; the set and its manifest record `origin`
    (data_origin), which their readers check (read_image_set, read_manifest)."""
    pool = read_image_set(source_npz, "pool_", origin=source_origin)
    info = read_source_record(source_json, source_origin)
    num_classes = info["num_classes"]
    n_max, counts = longtail_plan(longtail, imbalance_factor, num_classes, len(pool.labels))
    indices = select_longtail(pool.labels, counts, longtail["seed"])
    subset = pool.subset(indices)
    write_npz(out_npz, images=subset.images, labels=subset.labels, **origin_array(origin))
    write_json(out_manifest, {
        "source": info["source"],
        "source_files": info["files"],
        "pool_digest": info["pool_digest"],
        "profile": longtail["profile"],
        "imbalance_factor": imbalance_factor,
        "n_max": n_max,
        "seed": longtail["seed"],
        "class_counts": counts,
        "total": int(sum(counts)),
        "subset_digest": array_digest(subset.images, subset.labels),
        "indices_into_pool": indices.tolist(),
        **({ORIGIN: origin} if origin is not None else {}),
    })
