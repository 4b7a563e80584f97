"""Sample-quality metrics on feature arrays: pure functions of numpy arrays.

Conventions follow torch-fidelity and clean-fid so that the numbers are interchangeable
(tests compare them on the same arrays): covariances with the unbiased (n - 1) normaliser;
KID as the unbiased MMD^2 with the kernel (x.y / d + 1)^3 averaged over random subsets, the
subsets drawn in torch-fidelity's order from RandomState(seed); improved precision and recall
(Kynkaanniemi et al. 2019) with the k-th nearest neighbour radius, the point itself excluded.
"""
from __future__ import annotations

import numpy as np


def mean_and_covariance(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum as S1 S2 and no
    complex round-off."""
    evals, evecs = np.linalg.eigh(sigma1)
    root1 = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sqrt(np.clip(inner, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature arrays [N, D] and [M, D]."""
    return frechet_distance_from_stats(*mean_and_covariance(features_a), *mean_and_covariance(features_b))


def frechet_distance_infinity(features_gen: np.ndarray, features_ref: np.ndarray, *, seed: int,
                              points: int = 5) -> tuple[float, list[int]]:
    """FD-infinity (Chong & Forsyth 2020): FID is about linear in 1/n for n generated samples;
    fit it over `points` subset sizes between n/5 and n and extrapolate to 1/n = 0.
    Returns (estimate, the subset sizes used)."""
    n, dim = len(features_gen), features_gen.shape[1]
    sizes = sorted({int(s) for s in np.linspace(max(n // 5, dim + 2), n, points)})
    if len(sizes) < 2:
        raise ValueError(f"FD-infinity needs generated sets larger than the feature dimension {dim} + 2")
    rng = np.random.RandomState(seed)
    ref_stats = mean_and_covariance(features_ref)
    fids = [frechet_distance_from_stats(*mean_and_covariance(features_gen[rng.choice(n, size, replace=False)]),
                                        *ref_stats) for size in sizes]
    slope, intercept = np.polyfit(1.0 / np.array(sizes), fids, 1)
    return float(intercept), sizes


def inception_score(logits: np.ndarray, splits: int, seed: int = 2020) -> tuple[float, float]:
    """IS: exp(E_x KL(p(y|x) || p(y))) per split of the shuffled samples; (mean, sd) over splits,
    as torch-fidelity computes it."""
    logits = np.asarray(logits, dtype=np.float64)[np.random.RandomState(seed).permutation(len(logits))]
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    scores = []
    for i in range(splits):
        chunk = log_p[i * len(log_p) // splits:(i + 1) * len(log_p) // splits]
        log_q = np.log(np.exp(chunk).mean(axis=0, keepdims=True))
        scores.append(np.exp((np.exp(chunk) * (chunk - log_q)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m = len(x)
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, *, subsets: int,
                    subset_size: int, seed: int) -> tuple[float, float, int]:
    """KID: (mean, sd over subsets, subset size used). The subset size is capped at the
    smaller set's size."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(a)} and {len(b)}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std()), m


def _pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return np.sqrt(np.clip(sq, 0, None))


def nearest_neighbour_distances(points: np.ndarray, reference: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance from each point to its nearest neighbour in `reference`."""
    return np.concatenate([_pairwise_distances(points[s:s + chunk], reference).min(axis=1)
                           for s in range(0, len(points), chunk)])


def knn_radii(features: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """Distance of every point to its k-th nearest neighbour in the same set (itself excluded)."""
    radii = np.empty(len(features))
    for start in range(0, len(features), chunk):
        d = _pairwise_distances(features[start:start + chunk], features)
        radii[start:start + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 4096) -> float:
    """Share of `points` inside at least one ball (centres, radii)."""
    inside = np.empty(len(points), dtype=bool)
    for start in range(0, len(points), chunk):
        d = _pairwise_distances(points[start:start + chunk], centres)
        inside[start:start + chunk] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(generated: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (generated inside the real manifold) and recall (real inside the
    generated manifold)."""
    generated = np.asarray(generated, dtype=np.float64)
    real = np.asarray(real, dtype=np.float64)
    if min(len(generated), len(real)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples on each side, "
                         f"got {len(generated)} generated and {len(real)} real")
    precision = _coverage(generated, real, knn_radii(real, k))
    recall = _coverage(real, generated, knn_radii(generated, k))
    return precision, recall


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: samples of class i predicted as class j."""
    return np.bincount(labels * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, num_classes)
