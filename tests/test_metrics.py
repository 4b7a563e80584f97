"""Our metrics against clean-fid and torch-fidelity on the same feature arrays, and known cases."""
import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from cbdm.metrics import (
    TooFewSamples,
    confusion_matrix,
    frechet_distance,
    frechet_distance_infinity,
    inception_score,
    kernel_distance,
    mean_and_covariance,
    precision_recall,
)


@pytest.fixture
def features():
    rng = np.random.RandomState(0)
    a = rng.randn(400, 16) @ rng.randn(16, 16) * 0.5 + 0.2
    b = rng.randn(300, 16) @ rng.randn(16, 16) * 0.6 - 0.1
    return a, b


def test_fid_matches_torch_fidelity_and_clean_fid(features):
    a, b = features
    ours = frechet_distance(a, b)
    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    fidelity = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    clean = cleanfid.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert ours == pytest.approx(fidelity, rel=1e-3)
    assert ours == pytest.approx(clean, rel=1e-3)


def test_fid_known_cases():
    rng = np.random.RandomState(1)
    a = rng.randn(500, 4)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # A shifted copy: the covariance terms cancel and FID is ||shift||^2.
    assert frechet_distance(a, a + np.array([1.0, 2.0, 0.0, 0.0])) == pytest.approx(5.0, rel=1e-9)
    # A scaled copy: Tr(S + c^2 S - 2 c S) = (1 - c)^2 Tr(S).
    s = mean_and_covariance(a)[1].numpy()
    assert np.allclose(s, np.cov(a, rowvar=False))
    centred = a - a.mean(0)
    assert frechet_distance(centred, 3 * centred) == pytest.approx(4 * np.trace(s), rel=1e-9)


def test_kid_matches_torch_fidelity_subset_for_subset(features):
    a, b = features
    mean, sd, m = kernel_distance(a, b, subsets=20, subset_size=100, seed=7)
    ref = kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), kid_subsets=20,
                                 kid_subset_size=100, rng_seed=7, verbose=False,
                                 kid_kernel="poly", kid_kernel_poly_degree=3,
                                 kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    assert m == 100
    assert mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-3)
    assert sd == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-3)


def test_kid_matches_clean_fid_on_whole_sets(features):
    a, b = features
    a, b = a[:250], b[:250]
    # With the subset as large as both sets every subset is the whole set: no randomness left.
    mean, sd, m = kernel_distance(a, b, subsets=3, subset_size=1000, seed=0)
    assert m == 250 and sd == pytest.approx(0.0, abs=1e-12)
    assert mean == pytest.approx(cleanfid.kernel_distance(a, b, num_subsets=1, max_subset_size=1000), rel=1e-3)


def test_kid_separates_same_from_shifted_distributions():
    a = np.random.RandomState(2).randn(2000, 8)
    same, _, _ = kernel_distance(a[:1000], a[1000:], subsets=10, subset_size=500, seed=0)
    shifted, _, _ = kernel_distance(a[:1000], a[1000:] + 0.5, subsets=10, subset_size=500, seed=0)
    assert shifted > 0.3
    assert abs(same) < 0.1 * shifted


def test_precision_recall_match_torch_fidelity(features):
    a, b = features
    ours = precision_recall(a, b, k=3)
    ref = prc_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), prc_neighborhood=3,
                                 prc_batch_size=10000, save_cpu_ram=False, verbose=False)
    assert ours[0] == pytest.approx(ref["precision"], rel=1e-3)
    assert ours[1] == pytest.approx(ref["recall"], rel=1e-3)


def test_precision_recall_known_cases():
    rng = np.random.RandomState(3)
    real = rng.randn(300, 2)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(far, real, k=3) == (0.0, 0.0)
    # Generated samples collapsed onto one real point: precise, but recall only of that point's ball.
    collapsed = np.repeat(real[:1], 50, axis=0) + 1e-6 * rng.randn(50, 2)
    precision, recall = precision_recall(collapsed, real, k=3)
    assert precision == 1.0 and recall < 0.05


def test_small_sets_are_refused_with_the_reason():
    with pytest.raises(TooFewSamples, match="k=3 need at least 30 samples on each side"):
        precision_recall(np.zeros((29, 2)), np.zeros((100, 2)), k=3)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance(np.zeros((1, 2)), np.zeros((10, 2)), subsets=1, subset_size=10, seed=0)


def test_confusion_matrix_counts():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 0, 2, 2])
    assert confusion_matrix(labels, predicted, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_inception_score_matches_torch_fidelity():
    logits = np.random.RandomState(4).randn(1000, 10) * 3
    ours = inception_score(logits, splits=10, seed=2020)
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    assert ours[0] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert ours[1] == pytest.approx(ref["inception_score_std"], rel=1e-6)


def test_inception_score_known_cases():
    confident = np.eye(10)[np.arange(1000) % 10] * 50  # sure of each image, all classes equally often
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-3)
    undecided = np.zeros((1000, 10))
    assert inception_score(undecided, splits=5)[0] == pytest.approx(1.0)


def test_fid_infinity_removes_the_small_sample_bias():
    rng = np.random.RandomState(5)
    ref = rng.randn(20000, 8)
    gen = rng.randn(2000, 8)  # same distribution: the true distance is 0
    estimate, sizes = frechet_distance_infinity(gen, ref, seed=0)
    assert sizes[0] == 400 and sizes[-1] == 2000
    assert abs(estimate) < frechet_distance(gen, ref) / 3


def test_fid_against_a_statistics_file_runs_on_the_gpu_the_features_are_on(features):
    # `cbdm evaluate --ref-stats` on a GPU: the samples' statistics are on the device, the file's are
    # numpy arrays. On a fake GPU (no values), running through to the final float() (which needs
    # values, so the fake device stops there) means every operation before it found one device.
    from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

    from cbdm.refstats import fid_from_stats

    a, b = features
    stats = {"mu": b.mean(axis=0), "sigma": np.cov(b, rowvar=False)}
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(DataDependentOutputException):
        fid_from_stats(a, stats, "all", device="cuda")
    assert fid_from_stats(a, stats, "all") == pytest.approx(frechet_distance(a, b), rel=1e-9)  # on the CPU as before


def test_fid_of_a_set_with_itself_is_never_negative():
    """With n at or below the dimension (a flagged small-n FID) the round-off of the two traces
    gave -1.5e-06 for a set against itself, printed as a negative FID."""
    x = np.random.RandomState(0).randn(30, 64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-5) and frechet_distance(x, x) >= 0.0
