"""Stage 5: metrics of one sample set against the reference set, for all classes, every class
group and every class.

Each number is a record {scope, metric, value, n_gen, n_ref, note}. A metric that cannot be
computed on the samples at hand (too few on either side) has value None and a note saying
why; a metric computed where it is known to be unreliable (FID with n at or below the feature
dimension, whose covariance is singular) has a value and a note. Nothing becomes NaN silently.
"""
from __future__ import annotations

import numpy as np

from .io import read_npz, write_json
from .metrics import confusion_matrix, frechet_distance, kernel_distance, precision_recall

FEATURE_ARRAYS = {"features": 2, "labels": 1, "predicted": 1}


def scopes(groups: dict[str, list[int]], num_classes: int) -> list[tuple[str, list[int]]]:
    """(name, classes): 'all', each group, then each class as 'class <c>'."""
    return ([("all", list(range(num_classes)))] + list(groups.items())
            + [(f"class {c}", [c]) for c in range(num_classes)])


def scope_records(scope: str, gen: dict, ref: dict, groups: dict, cfg: dict) -> list[dict]:
    n_gen, n_ref, dim = len(gen["features"]), len(ref["features"]), gen["features"].shape[1]

    def record(metric, value, note="", n_gen=n_gen, n_ref=n_ref):
        return {"scope": scope, "metric": metric, "value": None if value is None else float(value),
                "n_gen": int(n_gen), "n_ref": int(n_ref), "note": note}

    records = []
    accuracy = (gen["predicted"] == gen["labels"]).mean() if n_gen else None
    records.append(record("accuracy", accuracy, "" if n_gen else "no samples", n_ref=0))
    for group, classes in groups.items():
        wrong_into = np.isin(gen["predicted"], classes) & (gen["predicted"] != gen["labels"])
        records.append(record(f"misclassified_into:{group}", wrong_into.mean() if n_gen else None,
                              "" if n_gen else "no samples", n_ref=0))

    too_few = min(n_gen, n_ref) < cfg["min_samples"]
    skip_note = f"not computed: n_gen={n_gen}, n_ref={n_ref}, fewer than evaluation.min_samples={cfg['min_samples']}"
    if too_few:
        return records + [record(m, None, skip_note) for m in
                          ("fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall")]

    fid_note = (f"n <= feature dim {dim}: singular covariance, FID unreliable"
                if min(n_gen, n_ref) <= dim else "")
    records.append(record("fid", frechet_distance(gen["features"], ref["features"]), fid_note))
    kid_mean, kid_std, m = kernel_distance(gen["features"], ref["features"], subsets=cfg["kid_subsets"],
                                           subset_size=cfg["kid_subset_size"], seed=cfg["seed"])
    records += [record("kid_mean", kid_mean), record("kid_std", kid_std), record("kid_subset_size", m)]
    k = cfg["pr_neighborhood"]
    if min(n_gen, n_ref) <= k:
        note = f"not computed: precision/recall with k={k} needs more than {k} samples on each side"
        return records + [record("precision", None, note), record("recall", None, note)]
    precision, recall = precision_recall(gen["features"], ref["features"], k)
    return records + [record("precision", precision), record("recall", recall)]


def _select(arrays: dict, classes: list[int]) -> dict:
    keep = np.isin(arrays["labels"], classes)
    return {k: v[keep] for k, v in arrays.items()}


def evaluate(*, generated_npz: str, reference_npz: str, groups: dict, num_classes: int,
             evaluation: dict, cell: dict, out_json: str) -> None:
    gen = read_npz(generated_npz, FEATURE_ARRAYS)
    ref = read_npz(reference_npz, FEATURE_ARRAYS)
    records = []
    for scope, classes in scopes(groups, num_classes):
        records += scope_records(scope, _select(gen, classes), _select(ref, classes), groups, evaluation)
    confusion = confusion_matrix(gen["labels"], gen["predicted"], num_classes)
    write_json(out_json, {"cell": cell, "records": records, "confusion": confusion.tolist(),
                          "feature_dim": int(gen["features"].shape[1])})
    overall = {r["metric"]: r["value"] for r in records if r["scope"] == "all"}
    print(f"{cell}: FID {overall['fid']}, KID {overall['kid_mean']}, recall {overall['recall']}, "
          f"accuracy {overall['accuracy']}", flush=True)
