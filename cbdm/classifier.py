"""The domain classifier that stands in for Inception where no Inception weights exist.

Trained on balanced real images (the training pool, not the long-tailed subset), it gives
every image a feature vector (its penultimate layer, before the non-linearity) for FID, KID
and precision/recall, and a predicted class for the accuracy and confusion of samples.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .acceleration import resolve_device
from .dataset import images_to_model_range, read_image_set
from .io import progress_bar, rebuild, save_torch, write_json
from .modelfile import load_payload
from .sources import ImageSet

CLASSIFIER_FORMAT = "cbdm.classifier/1"


class FeatureClassifier(nn.Module):
    """The small CNN of the domain classifier: a feature layer and a linear head on it."""

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
def embed(model: nn.Module, images: np.ndarray, device,
          batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(features float64 [N, D], logits float32 [N, C]) of uint8 images [N, C, H, W]."""
    model.eval()
    return embed_batches(lambda x: model(images_to_model_range(x)), images, device, batch_size)


def embed_batches(forward, images: np.ndarray, device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(features float64, logits float32) of uint8 images [N, C, H, W], `forward` taking one
    uint8 batch on `device` to its (features, logits)."""
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        features, scores = forward(torch.from_numpy(images[start:start + batch_size]).to(device))
        feats.append(features.double().cpu().numpy())
        logits.append(scores.float().cpu().numpy())
    return np.concatenate(feats), np.concatenate(logits)


class ResNetClassifier(nn.Module):
    """torchvision's ResNet-18 adapted to 32x32 inputs as is usual for CIFAR: a 3x3 stride-1 stem
    and no max-pool (He et al. 2016; the CIFAR variant of kuangliu/pytorch-cifar)."""

    def __init__(self, image_channels: int, num_classes: int):
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(num_classes=num_classes)
        net.conv1 = nn.Conv2d(image_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        self.head, net.fc = net.fc, nn.Identity()
        self.body = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features, logits) of images in [-1, 1]."""
        features = self.body(x)
        return features, self.head(features)


# What a recipe leaves out is what the domain classifier has always used.
RECIPE_DEFAULTS = {"architecture": "small_cnn", "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0,
                   "schedule": "constant", "random_crop": False, "hflip": False}


# The `features` keys a domain classifier's weights depend on, recorded in its file, so that a
# features job refuses one trained with another recipe. `threads` moves its weights too, but the
# features jobs are not given it: a classifier of the same recipe on another thread count is taken.
RECIPE_KEYS = ("feature_dim", "epochs", "batch_size", "lr", "seed")


def classifier_recipe(features_cfg: dict) -> dict:
    """The RECIPE_KEYS of a `features` section: what a classifier file records it was trained with."""
    return {key: features_cfg[key] for key in RECIPE_KEYS}


def build_classifier(recipe: dict, image_channels: int, num_classes: int) -> nn.Module:
    """The untrained network of a recipe's `architecture`."""
    if recipe["architecture"] == "resnet18":
        return ResNetClassifier(image_channels, num_classes)
    if recipe["architecture"] == "small_cnn":
        return FeatureClassifier(image_channels, num_classes, recipe["feature_dim"])
    raise ValueError(f"unknown classifier architecture {recipe['architecture']!r}; use 'small_cnn' or 'resnet18'")


def _optimizer(model: nn.Module, recipe: dict, steps: int):
    """(optimizer, scheduler stepped once per batch) of a recipe."""
    if recipe["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                    weight_decay=recipe["weight_decay"])
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if recipe["schedule"] == "cosine"
                 else torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    return optimizer, scheduler


def _augment_batch(x: torch.Tensor, recipe: dict, generator: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding (in model range: -1) and horizontal flip, per image."""
    if recipe["random_crop"]:
        size = x.shape[-1]
        padded = F.pad(x, (4, 4, 4, 4), value=-1.0)
        dy, dx = torch.randint(0, 9, (2, len(x)), generator=generator).tolist()
        x = torch.stack([padded[i, :, a:a + size, b:b + size] for i, (a, b) in enumerate(zip(dy, dx))])
    if recipe["hflip"]:
        flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


def fit_classifier(images: ImageSet, num_classes: int, cfg: dict, device, desc: str) -> nn.Module:
    """Train a classifier on uint8 images with cross-entropy for `cfg` epochs; `cfg` is a recipe
    (RECIPE_DEFAULTS plus seed, feature_dim, epochs, batch_size, lr)."""
    recipe = {**RECIPE_DEFAULTS, **cfg}
    torch.manual_seed(recipe["seed"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    model = build_classifier(recipe, images.images.shape[1], num_classes).to(device)
    batches = -(-len(images.labels) // recipe["batch_size"])
    optimizer, scheduler = _optimizer(model, recipe, recipe["epochs"] * batches)
    x_all = images_to_model_range(torch.from_numpy(images.images)).to(device)
    y_all = torch.from_numpy(images.labels).to(device)
    for _ in progress_bar(range(recipe["epochs"]), desc=desc):
        model.train()
        order = torch.randperm(len(y_all), generator=generator).to(device)
        for start in range(0, len(order), recipe["batch_size"]):
            idx = order[start:start + recipe["batch_size"]]
            loss = F.cross_entropy(model(_augment_batch(x_all[idx], recipe, generator))[1], y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def per_class_accuracy(model: nn.Module, test: ImageSet, num_classes: int, device) -> list[float | None]:
    """Accuracy on each class's test images (None for a class without test images)."""
    predicted = embed(model, test.images, device)[1].argmax(1)
    return [float((predicted[test.labels == c] == c).mean()) if (test.labels == c).any() else None
            for c in range(num_classes)]


def train_classifier(features_cfg: dict, *, source_npz: str, num_classes: int, device: str,
                     out_model: str, out_report: str, source_origin: dict | None = None) -> None:
    """Train the domain classifier on a source's pool, standardise its features there, and
    write it with its held-out accuracy per class; a source of other settings than
    `source_origin` (cbdm.dataset.data_origin) is refused, and the file records it as the
    source it was trained on, which the features jobs check (cbdm.features.check_classifier)."""
    dev = resolve_device(device)
    pool = read_image_set(source_npz, "pool_", origin=source_origin)
    heldout = read_image_set(source_npz, "heldout_", origin=source_origin)
    print(f"classifier: {len(pool.labels)} balanced training images, class counts "
          f"{np.bincount(pool.labels, minlength=num_classes).tolist()}", flush=True)
    model = fit_classifier(pool, num_classes, features_cfg, dev, "classifier")
    pool_features, _ = embed(model, pool.images, dev)
    model.feature_mean.copy_(torch.from_numpy(pool_features.mean(0)))
    model.feature_std.copy_(torch.from_numpy(pool_features.std(0)).clamp_min(1e-6))
    per_class = per_class_accuracy(model, heldout, num_classes, dev)
    accuracy = float(np.average(per_class, weights=np.bincount(heldout.labels, minlength=num_classes)))
    print(f"held-out accuracy {accuracy:.4f} on {len(heldout.labels)} images; worst class "
          f"{int(np.argmin(per_class))} at {min(per_class):.3f}", flush=True)
    save_torch({"format": CLASSIFIER_FORMAT, "hparams": model.hparams, "state_dict": model.state_dict(),
                "recipe": classifier_recipe(features_cfg), "source": source_origin}, out_model)
    write_json(out_report, {"heldout_accuracy": accuracy, "heldout_n": int(len(heldout.labels)),
                            "per_class_accuracy": per_class, "epochs": features_cfg["epochs"],
                            "feature_dim": features_cfg["feature_dim"]})


def load_classifier(path, device) -> FeatureClassifier:
    """A classifier file written by `train_classifier`, in eval mode on `device`; its `recipe`
    and `source` attributes are the recipe and the source's data_origin the file records (None
    in a file written before files recorded them)."""
    payload = load_payload(path, CLASSIFIER_FORMAT, rebuild(path))
    model = FeatureClassifier(**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    model.recipe = payload.get("recipe")
    model.source = payload.get("source")
    return model.to(device).eval()
