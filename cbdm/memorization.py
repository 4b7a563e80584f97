"""Memorization audit: is a generated image a near-copy of a training image of its class?

For every generated image, the distance (in pixel space, images scaled to [0, 1]) to the nearest
training image of its class; the same for held-out real images, which the model never saw. A
generated image is a near-copy when its distance is below `relative_threshold` times the median
held-out distance of its class; the share of held-out images below that threshold shows how
often the rule fires on images that cannot be copies. Tail classes with a handful of training
images are where copying shows first.
"""
from __future__ import annotations

import numpy as np

from .metrics import nearest_neighbour_distances
from .records import Record, class_scope, record
from .sources import ImageSet


def memorization_records(cfg: dict, generated: ImageSet, train: ImageSet, heldout: ImageSet,
                         num_classes: int, device="cpu") -> list[Record]:
    """Per class: near-copy share of the generated and of the held-out images, their median
    nearest-training distances and the threshold; not computed (with the counts) where a side is empty."""
    def flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float64) / 255.0

    records = []
    for c in range(num_classes):
        scope = class_scope(c)
        reference = flat(train.images[train.labels == c])
        gen = flat(generated.images[generated.labels == c])
        held = flat(heldout.images[heldout.labels == c])
        if min(len(reference), len(gen), len(held)) == 0:
            note = f"not computed: {len(reference)} training, {len(gen)} generated, {len(held)} held-out images"
            records += [record(scope, m, None, len(gen), len(held), note) for m in
                        ("near_copy_share", "near_copy_share_heldout", "nn_distance_median",
                         "nn_distance_median_heldout", "near_copy_threshold")]
            continue
        d_gen = nearest_neighbour_distances(gen, reference, device)
        d_held = nearest_neighbour_distances(held, reference, device)
        threshold = cfg["relative_threshold"] * np.median(d_held)
        note = f"{len(reference)} training images; threshold {threshold:.3g}"
        records += [
            record(scope, "near_copy_share", (d_gen < threshold).mean(), len(gen), len(reference), note),
            record(scope, "near_copy_share_heldout", (d_held < threshold).mean(), len(held), len(reference), note),
            record(scope, "nn_distance_median", np.median(d_gen), len(gen), len(reference)),
            record(scope, "nn_distance_median_heldout", np.median(d_held), len(held), len(reference)),
            # The report's memorization figure finds the flagged samples again with it.
            record(scope, "near_copy_threshold", threshold, len(gen), len(reference)),
        ]
    return records
