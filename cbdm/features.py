"""Stage 4: images -> features, logits and predicted classes, computed once per image set and
cached in an .npz that every metric reads.

Features come from the configured extractor: the domain classifier (its standardised
penultimate layer) or Inception-v3 as in the FID reference (the 2048-d pool features, through
torch-fidelity, with weights from a file named in the config). The predicted class always
comes from the domain classifier, which knows the dataset's classes; the logits (for the
Inception Score) from the extractor.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .acceleration import resolve_device
from .assets import require_weights
from .classifier import embed, load_classifier
from .dataset import read_image_set
from .io import read_json, write_npz


@torch.no_grad()
def inception_features(images: np.ndarray, weights_path, device,
                       batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(2048-d pool features float64, 1008 'unbiased' logits) of uint8 images [N, C, H, W]."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                        feature_extractor_weights_path=str(weights_path)).to(device)
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).to(device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # Inception expects RGB
        features, scores = model(x)
        feats.append(features.double().cpu().numpy())
        logits.append(scores.float().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def save_random_inception_weights(path, seed: int = 0) -> None:
    """Randomly initialised Inception weights in the exact file format torch-fidelity loads, for
    exercising the Inception path (tests, CPU benchmarks) where the real file cannot be fetched."""
    from unittest import mock

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.torch.load", return_value={}):
        torch.manual_seed(seed)
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="-")
    torch.save(model.state_dict(), path)


def extract_features(*, features_cfg: dict, classifier_path: str, images_npz: str, prefix: str,
                     device: str, out_npz: str, source_json: str | None = None) -> None:
    """Features, logits, labels and predicted classes of the images under `prefix` in `images_npz`;
    with `source_json` (the prepared source's record), images of another shape or labels out of
    its classes are refused."""
    dev = resolve_device(device)
    info = read_json(source_json) if source_json is not None else {}
    images = read_image_set(images_npz, prefix, info.get("num_classes"), info.get("image_shape"))
    started = time.time()
    classifier = load_classifier(classifier_path, dev)
    features, logits = embed(classifier, images.images, dev)
    predicted = logits.argmax(1).astype(np.int64)
    if features_cfg["extractor"] == "inception":
        weights = require_weights("inception_v3_fid", features_cfg["inception_weights"])
        features, logits = inception_features(images.images, weights, dev)
    print(f"{len(features)} images of {images_npz} ({prefix or 'all'}) -> {features.shape[1]}-d "
          f"{features_cfg['extractor']} features in {time.time() - started:.1f} s", flush=True)
    write_npz(out_npz, features=features, logits=logits, labels=images.labels, predicted=predicted,
              **import_note(images_npz))


def import_note(images_npz: str) -> dict:
    """{'note': ...} of an imported sample set (cbdm.samplesets), which the metrics carry on."""
    with np.load(images_npz, allow_pickle=False) as data:
        return {"note": data["note"]} if "note" in data.files else {}
