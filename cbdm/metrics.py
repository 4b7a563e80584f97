"""Sample-quality metrics on feature arrays: pure functions of arrays in, numbers out.

Conventions follow torch-fidelity and clean-fid so that the numbers are interchangeable
(tests compare them on the same arrays): covariances with the unbiased (n - 1) normaliser;
KID as the unbiased MMD^2 with the kernel (x.y / d + 1)^3 averaged over random subsets, the
subsets drawn in torch-fidelity's order from RandomState(seed); improved precision and recall
(Kynkaanniemi et al. 2019) with the k-th nearest neighbour radius, the point itself excluded.

The arithmetic runs in float64 torch on `device` (default CPU), so that a GPU computes the
matrix products and distances of 50k-sample sets in large batches.
"""
from __future__ import annotations

import numpy as np
import torch

ROWS_PER_CHUNK = 4096  # rows of a pairwise-distance matrix held at once (memory, not results)


def as_float64(x, device) -> torch.Tensor:
    """Features (an array, or a tensor anywhere) as a float64 tensor on `device`."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device)


def mean_and_covariance(features, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of features [N, D]."""
    x = as_float64(features, device)
    mu = x.mean(dim=0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum as S1 S2 and no
    complex round-off; never below 0. The second pair joins the first on its device (a statistics
    file's numpy arrays against samples' statistics on a GPU)."""
    mu1, sigma1 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, sigma1))
    mu2, sigma2 = (torch.as_tensor(v, dtype=torch.float64, device=mu1.device) for v in (mu2, sigma2))
    evals, evecs = torch.linalg.eigh(sigma1)
    root1 = (evecs * evals.clamp(min=0).sqrt()) @ evecs.T
    inner = torch.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = inner.clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    # A squared distance: below 0 only by the round-off of the traces (about -1e-6 for a set
    # against itself at n <= dim), which would print as a negative FID.
    return max(float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean), 0.0)


def frechet_distance(features_a, features_b, device="cpu") -> float:
    """FID between two feature arrays [N, D] and [M, D]."""
    return frechet_distance_from_stats(*mean_and_covariance(features_a, device),
                                       *mean_and_covariance(features_b, device))


class TooFewSamples(ValueError):
    """A metric that cannot be computed on this many samples: the caller records it as not computed."""


def frechet_distance_infinity(features_gen, features_ref, *, seed: int, points: int = 5,
                              device="cpu") -> tuple[float, list[int]]:
    """FD-infinity (Chong & Forsyth 2020): FID is about linear in 1/n for n generated samples;
    fit it over `points` subset sizes between n/5 and n and extrapolate to 1/n = 0.
    Returns (estimate, the subset sizes used)."""
    n, dim = len(features_gen), np.shape(features_gen)[1]
    if n <= dim + 2:  # every subset must exceed the dimension + 1, and two sizes are needed to fit a line
        raise TooFewSamples(f"FD-infinity needs more than the feature dimension {dim} + 2 generated "
                            f"samples, got {n}")
    sizes = sorted({int(s) for s in np.linspace(max(n // 5, dim + 2), n, points)})
    rng = np.random.RandomState(seed)
    gen = as_float64(features_gen, device)
    ref_stats = mean_and_covariance(features_ref, device)
    fids = [frechet_distance_from_stats(*mean_and_covariance(gen[rng.choice(n, size, replace=False)], device),
                                        *ref_stats) for size in sizes]
    slope, intercept = np.polyfit(1.0 / np.array(sizes), fids, 1)
    return float(intercept), sizes


def inception_score(logits, splits: int, seed: int = 2020) -> tuple[float, float]:
    """IS: exp(E_x KL(p(y|x) || p(y))) per split of the shuffled samples; (mean, sd) over splits,
    as torch-fidelity computes it."""
    logits = as_float64(logits, "cpu")[np.random.RandomState(seed).permutation(len(logits))]
    log_p = logits.log_softmax(dim=1)
    scores = []
    for i in range(splits):
        chunk = log_p[i * len(log_p) // splits:(i + 1) * len(log_p) // splits]
        log_q = chunk.exp().mean(dim=0, keepdim=True).log()
        scores.append(float((chunk.exp() * (chunk - log_q)).sum(dim=1).mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def most_inception_splits(n: int, num_classes: int) -> int:
    """The most splits of n samples of a dataset of `num_classes` classes that IS is computed over
    (0: none): splits of at least as many samples as classes.

    IS is exp of the mutual information between a split's sample and its predicted class, which a
    split of m samples caps at log m: a split of one scores 1.0 whatever the samples, and splits of
    fewer samples than classes cap IS below the score of a model that draws every class
    confidently (the number of classes). The usual 10 splits of 50k samples hold 5,000 each."""
    return n // num_classes


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD^2 of two equal-sized feature sets under KID's cubic polynomial kernel."""
    m = len(x)
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_distance(features_a, features_b, *, subsets: int, subset_size: int, seed: int,
                    device="cpu") -> tuple[float, float, int]:
    """KID: (mean, sd over subsets, subset size used). The subset size is capped at the
    smaller set's size."""
    a, b = as_float64(features_a, device), as_float64(features_b, device)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {len(a)} and {len(b)}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = a[torch.as_tensor(rng.choice(len(a), m, replace=False), device=a.device)]
        y = b[torch.as_tensor(rng.choice(len(b), m, replace=False), device=b.device)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std()), m


def kid_bootstrap(features_a, features_b, *, resamples: int, seed: int, device="cpu") -> np.ndarray:
    """Unbiased MMD^2 (KID's kernel) of `resamples` bootstrap resamples of both sets.

    A resample with replacement repeats points, and the unbiased estimator's within-set sums
    would count a repeated point against itself (k(x, x), several times the typical k(x, y)),
    shifting every value up. So the within-set sums leave out pairs of the same original point,
    as they leave out the diagonal without resampling. The kernels are taken once; a resample
    is its multiplicity vector c, and a within-set sum is c'Kc - sum(c^2 diag K)."""
    a, b = as_float64(features_a, device), as_float64(features_b, device)
    k_aa, k_bb, k_ab = _poly_kernel(a, a), _poly_kernel(b, b), _poly_kernel(a, b)
    rng = np.random.RandomState(seed)

    def draw(n):
        counts = np.bincount(rng.randint(n, size=n), minlength=n)
        return torch.as_tensor(counts, dtype=torch.float64, device=a.device)

    def within(k, c):
        return (c @ k @ c - (c * c * k.diagonal()).sum()) / (c.sum() ** 2 - (c * c).sum())

    values = np.empty(resamples)
    for i in range(resamples):
        c_a, c_b = draw(len(a)), draw(len(b))
        values[i] = within(k_aa, c_a) + within(k_bb, c_b) - 2 * (c_a @ k_ab @ c_b) / (len(a) * len(b))
    return values


def nearest_neighbour_distances(points, reference, device="cpu") -> np.ndarray:
    """Euclidean distance from each point to its nearest neighbour in `reference`."""
    p, r = as_float64(points, device), as_float64(reference, device)
    return torch.cat([torch.cdist(p[s:s + ROWS_PER_CHUNK], r).min(dim=1).values
                      for s in range(0, len(p), ROWS_PER_CHUNK)]).cpu().numpy()


def knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of every point to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(features[s:s + ROWS_PER_CHUNK], features).kthvalue(k + 1, dim=1).values
                      for s in range(0, len(features), ROWS_PER_CHUNK)])


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` inside at least one ball (centres, radii)."""
    inside = torch.cat([(torch.cdist(points[s:s + ROWS_PER_CHUNK], centres) <= radii[None, :]).any(dim=1)
                        for s in range(0, len(points), ROWS_PER_CHUNK)])
    return float(inside.double().mean())


SAMPLES_PER_NEIGHBOUR = 10  # precision/recall with k neighbours need this many times k samples a side


def precision_recall_minimum(k: int) -> int:
    """Fewest samples a side for precision/recall with k neighbours: 10 k.

    A sample's ball out to its k-th nearest of the n - 1 others holds a share Beta(k, n - k) of its
    set's distribution, k / n on average: all but 1 / (k + 1) of it at n = k + 1, where precision
    and recall approach 1 whatever the two sets. At 10 k a ball holds a tenth. Measured (k = 5,
    32 dims, Gaussians shifted by 0.5 in every dimension, 20 seeds): precision 0.96 at n = 6, 0.89
    at 10, 0.72 at 25, 0.65 at 50 and 0.57 at 250. Neither Kynkaenniemi et al. (k = 3 on 50k
    samples) nor dgm-eval (k = 5 on 10k) checks a minimum: their sets are far above it."""
    return SAMPLES_PER_NEIGHBOUR * k


def precision_recall(generated, real, k: int = 3, device="cpu") -> tuple[float, float]:
    """Improved precision (generated inside the real manifold) and recall (real inside the
    generated manifold); TooFewSamples under precision_recall_minimum(k) samples on either side."""
    generated, real = as_float64(generated, device), as_float64(real, device)
    if min(len(generated), len(real)) < precision_recall_minimum(k):
        raise TooFewSamples(f"precision/recall with k={k} need at least {precision_recall_minimum(k)} samples on "
                            f"each side ({SAMPLES_PER_NEIGHBOUR} k): with fewer, each sample's k-nearest-neighbour "
                            f"ball holds much of its set and both approach 1 whatever the sets")
    precision = _coverage(generated, real, knn_radii(real, k))
    recall = _coverage(real, generated, knn_radii(generated, k))
    return precision, recall


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[i, j]: samples of class i predicted as class j."""
    return np.bincount(labels * num_classes + predicted, minlength=num_classes ** 2).reshape(num_classes, num_classes)
