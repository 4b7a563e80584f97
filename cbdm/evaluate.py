"""Stage 5: metrics of one sample set against the reference set, for all classes, every class
group and every class, plus the groups compared at a matched sample size.

Each number is a record (cbdm.records: {scope, metric, value, n_gen, n_ref, note, sd, ci_low,
ci_high}) of a metric the metric table declares. A metric
that cannot be computed on the samples at hand (too few on either side) has value None and a
note saying why; a metric computed where it is known to be unreliable (FID with n at or below
the feature dimension, whose covariance is singular) has a value and a note, or is refused if
the config says so. Nothing becomes NaN silently.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import records as rec
from .fingerprint import ORIGIN, check_origin
from .io import InputError, read_npz, rebuild, write_json
from .metrics import (
    TooFewSamples,
    confusion_matrix,
    frechet_distance,
    frechet_distance_infinity,
    inception_score,
    kernel_distance,
    kid_bootstrap,
    most_inception_splits,
    precision_recall,
)
from .records import Record, is_class, record, scopes

FEATURE_ARRAYS = {"features": 2, "labels": 1, "predicted": 1, "logits": 2}
DISTRIBUTION_METRICS = ("fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall")
# The metrics each group is measured with at matched sample size: the table's MATCHED scope.
AT_MATCHED_N = tuple(rec.metrics_at(rec.MATCHED))

# The `evaluation` keys the metrics of one sample set read: the metrics rule passes only these,
# since Snakemake reruns a job whose params change and the other keys (the protocols, the
# report's baseline and verdict settings) change no metrics file.
METRIC_SETTINGS = ("min_samples", "kid_subsets", "kid_subset_size", "kid_bootstrap", "pr_neighborhood", "seed",
                   "fid_small_n", "fid_infinity", "is_splits", "matched_fraction", "matched_repeats")


def metric_settings(evaluation: dict) -> dict:
    """The METRIC_SETTINGS of a resolved `evaluation` section."""
    return {key: evaluation[key] for key in METRIC_SETTINGS}


def small_n_fid(n: int, dim: int, cfg: dict, fid: Callable[[], float]) -> tuple[float | None, str]:
    """(FID or None, note) under `evaluation.fid_small_n`, `n` the smaller side's sample count:
    at or below the feature dimension the covariance is singular, so the FID is computed with a
    note ('flag') or not at all ('refuse'). One rule for features against images and against
    statistics, so that the two paths cannot disagree on whether a number exists."""
    if n > dim:
        return fid(), ""
    note = f"n <= feature dim {dim}: singular covariance"
    if cfg["fid_small_n"] == "refuse":
        return None, f"not computed: {note} (evaluation.fid_small_n: refuse)"
    return fid(), f"{note}, FID unreliable"


def distribution_metrics(gen: np.ndarray, ref: np.ndarray, cfg: dict,
                         device="cpu") -> dict[str, tuple[float | None, str]]:
    """metric -> (value or None, note) for FID, KID and precision/recall of two feature arrays."""
    n_gen, n_ref, dim = len(gen), len(ref), gen.shape[1]
    if min(n_gen, n_ref) < cfg["min_samples"]:
        note = (f"not computed: n_gen={n_gen}, n_ref={n_ref}, fewer than "
                f"evaluation.min_samples={cfg['min_samples']}")
        return {m: (None, note) for m in DISTRIBUTION_METRICS}
    out = {"fid": small_n_fid(min(n_gen, n_ref), dim, cfg, lambda: frechet_distance(gen, ref, device))}
    mean, sd, m = kernel_distance(gen, ref, subsets=cfg["kid_subsets"], subset_size=cfg["kid_subset_size"],
                                  seed=cfg["seed"], device=device)
    # Subsets of both whole sets are the same every time: an sd of 0 that says nothing.
    whole = f"not computed: every KID subset is both whole sets (n_gen = n_ref = {m})" if n_gen == n_ref == m else ""
    out.update(kid_mean=(mean, ""), kid_std=(None, whole) if whole else (sd, ""), kid_subset_size=(m, ""))
    try:
        precision, recall = precision_recall(gen, ref, cfg["pr_neighborhood"], device)
        out.update(precision=(precision, ""), recall=(recall, ""))
    except TooFewSamples as e:
        out.update(precision=(None, f"not computed: {e}"), recall=(None, f"not computed: {e}"))
    return out


def kid_bootstrap_interval(gen: np.ndarray, ref: np.ndarray, cfg: dict, device="cpu") -> tuple[float, float]:
    """95 % percentile interval of KID over `kid_bootstrap` resamples of both sets
    (cbdm.metrics.kid_bootstrap: repeated points are not paired with themselves)."""
    values = kid_bootstrap(gen, ref, resamples=cfg["kid_bootstrap"], seed=cfg["seed"], device=device)
    return tuple(float(v) for v in np.percentile(values, [2.5, 97.5]))


def label_entropy(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    """Mean over the generated classes present of the entropy (bits) of the domain classifier's
    predicted labels for that class's samples: 0 when every sample of a class gets one label
    (its own or another: read it with the accuracy), log2(C) when they spread evenly."""
    values = []
    for c in np.unique(labels):
        shares = np.bincount(predicted[labels == c]) / np.sum(labels == c)
        shares = shares[shares > 0]
        values.append(float(-(shares * np.log2(shares)).sum()))
    return float(np.mean(values)) if values else None


def classification_records(scope: str, labels: np.ndarray, predicted: np.ndarray, groups: dict,
                           note: str = "") -> tuple[Record, list[Record]]:
    """(accuracy, [misclassified-into-<group> rate per group]) of the images of one scope, from the
    domain classifier's predicted classes; values are None where the scope has no images."""
    n = len(labels)
    accuracy = record(scope, "accuracy", (predicted == labels).mean() if n else None, n, 0, note)
    leakage = [record(scope, rec.misclassified_into(group),
                      (np.isin(predicted, classes) & (predicted != labels)).mean() if n else None, n, 0, note)
               for group, classes in groups.items()]
    return accuracy, leakage


def scope_records(scope: str, gen: dict, ref: dict, groups: dict, cfg: dict, device="cpu") -> list[Record]:
    """Every metric of one scope (all, a group or a class): classifier accuracy, label entropy,
    misclassification into each group, FID, KID, precision/recall and, where asked, FID-infinity."""
    n_gen, n_ref = len(gen["features"]), len(ref["features"])
    no_samples = "" if n_gen else "no samples"
    accuracy, leakage = classification_records(scope, gen["labels"], gen["predicted"], groups, no_samples)
    # Per class the note would only repeat itself in the report's Notes, once for every class.
    unit = "" if is_class(scope) else "bits; mean over the scope's classes"
    records = [accuracy, record(scope, "label_entropy", label_entropy(gen["labels"], gen["predicted"]), n_gen, 0,
                                no_samples or unit), *leakage]
    values = distribution_metrics(gen["features"], ref["features"], cfg, device)
    for metric, (value, note) in values.items():
        ci = (None, None)
        if metric == "kid_mean" and value is not None and is_class(scope) and cfg["kid_bootstrap"]:
            ci = kid_bootstrap_interval(gen["features"], ref["features"], cfg, device)
        records.append(record(scope, metric, value, n_gen, n_ref, note, ci=ci))
    if (cfg["fid_infinity"] and rec.scope_kind(scope) in rec.metric("fid_infinity").scopes
            and values["fid"][0] is not None):
        try:
            value, fitted = frechet_distance_infinity(gen["features"], ref["features"], seed=cfg["seed"],
                                                      device=device)
            note = f"FID at n = {fitted} fitted linearly in 1/n, extrapolated to 1/n = 0"
        except TooFewSamples as e:
            value, note = None, f"not computed: {e}"
        records.append(record(scope, "fid_infinity", value, n_gen, n_ref, note))
    return records


def inception_score_records(logits: np.ndarray, cfg: dict, num_classes: int) -> list[Record]:
    """IS mean and sd over `is_splits` splits of all samples; none where a split would hold fewer
    samples than the dataset's classes (cbdm.metrics.most_inception_splits: an empty split's mean
    is NaN, a split of one scores 1.0). The config check refuses such splits for the protocols'
    sample counts; here they reach a set of another size (an imported one)."""
    n, splits = len(logits), cfg["is_splits"]
    if splits > most_inception_splits(n, num_classes):
        note = (f"not computed: {n} samples in evaluation.is_splits={splits} splits give splits of {n // splits}, "
                f"fewer than the dataset's {num_classes} classes, which cap IS below what a model of every class "
                f"scores")
        return [record("all", "is_mean", None, n, 0, note), record("all", "is_std", None, n, 0, note)]
    is_mean, is_sd = inception_score(logits, splits, cfg["seed"])
    return [record("all", "is_mean", is_mean, n, 0, f"from the feature extractor's logits, {splits} splits"),
            record("all", "is_std", is_sd, n, 0)]


def matched_group_records(gen: dict, ref: dict, groups: dict, cfg: dict, device="cpu") -> list[Record]:
    """Every group's FID, KID, precision and recall on the same number of generated and of
    reference images, `matched_fraction` of the smallest group's, over `matched_repeats` random
    subsets: value is the mean, sd and a 95 % percentile interval the spread over subsets.
    Subsets smaller than every group make the spread show even for groups of equal size."""
    members = {g: (np.isin(gen["labels"], c), np.isin(ref["labels"], c)) for g, c in groups.items()}
    n_gen = int(cfg["matched_fraction"] * min(int(m[0].sum()) for m in members.values()))
    n_ref = int(cfg["matched_fraction"] * min(int(m[1].sum()) for m in members.values()))
    note = f"{cfg['matched_repeats']} random subsets of {n_gen} generated and {n_ref} reference images per group"
    rng = np.random.RandomState(cfg["seed"])
    records = []
    for group, (in_gen, in_ref) in members.items():
        draws = {m: [] for m in AT_MATCHED_N}
        why = {m: set() for m in AT_MATCHED_N}
        for _ in range(cfg["matched_repeats"]):
            g = gen["features"][rng.choice(np.where(in_gen)[0], n_gen, replace=False)]
            r = ref["features"][rng.choice(np.where(in_ref)[0], n_ref, replace=False)]
            for m, (value, reason) in distribution_metrics(g, r, cfg, device).items():
                if m in draws:
                    draws[m] += [] if value is None else [value]
                    why[m] |= {reason} if reason else set()
        for m, vals in draws.items():
            notes = "; ".join(sorted(why[m]))
            if not vals:
                records.append(record(group, rec.matched(m), None, n_gen, n_ref, notes))
                continue
            records.append(record(group, rec.matched(m), np.mean(vals), n_gen, n_ref,
                                  "; ".join(filter(None, [note, notes])),
                                  sd=np.std(vals, ddof=1) if len(vals) > 1 else None,
                                  ci=tuple(np.percentile(vals, [2.5, 97.5]))))
    return records


# A sample set made elsewhere can carry labels shifted or permuted (1-based ids, another class
# order) or images transposed or flipped: the metrics are computed without error, and wrong (per
# class they compare other classes). The domain classifier, which knows the dataset's classes,
# shows it: every features file holds its predicted classes whatever the extractor (Inception
# features included, cbdm.features), so the check needs no extractor of its own. It writes a
# warning into the records rather than refusing: a poor method's samples can look the same to
# the classifier, and their numbers are still its numbers. Thresholds: accuracy at most twice
# chance, or half the classes mostly classified as one other class (a cyclic shift moves all of
# them, a flip or transpose most of digits'); the default suite's models score 0.90 to 0.99 with
# every class mostly its own. Built-in sets are not checked: the tiny test configs' barely trained
# models sit at chance, and the suite's sampler gave their labels.
CHANCE_FACTOR, MOVED_SHARE = 2, 0.5


def label_warning(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> str:
    """A warning when the domain classifier's predictions say an imported set's labels or images
    are not what the suite's classes look like ('' when they are)."""
    present = np.unique(labels)
    counts = confusion_matrix(labels, predicted, num_classes)
    accuracy = np.trace(counts) / max(len(labels), 1)
    moved = {int(c): int(counts[c].argmax()) for c in present if counts[c].argmax() != c}
    said = []
    if accuracy <= CHANCE_FACTOR / num_classes:
        said.append(f"the domain classifier's accuracy on them is {accuracy:.2f}, near or below chance "
                    f"({1 / num_classes:.2f})")
    if len(moved) >= MOVED_SHARE * len(present):
        pairs = ", ".join(f"{c} as {d}" for c, d in list(moved.items())[:4]) + (", ..." if len(moved) > 4 else "")
        kind = " (a permutation of the labels)" if len(set(moved.values())) == len(moved) else ""
        said.append(f"{len(moved)} of {len(present)} classes are mostly classified as another class{kind}: {pairs}")
    if not said:
        return ""
    return (f"WARNING: {' and '.join(said)}; check that the labels are the dataset's 0-based class indices in its "
            f"class order and that the images are not transposed, flipped or inverted")


def with_label_warning(import_note: str, gen: dict, num_classes: int) -> str:
    """An imported set's note with label_warning's warning added; a built-in set's ('' note) is left
    alone: the suite's sampler gave it its labels, so a low accuracy there is the model's."""
    if not import_note:
        return import_note
    return "; ".join(filter(None, [import_note, label_warning(gen["labels"], gen["predicted"], num_classes)]))


def _select(arrays: dict, classes: list[int]) -> dict:
    """The rows of every array whose label is one of `classes`."""
    keep = np.isin(arrays["labels"], classes)
    return {k: v[keep] for k, v in arrays.items()}


def check_feature_sets(sets: dict[str, dict], num_classes: int) -> None:
    """Feature files compared with each other: one extractor where they record it (files written
    before they did are compared by dimension only), one dimension, labels of the dataset's classes."""
    made_by = {path: str(arrays.pop("extractor")) for path, arrays in sets.items() if "extractor" in arrays}
    if len(set(made_by.values())) > 1:
        raise InputError(f"feature files made by different extractors {made_by}: their features are not "
                         f"comparable; for the stale one, {rebuild('<file>')}")
    dims = {path: arrays["features"].shape[1] for path, arrays in sets.items()}
    if len(set(dims.values())) > 1:
        raise InputError(f"feature files of different dimensions {dims}: they come from different extractors "
                         f"or image sizes; for the wrong one, {rebuild('<file>')}")
    for path, arrays in sets.items():
        bad = np.any([~np.isfinite(arrays[name]).all(axis=1) for name in ("features", "logits") if name in arrays],
                     axis=0)
        if bad.any():
            raise InputError(f"{path}: {bad.sum()} of {len(bad)} feature rows are not finite (NaN or inf): the "
                             f"extractor gave them (a domain classifier that diverged in training?); "
                             f"{rebuild(path)}, and if they recur, check the classifier's training log")
        labels = arrays["labels"]
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise InputError(f"{path}: labels range {labels.min()}..{labels.max()}, but the dataset has classes "
                             f"0..{num_classes - 1}; {rebuild(path)}")


def read_features(path: str, origin: dict | None = None) -> dict:
    """The arrays of a features file, less its origin; with `origin` (what the file must be of: a
    sample set's cell, cbdm.origins.sample_origin, or a reference set, cbdm.dataset.reference_origin),
    an InputError unless the file records that one (cbdm.fingerprint.check_origin)."""
    arrays = read_npz(path, FEATURE_ARRAYS)
    check_origin(path, arrays.pop(ORIGIN, None), origin)
    return arrays


def read_reference_features(path: str, reference_origin: dict | None = None) -> dict:
    """The arrays of a reference set's features file; with `reference_origin` (which set of which
    data, cbdm.dataset.reference_origin), an InputError unless the file records that one: features
    of another reference set, or of a set drawn from other data (another held-out split, n_max,
    source), would be measured against without a word."""
    return read_features(path, reference_origin)


def evaluate(*, generated_npz: str, reference_npz: str, groups: dict, num_classes: int,
             evaluation: dict, cell: dict, device: str, out_json: str, origin: dict | None = None,
             reference_origin: dict | None = None) -> str:
    """Stage 5: every record of one featurised sample set against its reference features, with
    the classifier's confusion matrix, into `out_json`; returns the note the records carry of an
    imported set ('' for a built-in one), its label warning included. With `origin` (the sample
    set's cell), features of another cell's samples are refused; with `reference_origin`
    (cbdm.dataset.reference_origin), features of another reference set or of other data."""
    # Imported here, not at the top: the leaderboard reads configs (jsonschema), and the metrics
    # functions above run without them (benchmarks/bench_metrics.py on the GPU image lacks jsonschema).
    from .acceleration import resolve_device
    from .leaderboard import measured_cell

    dev = resolve_device(device)
    gen = read_features(generated_npz, origin)
    import_note = str(gen.pop("note", ""))  # how an imported sample set was read (cbdm.samplesets)
    cell = measured_cell(cell, gen)
    ref = read_reference_features(reference_npz, reference_origin)
    check_feature_sets({generated_npz: gen, reference_npz: ref}, num_classes)
    import_note = with_label_warning(import_note, gen, num_classes)
    if "WARNING" in import_note:
        print(import_note[import_note.find("WARNING"):], flush=True)
    records = []
    for scope, classes in scopes(groups, num_classes):
        records += scope_records(scope, _select(gen, classes), _select(ref, classes), groups, evaluation, dev)
    if len(groups) > 1:
        records += matched_group_records(gen, ref, groups, evaluation, dev)
    for r in records if import_note else []:
        r["note"] = "; ".join(filter(None, [r["note"], import_note]))
    records += inception_score_records(gen["logits"], evaluation, num_classes)
    confusion = confusion_matrix(gen["labels"], gen["predicted"], num_classes)
    write_json(out_json, {"cell": cell, "records": records, "confusion": confusion.tolist(),
                          "feature_dim": int(gen["features"].shape[1])})
    overall = {r["metric"]: r["value"] for r in records if r["scope"] == "all"}
    print(f"{cell}: FID {overall['fid']}, KID {overall['kid_mean']}, recall {overall['recall']}, "
          f"accuracy {overall['accuracy']}", flush=True)
    return import_note
