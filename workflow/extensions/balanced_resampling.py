"""Repeat every class's images up to the size of the largest class (seeded, deterministic)."""
import numpy as np

from cbdm.dataset import read_image_set
from cbdm.fingerprint import origin_array
from cbdm.io import write_npz
from cbdm.workflow import job

with job(snakemake):
    # The resampled set records the training set's origin and how it was drawn (resampled_origin),
    # which its training job checks as the built-in one checks train.npz's.
    data = read_image_set(snakemake.input.train, origin=snakemake.params.origin)
    largest = np.bincount(data.labels).max()
    rng = np.random.RandomState(0)
    picks = []
    for c in np.unique(data.labels):
        idx = np.where(data.labels == c)[0]
        picks.append(np.concatenate([np.tile(idx, largest // len(idx)),
                                     rng.choice(idx, largest % len(idx), replace=False)]))
    picks = np.concatenate(picks)
    print(f"resampled {len(data.labels)} images to {len(picks)} ({largest} per class)")
    write_npz(snakemake.output.npz, images=data.images[picks], labels=data.labels[picks],
              **origin_array(snakemake.params.resampled_origin))
