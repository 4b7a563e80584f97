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
from unittest import mock

import numpy as np
import torch
from torch.nn import functional as F

from .acceleration import resolve_device
from .assets import require_weights
from .classifier import classifier_recipe, embed, embed_batches, load_classifier
from .dataset import read_image_set, read_source_record
from .fingerprint import check_recorded, file_fingerprint, origin_array
from .io import write_npz

INCEPTION_SIZE = 299


def pytorch_fid_input(images: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's (and the CBDM reference's) Inception input: float in [0, 1], bilinear resize
    to 299 with align_corners=False, scaled to [-1, 1]."""
    x = F.interpolate(images.float() / 255, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                      align_corners=False)
    return 2 * x - 1


def run_on_prepared(model, images: torch.Tensor, prepared: torch.Tensor):
    """torch-fidelity's Inception `model` on an input already resized and scaled to [-1, 1].

    Its forward takes uint8 only and resizes itself (TF-1 bilinear), then maps [0, 255] to
    [-1, 1] by (x - 128) / 128; swapping the resize for one that returns 128 * prepared + 128 makes
    the network see `prepared` exactly (scaling by powers of two is exact in floating point)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    def resize(x, size, align_corners):
        return prepared.to(x.dtype) * 128 + 128

    with mock.patch.object(tf_inception, "interpolate_bilinear_2d_like_tensorflow1x", resize):
        return model(images)


@torch.no_grad()
def inception_features(images: np.ndarray, weights_path, device, preprocessing: str = "torch_fidelity",
                       batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(2048-d pool features float64, 1008 'unbiased' logits) of uint8 images [N, C, H, W].
    `preprocessing`: 'torch_fidelity' (uint8 through its TF-1 resize) or 'pytorch_fid'
    (`pytorch_fid_input`, as the CBDM reference and pytorch-fid)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if preprocessing not in ("torch_fidelity", "pytorch_fid"):
        raise ValueError(f"features.inception_preprocessing {preprocessing!r}: use 'torch_fidelity' or 'pytorch_fid'")
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                        feature_extractor_weights_path=str(weights_path)).to(device)

    def forward(x):
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # Inception expects RGB
        return run_on_prepared(model, x, pytorch_fid_input(x)) if preprocessing == "pytorch_fid" else model(x)

    return embed_batches(forward, images, device, batch_size)


def save_random_inception_weights(path, seed: int = 0) -> None:
    """Randomly initialised Inception weights in the exact file format torch-fidelity loads, for
    exercising the Inception path (tests, CPU benchmarks) where the real file cannot be fetched."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.torch.load", return_value={}):
        torch.manual_seed(seed)
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="-")
    torch.save(model.state_dict(), path)


def extract_features(*, features_cfg: dict, classifier_path: str, images_npz: str, prefix: str,
                     device: str, out_npz: str, source_json: str | None = None, origin: dict | None = None,
                     reference_origin: dict | None = None, source_origin: dict | None = None) -> None:
    """Features, logits, labels and predicted classes of the images under `prefix` in `images_npz`;
    with `source_json` (the prepared source's record), images of another shape or labels out of
    its classes are refused; with `origin` (what the images file records: a sample set's cell, or
    the data_origin of the prepared source or training set a reference set's images come from),
    images made for another cell or with other data settings are refused. The features file
    records `reference_origin` (which reference set of which data the images are,
    cbdm.dataset.reference_origin) where given, else `origin`, for the jobs that read it. With
    `source_origin` (the data_origin of the prepared source the classifier must have been trained
    on), a classifier trained on another source split is refused (check_classifier)."""
    dev = resolve_device(device)
    info = read_source_record(source_json, source_origin) if source_json is not None else {}
    images = read_image_set(images_npz, prefix, info.get("num_classes"), info.get("image_shape"), origin)
    started = time.time()
    classifier = load_classifier(classifier_path, dev)
    check_classifier(classifier, classifier_path, info, features_cfg, source_origin)
    features, logits = embed(classifier, images.images, dev)
    predicted = logits.argmax(1).astype(np.int64)
    if features_cfg["extractor"] == "inception":
        weights = require_weights("inception_v3_fid", features_cfg["inception_weights"])
        features, logits = inception_features(images.images, weights, dev,
                                              features_cfg["inception_preprocessing"])
    print(f"{len(features)} images of {images_npz} ({prefix or 'all'}) -> {features.shape[1]}-d "
          f"{features_cfg['extractor']} features in {time.time() - started:.1f} s", flush=True)
    write_npz(out_npz, features=features, logits=logits, labels=images.labels, predicted=predicted,
              extractor=np.asarray(extractor_label(features_cfg, classifier_path)), **import_note(images_npz),
              **origin_array(reference_origin if reference_origin is not None else origin))


def check_classifier(classifier, path: str, info: dict, features_cfg: dict,
                     source_origin: dict | None = None) -> None:
    """InputError unless the loaded classifier file (load_classifier) fits the dataset (classes,
    channels), where it is the extractor the config's feature size, the config's recipe where the
    file records one, and the prepared source of `source_origin` (cbdm.dataset.data_origin) where
    given, a file recording none (an older cbdm's) refused then: one trained for another dataset,
    config or source split (copied, or kept under --rerun-triggers mtime) would give features and
    predictions of another task, recipe or data than the leaderboard's card names, without a word."""
    recipe, hparams = classifier.recipe, classifier.hparams
    wanted = classifier_recipe(features_cfg) if recipe is not None else {}
    recorded = {key: recipe.get(key) for key in wanted}
    if source_origin is not None:  # one check, so that the refusal names every key that differs
        wanted, recorded = {**wanted, **source_origin}, {**recorded, **(classifier.source or {})}
    check_recorded(path, recorded, wanted, holds="was trained with",
                   needs="this config's features and data settings have",
                   cause="it was copied from another suite or written by an older cbdm, or the features or data "
                         "settings changed while Snakemake did not retrain it")
    wanted = {"num_classes": info.get("num_classes"),
              "image_channels": info["image_shape"][0] if info.get("image_shape") else None,
              "feature_dim": features_cfg["feature_dim"] if features_cfg["extractor"] == "classifier" else None}
    wanted = {k: v for k, v in wanted.items() if v is not None}
    check_recorded(path, {k: hparams[k] for k in wanted}, wanted, holds="is a classifier with",
                   needs="this dataset and config need", cause="it was trained for another dataset or config")


# Between the features part of an Inception label and the classifier that predicts its classes
# (cbdm.refstats compares only the features part).
CLASSES_BY = "; classes by "


def extractor_label(features_cfg: dict, classifier_path: str) -> str:
    """What made a features file's features and predicted classes, recorded in it so that the
    metrics refuse to compare features of two extractors and the leaderboard gives them separate
    cards (a classifier is named by its file's digest: two trainings differ; Inception by its
    preprocessing, its weights being the locked file, require_weights, and by the classifier,
    which still predicts the classes that acc and the leakage diagnostics count)."""
    classifier = f"classifier {file_fingerprint(classifier_path)}"
    if features_cfg["extractor"] == "inception":
        return f"inception {features_cfg['inception_preprocessing']} preprocessing{CLASSES_BY}{classifier}"
    return classifier


def import_note(images_npz: str) -> dict:
    """{'note': ..., 'preprocessing': ...} of an imported sample set (cbdm.samplesets), which the
    metrics carry on: the note into the records, the preprocessing into the cell's measurement."""
    with np.load(images_npz, allow_pickle=False) as data:
        return {key: data[key] for key in ("note", "preprocessing") if key in data.files}
