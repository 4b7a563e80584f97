"""Repeat every class's images up to the size of the largest class (seeded, deterministic)."""
import numpy as np

from cbdm.dataset import read_image_set
from cbdm.fingerprint import origin_array
from cbdm.io import write_npz
from cbdm.workflow import job

with job(snakemake):
    # The resampled set is of the same data: it records the training set's origin, which the
    # training job (the train rule's train_origin) checks as it checks train.npz's.
    origin = snakemake.params.origin
    data = read_image_set(snakemake.input.train, origin=origin)
    largest = np.bincount(data.labels).max()
    rng = np.random.RandomState(0)
    picks = []
    for c in np.unique(data.labels):
        idx = np.where(data.labels == c)[0]
        picks.append(np.concatenate([np.tile(idx, largest // len(idx)),
                                     rng.choice(idx, largest % len(idx), replace=False)]))
    picks = np.concatenate(picks)
    print(f"resampled {len(data.labels)} images to {len(picks)} ({largest} per class)")
    write_npz(snakemake.output.npz, images=data.images[picks], labels=data.labels[picks], **origin_array(origin))
