"""Reference statistics that travel: the mean and covariance of a reference set's features per
scope, so that FID can be computed against a reference whose images are not at hand.

File format (`results/<suite>/features/<dataset>/IF<x>/reference-<ref>.stats.npz`), an .npz:

- `mu` [D], `sigma` [D, D]: all classes, float64, covariance with the unbiased (n - 1)
  normaliser; exactly the keys of EDM's `fid.py` reference files, so those files are accepted
  here and ours are accepted there (`fid.py calc --ref=...`);
- `n`: the number of images behind `mu` and `sigma`;
- `mu_<scope>`, `sigma_<scope>`, `n_<scope>` and `classes_<scope>` (the class indices) for every
  class group (e.g. `mu_head`) and every class (`mu_class_3`);
- `format` ("cbdm.refstats/1"), `extractor` (e.g. "classifier 32-d"), `reference` (e.g. "heldout").

Only `mu` and `sigma` are required when a file is read (EDM's files have nothing else); a scope
whose statistics the file lacks gets no FID, and its record says so.
"""
from __future__ import annotations

import numpy as np

from .evaluate import FEATURE_ARRAYS
from .io import InputError, read_npz, write_npz
from .metrics import frechet_distance_from_stats, mean_and_covariance
from .records import record, scopes

FORMAT = "cbdm.refstats/1"


def scope_key(scope: str) -> str:
    """Suffix of a scope's arrays: '' for all, 'head', 'class_3'."""
    return "" if scope == "all" else "_" + scope.replace(" ", "_")


def reference_stats(features: np.ndarray, labels: np.ndarray, groups: dict, num_classes: int) -> dict:
    """The arrays of a statistics file (without the descriptive strings)."""
    out = {}
    for scope, classes in scopes(groups, num_classes):
        chosen = features[np.isin(labels, classes)]
        key = scope_key(scope)
        out[f"n{key}"] = np.int64(len(chosen))
        out[f"classes{key}"] = np.asarray(classes, dtype=np.int64)
        if len(chosen) >= 2:  # a covariance needs two images
            mu, sigma = mean_and_covariance(chosen)
            out[f"mu{key}"], out[f"sigma{key}"] = mu.numpy(), sigma.numpy()
    return out


def write_reference_stats(*, reference_npz: str, groups: dict, num_classes: int, extractor: str,
                          reference: str, out_npz: str) -> None:
    """Write the reference features' mean and covariance per scope (EDM's mu/sigma format)."""
    data = read_npz(reference_npz, FEATURE_ARRAYS)
    stats = reference_stats(data["features"], data["labels"], groups, num_classes)
    write_npz(out_npz, **stats, format=np.asarray(FORMAT), extractor=np.asarray(extractor),
              reference=np.asarray(reference))
    print(f"{reference}: mean and covariance of {data['features'].shape[1]}-d {extractor} features for "
          f"{sum(k.startswith('mu') for k in stats)} scopes -> {out_npz}", flush=True)


def read_reference_stats(path) -> dict:
    """A reference statistics file; InputError where it lacks mu and sigma."""
    stats = read_npz(path)
    if "mu" not in stats or "sigma" not in stats:
        raise InputError(f"{path} is not a statistics file: it needs `mu` and `sigma` (EDM's fid.py "
                         f"reference format), has {sorted(stats)}")
    return stats


def fid_from_stats(features: np.ndarray, stats: dict, scope: str, device="cpu") -> float | None:
    """FID of `features` against the file's statistics of `scope`; None where the file lacks them."""
    key = scope_key(scope)
    if f"mu{key}" not in stats:
        return None
    return frechet_distance_from_stats(*mean_and_covariance(features, device), stats[f"mu{key}"],
                                       stats[f"sigma{key}"])


def stats_scope_records(gen: dict, stats: dict, scope: str, classes: list[int], cfg: dict, source: str,
                        device="cpu") -> list[dict]:
    """Accuracy and FID of one scope against reference statistics; the metrics that need the
    reference images are recorded as not computed."""
    chosen = np.isin(gen["labels"], classes)
    features, n_gen = gen["features"][chosen], int(chosen.sum())
    n_ref = int(stats.get(f"n{scope_key(scope)}", 0))
    accuracy = (gen["predicted"][chosen] == gen["labels"][chosen]).mean() if n_gen else None
    records = [record(scope, "accuracy", accuracy, n_gen, 0, "" if n_gen else "no samples")]
    if features.shape[1] != stats["mu"].shape[0]:
        raise InputError(f"{source} holds {stats['mu'].shape[0]}-d statistics but the samples have "
                         f"{features.shape[1]}-d features: the statistics come from another extractor")
    if n_gen < cfg["min_samples"]:
        fid, note = None, f"not computed: n_gen={n_gen}, fewer than evaluation.min_samples={cfg['min_samples']}"
    else:
        fid = fid_from_stats(features, stats, scope, device)
        note = f"against the statistics in {source}" if fid is not None else \
            f"not computed: {source} has no statistics for {scope}"
        if fid is not None and min(n_gen, n_ref or n_gen) <= features.shape[1]:
            note += f"; n <= feature dim {features.shape[1]}: singular covariance, FID unreliable"
    records.append(record(scope, "fid", fid, n_gen, n_ref, note))
    why = f"not computed: the reference is statistics ({source}), not images"
    records += [record(scope, m, None, n_gen, n_ref, why) for m in ("kid_mean", "precision", "recall")]
    return records


def evaluate_against_stats(gen: dict, stats_npz: str, groups: dict, num_classes: int, cfg: dict,
                           device="cpu") -> list[dict]:
    """Records of every scope (all, groups, classes) of a featurised sample set against a
    statistics file."""
    from .acceleration import resolve_device

    stats, dev = read_reference_stats(stats_npz), resolve_device(device)
    return [r for scope, classes in scopes(groups, num_classes)
            for r in stats_scope_records(gen, stats, scope, classes, cfg, stats_npz, dev)]
