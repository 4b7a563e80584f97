"""Stage 5b: synthetic data for long-tailed classification, the second claim of CBDM and DiffROP.

A classifier is trained on the real long-tailed training set plus generated images that fill
every class up to a declared share of the largest class ('fill' samples), and tested on the
held-out real images. Two control rows use no generated image: "real only" trains on the real
images alone, "real oversampled" fills every class with copies of its own real images drawn at
random, so that a variant's gain over it is the content of its samples, not the extra and
class-balanced optimisation steps a fill brings. This differs from CAS
(cbdm/cas.py), which trains on generated images only. Each row is trained once per classifier
seed, so that the report can pair every variant's runs with the real-only runs of the same seed.
"""
from __future__ import annotations

import numpy as np

from .acceleration import resolve_device
from .classifier import fit_classifier, per_class_accuracy
from .dataset import read_image_set
from .io import write_json
from .records import class_scope, record
from .sample import fill_counts
from .sources import ImageSet

REAL_ONLY = "real_only"
REAL_OVERSAMPLED = "real_oversampled"
CONTROL_ROWS = (REAL_ONLY, REAL_OVERSAMPLED)
METRIC = "augment_top1"


def augmented_set(train: ImageSet, generated: ImageSet | None, percent: int, num_classes: int) -> ImageSet:
    """The real training set plus the generated fill; the fill must be the one `percent` asks for."""
    if generated is None:
        return train
    expected = fill_counts(np.bincount(train.labels, minlength=num_classes).tolist(), percent)
    found = np.bincount(generated.labels, minlength=num_classes)
    if not np.array_equal(found, expected):
        raise ValueError(f"the generated fill has {found.tolist()} images per class, but filling the training set "
                         f"to {percent} % of its largest class needs {expected.tolist()}: delete the sample file "
                         f"and re-run")
    return ImageSet(np.concatenate([train.images, generated.images]),
                    np.concatenate([train.labels, generated.labels]))


def oversampled_fill(train: ImageSet, percent: int, num_classes: int, seed: int = 0) -> ImageSet:
    """The fill of the 'real oversampled' row: real images of each class drawn with replacement."""
    counts = fill_counts(np.bincount(train.labels, minlength=num_classes).tolist(), percent)
    rng = np.random.RandomState(seed)
    picks = [rng.choice(np.where(train.labels == c)[0], n) for c, n in enumerate(counts) if n]
    return train.subset(np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64))


def seed_records(recipe: dict, seed: int, images: ImageSet, test: ImageSet, groups: dict, num_classes: int,
                 device) -> list[dict]:
    """Held-out top-1 accuracy of one classifier: per class, and the mean over classes of all
    classes and of each group (every class counts the same, however many test images it has)."""
    model = fit_classifier(images, num_classes, {**recipe, "seed": seed}, device, f"augment seed {seed}")
    per_class = per_class_accuracy(model, test, num_classes, device)
    n_train = np.bincount(images.labels, minlength=num_classes)
    n_test = np.bincount(test.labels, minlength=num_classes)
    records = [record(class_scope(c), METRIC, per_class[c], n_train[c], n_test[c]) for c in range(num_classes)]
    for name, classes in [("all", list(range(num_classes)))] + list(groups.items()):
        values = [per_class[c] for c in classes if per_class[c] is not None]
        records.append(record(name, METRIC, np.mean(values) if values else None, n_train[classes].sum(),
                              n_test[classes].sum(), "" if values else "no held-out images"))
    return [{**r, "seed": seed} for r in records]


def run_augmentation(*, augmentation: dict, row: str, train_npz: str, source_npz: str, samples_npz: list[str],
                     groups: dict, num_classes: int, device: str, out_json: str,
                     origin: list[dict] | None = None, train_origin: dict | None = None,
                     source_origin: dict | None = None) -> None:
    """One row of the augmentation table (a variant's fill, or a control row of `CONTROL_ROWS`
    without samples) over the configured classifier seeds. Classifier seed k trains on fill
    `samples_npz[k % len]` (the variant's k-th training seed's, cycling) and the oversampled
    control on a draw of seed k, so that the spread over seeds covers the generator's and the
    draw's variation, not only the classifier's. With `origin` (each fill's cell, in order), a
    fill made for another cell is refused, and with `train_origin` and `source_origin`
    (cbdm.dataset.data_origin) real images of other settings."""
    dev = resolve_device(device)
    train = read_image_set(train_npz, origin=train_origin)
    test = read_image_set(source_npz, "heldout_", origin=source_origin)
    origins = origin or [None] * len(samples_npz)
    fills = [read_image_set(path, origin=cell) for path, cell in zip(samples_npz, origins)]
    seeds = augmentation["seeds"]
    print(f"augmentation row {row}: {len(train.labels)} real images, {len(fills) or 'no'} generated fill(s), "
          f"{len(test.labels)} held-out test images, classifier seeds {seeds}", flush=True)
    fill_of = {seed: k % len(fills) for k, seed in enumerate(seeds)} if fills else {}  # seed -> fill index
    records, n_generated = [], np.zeros(num_classes, int)
    for seed in seeds:
        generated = fills[fill_of[seed]] if fills else None
        if row == REAL_OVERSAMPLED:
            generated = oversampled_fill(train, augmentation["fill_percent"], num_classes, seed)
        images = augmented_set(train, generated, augmentation["fill_percent"], num_classes)
        if generated is not None:
            n_generated = np.bincount(generated.labels, minlength=num_classes)
        records += seed_records(augmentation["classifier"], seed, images, test, groups, num_classes, dev)
        overall = [r["value"] for r in records if r["scope"] == "all" and r["seed"] == seed][0]
        print(f"seed {seed}: {len(images.labels)} training images"
              f"{f', fill {samples_npz[fill_of[seed]]}' if fills else ''}; "
              f"held-out top-1 (mean over classes) {overall:.4f}", flush=True)
    write_json(out_json, {"row": row, "fill_percent": augmentation["fill_percent"],
                          "generated_per_class": n_generated.tolist(),
                          "fills": {str(seed): samples_npz[i] for seed, i in fill_of.items()}, "records": records})
