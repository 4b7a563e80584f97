import numpy as np
import pytest

from cbdm.sample import image_seeds, sample_labels


def test_exact_labels_give_every_class_the_same_count():
    labels = sample_labels("exact", 30, [50, 20, 5], seed=0)
    assert np.bincount(labels).tolist() == [10, 10, 10]
    with pytest.raises(ValueError, match="not a multiple of the 3 classes"):
        sample_labels("exact", 31, [50, 20, 5], seed=0)


def test_train_prior_labels_follow_the_training_counts_exactly():
    labels = sample_labels("train_prior", 100, [120, 92, 71, 55, 43, 33, 25, 20, 15, 12], seed=0)
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == 100
    expected = np.array([120, 92, 71, 55, 43, 33, 25, 20, 15, 12]) * 100 / 486
    assert np.all(np.abs(counts - expected) < 1)


def test_uniform_random_labels_are_seeded():
    a = sample_labels("uniform_random", 5000, [1] * 10, seed=3)
    assert np.array_equal(a, sample_labels("uniform_random", 5000, [1] * 10, seed=3))
    assert not np.array_equal(a, sample_labels("uniform_random", 5000, [1] * 10, seed=4))
    assert np.bincount(a, minlength=10).min() > 400


def test_image_seeds_do_not_overlap_between_sampling_seeds():
    assert set(image_seeds(0, 1000)).isdisjoint(image_seeds(1, 1000))
    with pytest.raises(ValueError, match="exceed"):
        image_seeds(0, 2_000_000)
