"""The label-entropy metric: entropy (bits) of the domain classifier's predicted labels among one
generated class's samples, averaged over a scope's classes."""
import numpy as np
import pytest

from cbdm.evaluate import label_entropy, scope_records


def test_label_entropy_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert label_entropy(labels, np.array([3, 3, 3, 3, 1, 1, 1, 1])) == 0.0  # one label each, right or wrong
    # class 0: two labels half and half (1 bit); class 1: four labels (2 bits) -> mean 1.5
    assert label_entropy(labels, np.array([0, 0, 2, 2, 0, 1, 2, 3])) == pytest.approx(1.5)
    assert label_entropy(np.array([], dtype=int), np.array([], dtype=int)) is None


def test_label_entropy_is_a_record_of_every_scope():
    rng = np.random.RandomState(0)
    gen = {"features": rng.randn(40, 3), "labels": np.repeat([0, 1], 20), "predicted": np.repeat([0, 1, 1, 1], 10),
           "logits": rng.randn(40, 2)}
    ref = {"features": rng.randn(40, 3), "labels": np.repeat([0, 1], 20), "predicted": np.repeat([0, 1], 20),
           "logits": rng.randn(40, 2)}
    cfg = {"min_samples": 5, "fid_small_n": "flag", "kid_subsets": 2, "kid_subset_size": 10, "seed": 0,
           "pr_neighborhood": 3, "kid_bootstrap": 0, "fid_infinity": False}
    records = {r["metric"]: r for r in scope_records("all", gen, ref, {}, cfg)}
    # class 0: labels 0 and 1 half and half (1 bit); class 1: all 1 (0 bits)
    assert records["label_entropy"]["value"] == pytest.approx(0.5)
    assert "bits" in records["label_entropy"]["note"]
