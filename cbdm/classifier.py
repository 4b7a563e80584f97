"""The domain classifier that stands in for Inception where no Inception weights exist.

Trained on balanced real images (the training pool, not the long-tailed subset), it gives
every image a feature vector (its penultimate layer, before the non-linearity) for FID, KID
and precision/recall, and a predicted class for the accuracy and confusion of samples.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .dataset import read_image_set
from .io import atomic_path, write_json
from .modelfile import load_payload
from .train import images_to_model_range, resolve_device

CLASSIFIER_FORMAT = "cbdm.classifier/1"


class FeatureClassifier(nn.Module):
    def __init__(self, image_channels: int, num_classes: int, feature_dim: int, width: int = 32):
        super().__init__()
        self.hparams = dict(image_channels=image_channels, num_classes=num_classes,
                            feature_dim=feature_dim, width=width)
        self.body = nn.Sequential(
            nn.Conv2d(image_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, feature_dim),
        )
        self.head = nn.Linear(feature_dim, num_classes)
        # Set after training from the training images, so that features have mean 0 and sd 1
        # per dimension there: KID's kernel (x.y / d + 1)^3 then sees O(1) inner products,
        # as it does with Inception features.
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(standardised features, logits) of images in [-1, 1]."""
        features = self.body(x)
        return (features - self.feature_mean) / self.feature_std, self.head(F.relu(features))


@torch.no_grad()
def embed(model: FeatureClassifier, images: np.ndarray, device, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 [N, D], logits float32 [N, C]) of uint8 images [N, C, H, W]."""
    model.eval()
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = images_to_model_range(torch.from_numpy(images[start:start + batch_size]).to(device))
        f, l = model(x)
        feats.append(f.double().cpu().numpy())
        logits.append(l.float().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


def train_classifier(features_cfg: dict, *, source_npz: str, num_classes: int, device: str,
                     out_model: str, out_report: str) -> None:
    dev = resolve_device(device)
    pool, heldout = read_image_set(source_npz, "pool_"), read_image_set(source_npz, "heldout_")
    torch.manual_seed(features_cfg["seed"])
    generator = torch.Generator().manual_seed(features_cfg["seed"])
    model = FeatureClassifier(pool.images.shape[1], num_classes, features_cfg["feature_dim"]).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=features_cfg["lr"])
    x_all = images_to_model_range(torch.from_numpy(pool.images)).to(dev)
    y_all = torch.from_numpy(pool.labels).to(dev)
    print(f"classifier: {len(y_all)} balanced training images, class counts "
          f"{np.bincount(pool.labels, minlength=num_classes).tolist()}", flush=True)
    for epoch in tqdm(range(features_cfg["epochs"]), desc="classifier", file=sys.stderr, mininterval=10, ncols=100):
        model.train()
        order = torch.randperm(len(y_all), generator=generator).to(dev)
        for start in range(0, len(order), features_cfg["batch_size"]):
            idx = order[start:start + features_cfg["batch_size"]]
            loss = F.cross_entropy(model(x_all[idx])[1], y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    pool_features, _ = embed(model, pool.images, dev)
    model.feature_mean.copy_(torch.from_numpy(pool_features.mean(0)))
    model.feature_std.copy_(torch.from_numpy(pool_features.std(0)).clamp_min(1e-6))
    _, logits = embed(model, heldout.images, dev)
    predicted = logits.argmax(1)
    per_class = [float((predicted[heldout.labels == c] == c).mean()) for c in range(num_classes)]
    accuracy = float((predicted == heldout.labels).mean())
    print(f"held-out accuracy {accuracy:.4f} on {len(predicted)} images; worst class "
          f"{int(np.argmin(per_class))} at {min(per_class):.3f}", flush=True)
    with atomic_path(out_model) as tmp:
        torch.save({"format": CLASSIFIER_FORMAT, "hparams": model.hparams,
                    "state_dict": model.state_dict()}, tmp)
    write_json(out_report, {"heldout_accuracy": accuracy, "heldout_n": int(len(predicted)),
                            "per_class_accuracy": per_class, "epochs": features_cfg["epochs"],
                            "feature_dim": features_cfg["feature_dim"]})


def load_classifier(path, device) -> FeatureClassifier:
    payload = load_payload(path, CLASSIFIER_FORMAT, "delete it and re-run the classifier rule")
    model = FeatureClassifier(**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()
