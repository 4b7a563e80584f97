import numpy as np
import pytest

from cbdm.dataset import longtail_counts, select_longtail, split_heldout
from cbdm.sources import DataError


def test_cifar_lt_counts_match_the_reference_totals():
    c10 = longtail_counts(10, 5000.0, 100, "exponential")
    assert c10 == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(c10) == 12406
    assert sum(longtail_counts(100, 500.0, 100, "exponential")) == 10847


def test_exponential_profile_endpoints_and_monotonicity():
    counts = longtail_counts(10, 120, 10, "exponential")
    assert counts[0] == 120 and counts[-1] == 12
    assert all(a >= b for a, b in zip(counts, counts[1:]))


def test_imbalance_factor_one_is_balanced():
    assert longtail_counts(5, 40, 1, "exponential") == [40] * 5


def test_step_profile_halves():
    assert longtail_counts(10, 100, 10, "step") == [100] * 5 + [10] * 5
    assert longtail_counts(3, 50, 5, "step") == [50, 10, 10]


def test_imbalance_factor_below_one_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="n_max / n_min"):
        longtail_counts(10, 100, 0.01, "exponential")


def test_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="exponential"):
        longtail_counts(10, 100, 10, "linear")


def reference_selection(labels, counts, seed):
    """The LDAM-DRW rule as the reference code runs it: global numpy seed, shuffle in place."""
    np.random.seed(seed)
    out = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        out.append(idx[:n])
    return np.concatenate(out)


def test_selection_equals_the_reference_rule():
    labels = np.random.RandomState(3).randint(0, 10, size=5000)
    counts = longtail_counts(10, 300, 50, "exponential")
    ours = select_longtail(labels, counts, seed=0)
    assert np.array_equal(ours, reference_selection(labels, counts, 0))
    assert np.bincount(labels[ours], minlength=10).tolist() == counts


def test_selection_refuses_counts_above_the_pool():
    labels = np.repeat(np.arange(3), [10, 5, 5])
    with pytest.raises(DataError, match="lower longtail.n_max"):
        select_longtail(labels, [8, 6, 1], seed=0)


def test_heldout_split_is_disjoint_complete_and_balanced():
    labels = np.repeat(np.arange(4), [20, 15, 12, 30])
    pool, heldout = split_heldout(labels, per_class=5, seed=1)
    assert np.intersect1d(pool, heldout).size == 0
    assert sorted(np.concatenate([pool, heldout]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[heldout]).tolist() == [5, 5, 5, 5]
    again, _ = split_heldout(labels, per_class=5, seed=1)
    assert np.array_equal(pool, again)


def test_heldout_split_refuses_to_empty_a_class():
    with pytest.raises(DataError, match="heldout_per_class"):
        split_heldout(np.array([0, 0, 1]), per_class=1, seed=0)
