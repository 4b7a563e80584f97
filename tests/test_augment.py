"""The augmentation experiment's pieces: the fill labels, the augmented training set, the
classifier recipes, and one row end to end on synthetic images."""
import numpy as np
import pytest
import torch

from cbdm.augment import METRIC, augmented_set, oversampled_fill, run_augmentation
from cbdm.classifier import RECIPE_DEFAULTS, ResNetClassifier, _augment_batch, fit_classifier
from cbdm.io import read_json, write_npz
from cbdm.sample import fill_counts, sample_labels
from cbdm.sources import ImageSet


def test_fill_counts_top_every_class_up_to_the_target():
    assert fill_counts([120, 92, 12], 100).tolist() == [0, 28, 108]
    assert fill_counts([120, 92, 12], 50).tolist() == [0, 0, 48]
    labels = sample_labels("fill", 100, [4, 2, 1], seed=0)
    assert labels.tolist() == [1, 1, 2, 2, 2]


def images(counts, seed=0, size=8):
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    # Class c is a bright square at a class-specific place, so that a classifier can learn it.
    x = rng.randint(0, 40, size=(len(labels), 1, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        x[i, 0, 2 * c:2 * c + 3, 2 * c:2 * c + 3] = 250
    return ImageSet(x, labels)


def test_augmented_set_refuses_a_fill_made_for_another_target():
    train = images([6, 3, 1])
    fill = images(fill_counts([6, 3, 1], 100).tolist())
    both = augmented_set(train, fill, 100, 3)
    assert np.bincount(both.labels).tolist() == [6, 6, 6]
    with pytest.raises(ValueError, match="needs \\[0, 0, 2\\]"):
        augmented_set(train, fill, 50, 3)


def test_the_oversampled_control_fills_with_copies_of_real_images():
    train = images([6, 3, 1])
    fill = oversampled_fill(train, 100, 3)
    assert np.bincount(fill.labels, minlength=3).tolist() == [0, 3, 5]
    real = {(c, x.tobytes()) for x, c in zip(train.images, train.labels)}
    assert all((c, x.tobytes()) in real for x, c in zip(fill.images, fill.labels))


def test_crop_and_flip_keep_shapes_and_change_images():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    recipe = {**RECIPE_DEFAULTS, "random_crop": True, "hflip": True}
    out = _augment_batch(x, recipe, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(_augment_batch(x, RECIPE_DEFAULTS, torch.Generator()), x)  # the default recipe: untouched


def test_the_resnet_recipe_trains_and_returns_features_and_logits():
    model = ResNetClassifier(1, 3)
    features, logits = model(torch.zeros(2, 1, 8, 8))
    assert features.shape == (2, 512) and logits.shape == (2, 3)
    recipe = {"architecture": "resnet18", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
              "schedule": "cosine", "random_crop": True, "hflip": True, "epochs": 1, "batch_size": 8, "seed": 0}
    trained = fit_classifier(images([3, 3, 2]), 3, recipe, "cpu", "test")  # one step
    assert trained.training is False  # returned in eval mode


def test_one_row_end_to_end(tmp_path):
    train, heldout = images([30, 12, 5]), images([10, 10, 10], seed=1)
    write_npz(tmp_path / "train.npz", images=train.images, labels=train.labels)
    write_npz(tmp_path / "source.npz", heldout_images=heldout.images, heldout_labels=heldout.labels)
    fill = images(fill_counts([30, 12, 5], 100).tolist(), seed=2)
    write_npz(tmp_path / "fill.npz", images=fill.images, labels=fill.labels)
    augmentation = {"fill_percent": 100, "seeds": [0, 1],
                    "classifier": {"architecture": "small_cnn", "feature_dim": 8, "epochs": 8, "batch_size": 16,
                                   "lr": 3e-3}}
    for row, samples in (("real_only", []), ("real_oversampled", []), ("ddpm", [str(tmp_path / "fill.npz")])):
        run_augmentation(augmentation=augmentation, row=row, train_npz=str(tmp_path / "train.npz"),
                         source_npz=str(tmp_path / "source.npz"), samples_npz=samples,
                         groups={"head": [0], "tail": [1, 2]}, num_classes=3, device="cpu",
                         out_json=str(tmp_path / f"{row}.json"))
    assert read_json(tmp_path / "real_oversampled.json")["generated_per_class"] == [0, 18, 25]
    out = read_json(tmp_path / "ddpm.json")
    assert out["generated_per_class"] == [0, 18, 25]
    top1 = {(r["seed"], r["scope"]): r for r in out["records"] if r["metric"] == METRIC}
    assert set(top1) == {(s, scope) for s in (0, 1) for scope in ("all", "head", "tail", "class 0", "class 1",
                                                                  "class 2")}
    assert top1[(0, "all")]["n_gen"] == 90 and top1[(0, "all")]["n_ref"] == 30  # training vs test images
    tail = [top1[(0, "class 1")]["value"], top1[(0, "class 2")]["value"]]
    assert top1[(0, "tail")]["value"] == pytest.approx(np.mean(tail))
    assert top1[(0, "all")]["value"] > 0.9  # the synthetic classes are easy to tell apart


def test_each_classifier_seed_trains_on_the_fill_of_its_own_training_seed(tmp_path, monkeypatch):
    """Every classifier seed trained on the fill of the variant's first training seed, and the
    oversampled control on one draw: the sd and the paired intervals over seeds covered the
    classifier's variation only, not the generator's (nor the draw's)."""
    import cbdm.augment

    train, heldout = images([30, 12, 5]), images([10, 10, 10], seed=1)
    write_npz(tmp_path / "train.npz", images=train.images, labels=train.labels)
    write_npz(tmp_path / "source.npz", heldout_images=heldout.images, heldout_labels=heldout.labels)
    fills = []
    for training_seed in (0, 1):
        fill = images(fill_counts([30, 12, 5], 100).tolist(), seed=10 + training_seed)
        fills.append(str(tmp_path / f"fill{training_seed}.npz"))
        write_npz(fills[-1], images=fill.images, labels=fill.labels)
    trained_on = {}

    def seed_records(recipe, seed, images, *args):
        trained_on[(row, seed)] = images.images[len(train.labels):].copy()  # the generated part
        return [{"scope": "all", "seed": seed, "value": 0.0}]

    monkeypatch.setattr(cbdm.augment, "seed_records", seed_records)
    augmentation = {"fill_percent": 100, "seeds": [0, 1, 2], "classifier": {}}
    for row, samples in (("real_oversampled", []), ("ddpm", fills)):
        run_augmentation(augmentation=augmentation, row=row, train_npz=str(tmp_path / "train.npz"),
                         source_npz=str(tmp_path / "source.npz"), samples_npz=samples, groups={"head": [0]},
                         num_classes=3, device="cpu", out_json=str(tmp_path / f"{row}.json"))
    fill_images = [np.load(f)["images"] for f in fills]
    for seed, fill in ((0, 0), (1, 1), (2, 0)):  # classifier seed k: training seed k, cycling
        assert np.array_equal(trained_on[("ddpm", seed)], fill_images[fill])
    oversampled = [trained_on[("real_oversampled", seed)] for seed in (0, 1)]
    assert not np.array_equal(*oversampled)
    assert read_json(tmp_path / "ddpm.json")["fills"] == {"0": fills[0], "1": fills[1], "2": fills[0]}
