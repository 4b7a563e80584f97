import numpy as np
import pytest
import torch

from cbdm.cas import cas_records
from cbdm.dataset import prepare_source, read_image_set
from cbdm.memorization import memorization_records
from cbdm.sources import ImageSet


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    prepare_source({"source": "sklearn_digits", "heldout_per_class": 30, "split_seed": 0}, d / "s.npz", d / "s.json")
    return read_image_set(d / "s.npz", "pool_"), read_image_set(d / "s.npz", "heldout_")


def by_scope(records, metric):
    return {r["scope"]: r for r in records if r["metric"] == metric}


def test_copies_of_training_images_are_flagged_and_new_images_are_not(digits):
    pool, heldout = digits
    train = pool.subset(np.arange(0, len(pool.labels), 3))
    copies = train.subset(np.arange(len(train.labels)))
    flagged = by_scope(memorization_records({"relative_threshold": 0.5}, copies, train, heldout, 10), "near_copy_share")
    assert all(r["value"] == 1.0 for r in flagged.values())
    fresh = pool.subset(np.setdiff1d(np.arange(len(pool.labels)), np.arange(0, len(pool.labels), 3)))
    unseen = by_scope(memorization_records({"relative_threshold": 0.5}, fresh, train, heldout, 10), "near_copy_share")
    assert max(r["value"] for r in unseen.values()) < 0.2
    baseline = by_scope(memorization_records({"relative_threshold": 0.5}, fresh, train, heldout, 10),
                        "near_copy_share_heldout")
    assert all(r["n_gen"] == 30 for r in baseline.values())


def test_a_class_without_samples_is_reported_not_computed(digits):
    pool, heldout = digits
    no_nines = pool.subset(np.where(pool.labels != 9)[0])
    records = by_scope(memorization_records({"relative_threshold": 0.5}, no_nines, pool, heldout, 10),
                       "near_copy_share")
    assert records["class 9"]["value"] is None and "0 generated" in records["class 9"]["note"]


CLASSIFIER = {"feature_dim": 16, "epochs": 15, "batch_size": 64, "lr": 3e-3, "seed": 0}


def test_cas_is_high_for_real_images_and_chance_for_shuffled_labels(digits):
    pool, heldout = digits
    good = by_scope(cas_records(CLASSIFIER, pool, heldout, {"head": [0, 1, 2, 3, 4]}, 10, torch.device("cpu")), "cas")
    assert good["all"]["value"] > 0.85 and good["head"]["n_ref"] == 150
    shuffled = ImageSet(pool.images, np.random.RandomState(0).permutation(pool.labels))
    bad = by_scope(cas_records(CLASSIFIER, shuffled, heldout, {}, 10, torch.device("cpu")), "cas")
    assert bad["all"]["value"] < 0.3
