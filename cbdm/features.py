"""Stage 4: images -> features (and predicted classes), computed once per image set and cached
in an .npz that every metric reads."""
from __future__ import annotations

import time

import numpy as np

from .classifier import embed, load_classifier
from .dataset import read_image_set
from .io import write_npz
from .train import resolve_device


def extract_features(*, extractor_path: str, images_npz: str, prefix: str, device: str,
                     out_npz: str) -> None:
    """Features, logits and labels of the images stored under `prefix` in `images_npz`."""
    dev = resolve_device(device)
    images = read_image_set(images_npz, prefix)
    classifier = load_classifier(extractor_path, dev)
    started = time.time()
    features, logits = embed(classifier, images.images, dev)
    print(f"{len(features)} images of {images_npz} ({prefix or 'all'}) -> {features.shape[1]}-d features "
          f"in {time.time() - started:.1f} s", flush=True)
    write_npz(out_npz, features=features, logits=logits, labels=images.labels,
              predicted=logits.argmax(1).astype(np.int64))
