"""Reference statistics that travel: the mean and covariance of a reference set's features per
scope, so that FID can be computed against a reference whose images are not at hand.

File format (`results/<suite>/features/<dataset>/IF<x>/reference-<ref>.stats.npz`), an .npz:

- `mu` [D], `sigma` [D, D]: all classes, float64, covariance with the unbiased (n - 1)
  normaliser; exactly the keys of EDM's `fid.py` reference files, so those files are accepted
  here and ours are accepted there (`fid.py calc --ref=...`);
- `n`: the number of images behind `mu` and `sigma`;
- `mu_<scope>`, `sigma_<scope>`, `n_<scope>` and `classes_<scope>` (the class indices) for every
  class group (e.g. `mu_head`) and every class (`mu_class_3`);
- `format` ("cbdm.refstats/1"), `extractor` (cbdm.leaderboard.describe_features: the network and,
  for Inception, its preprocessing), `reference` (e.g. "heldout"), and `features_label`, the
  reference features file's extractor label (cbdm.features.extractor_label: the classifier
  file's digest, since two trainings of one recipe give different feature spaces), and `origin`,
  which set of which data the features were of (cbdm.dataset.reference_origin, whose data digest
  covers the held-out split and the source).

A file is scored against only if it proves it was made the way the samples are measured: its
`extractor`, `reference`, `features_label` and, where it records one, `origin` must equal the
scoring's, or the FID would sit beside ours as if it were measured alike. Files holding only
`mu` and `sigma` (EDM's and clean-fid's published statistics) record neither; they are accepted,
and every FID against them says so. A scope whose statistics the file lacks gets no FID, and its
record says so.
"""
from __future__ import annotations

import numpy as np

from .evaluate import read_reference_features, small_n_fid
from .features import CLASSES_BY
from .fingerprint import ORIGIN, check_origin, origin_array
from .io import InputError, read_npz, rebuild, write_npz
from .metrics import frechet_distance_from_stats, mean_and_covariance
from .records import record, scopes

FORMAT = "cbdm.refstats/1"
# EDM's fid.py and clean-fid publish their reference statistics as .npz files of exactly these
# arrays: a file of this layout is one of theirs, made by an extractor nobody wrote down.
PUBLISHED_LAYOUT = {"mu", "sigma"}


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
                          reference: str, out_npz: str, reference_origin: dict | None = None) -> None:
    """Write the reference features' mean and covariance per scope (EDM's mu/sigma format); with
    `reference_origin`, features of another reference set or other data are refused."""
    data = read_reference_features(reference_npz, reference_origin)
    stats = reference_stats(data["features"], data["labels"], groups, num_classes)
    label = {"features_label": data["extractor"]} if "extractor" in data else {}
    write_npz(out_npz, **stats, format=np.asarray(FORMAT), extractor=np.asarray(extractor),
              reference=np.asarray(reference), **label, **origin_array(reference_origin))
    print(f"{reference}: mean and covariance of {data['features'].shape[1]}-d {extractor} features for "
          f"{sum(k.startswith('mu') for k in stats)} scopes -> {out_npz}", flush=True)


def read_reference_stats(path) -> dict:
    """A reference statistics file; InputError where it lacks mu and sigma."""
    stats = read_npz(path)
    if "mu" not in stats or "sigma" not in stats:
        raise InputError(f"{path} is not a statistics file: it needs `mu` and `sigma` (EDM's fid.py "
                         f"reference format), has {sorted(stats)}")
    return stats


def provenance_note(stats: dict, path, extractor: str, reference: str) -> str:
    """Refuse statistics of other features or another reference set than the scoring's (an
    InputError naming both and the fix): their FID would land beside ours as if measured alike.
    Returns '' for a file that proves a match, and for EDM's or clean-fid's mu-and-sigma files,
    which cannot, the note every FID against them carries instead of a claimed match."""
    if "extractor" not in stats:
        if set(stats) - PUBLISHED_LAYOUT:
            raise InputError(f"{path} records no `extractor`, so nothing says which features its statistics are "
                             f"of: use one written by the suite (rule reference_stats; {rebuild(path)}) or a "
                             f"published mu-and-sigma file (EDM's, clean-fid's) as it was published")
        return (f"the statistics' extractor and reference set were not recorded ({path} holds only mu and sigma): "
                f"the FID is comparable only if they are of {extractor} features of the {reference} reference")
    recorded = {"extractor": str(stats["extractor"]), "reference": str(stats.get("reference", "(none)"))}
    for field, ours in (("extractor", extractor), ("reference", reference)):
        if recorded[field] != ours:
            raise InputError(f"{path} holds statistics with {field} {recorded[field]!r}, but these samples are scored "
                             f"with {field} {ours!r}, so the FIDs would not be comparable: score with the config "
                             f"and protocol that made the file, or remake it with these (snakemake --forcerun {path})")
    return ""


def check_features_label(stats: dict, path, gen: dict) -> None:
    """InputError where the statistics and the samples' features both record their extractor
    label and the labels differ: the same recipe's words cover every training of the classifier,
    whose feature spaces differ, so a file copied from another run would be scored against."""
    if "features_label" not in stats or "extractor" not in gen:
        return
    theirs, ours = str(stats["features_label"]), str(gen["extractor"])
    if feature_space(theirs) != feature_space(ours):
        raise InputError(f"{path} holds statistics of features labelled {theirs!r}, but these samples' features "
                         f"are labelled {ours!r}: another training of the classifier, whose features are not "
                         f"comparable; use the statistics of this suite's reference features: {rebuild(path)}")


def feature_space(label: str) -> str:
    """The part of an extractor label (cbdm.features.extractor_label) that names the features:
    under Inception it also names the classifier that predicts the classes, which statistics of
    the features do not depend on."""
    return label.split(CLASSES_BY)[0]


def fid_from_stats(features: np.ndarray, stats: dict, scope: str, device="cpu") -> float | None:
    """FID of `features` against the file's statistics of `scope`; None where the file lacks them."""
    key = scope_key(scope)
    if f"mu{key}" not in stats:
        return None
    return frechet_distance_from_stats(*mean_and_covariance(features, device), stats[f"mu{key}"],
                                       stats[f"sigma{key}"])


def stats_fid(features: np.ndarray, stats: dict, scope: str, cfg: dict, source: str,
              device="cpu") -> tuple[float | None, str]:
    """(FID or None, note) of one scope against the file's statistics, under the rules FID
    against the reference images follows (evaluation.min_samples, evaluation.fid_small_n); a
    file without the scope's `n` (EDM's) leaves the reference side's count unknown, and says so."""
    key, n_gen = scope_key(scope), len(features)
    if f"mu{key}" not in stats:
        return None, f"not computed: {source} has no statistics for {scope}"
    n_ref = int(stats[f"n{key}"]) if f"n{key}" in stats else None
    n = n_gen if n_ref is None else min(n_gen, n_ref)
    if n < cfg["min_samples"]:
        return None, (f"not computed: n_gen={n_gen}, n_ref={'not recorded' if n_ref is None else n_ref}, fewer "
                      f"than evaluation.min_samples={cfg['min_samples']}")
    value, rule = small_n_fid(n, features.shape[1], cfg, lambda: fid_from_stats(features, stats, scope, device))
    unknown = "n of the reference statistics not recorded" if n_ref is None else ""
    return value, "; ".join(filter(None, [rule, f"against the statistics in {source}", unknown]))


def stats_scope_records(gen: dict, stats: dict, scope: str, classes: list[int], cfg: dict, source: str,
                        provenance: str = "", device="cpu") -> list[dict]:
    """Accuracy and FID of one scope against reference statistics; the metrics that need the
    reference images are recorded as not computed. `provenance`: what the file could not prove
    about how it was made (provenance_note), said with every FID computed against it."""
    chosen = np.isin(gen["labels"], classes)
    features, n_gen = gen["features"][chosen], int(chosen.sum())
    # A record's n_ref is a count: 0 where the file has none (EDM's), and the FID's note says so.
    n_ref = int(stats.get(f"n{scope_key(scope)}", 0))
    accuracy = (gen["predicted"][chosen] == gen["labels"][chosen]).mean() if n_gen else None
    records = [record(scope, "accuracy", accuracy, n_gen, 0, "" if n_gen else "no samples")]
    fid, note = stats_fid(features, stats, scope, cfg, source, device)
    records.append(record(scope, "fid", fid, n_gen, n_ref,
                          "; ".join(filter(None, [note, provenance if fid is not None else ""]))))
    why = f"not computed: the reference is statistics ({source}), not images"
    records += [record(scope, m, None, n_gen, n_ref, why) for m in ("kid_mean", "precision", "recall")]
    return records


def evaluate_against_stats(gen: dict, stats_npz: str, groups: dict, num_classes: int, cfg: dict,
                           device="cpu", *, extractor: str, reference: str,
                           reference_origin: dict | None = None) -> list[dict]:
    """Records of every scope (all, groups, classes) of a featurised sample set against a
    statistics file. `extractor` (cbdm.leaderboard.describe_features) and `reference` (the
    protocol's reference set) say how the samples are measured: a file made otherwise is refused,
    as is one that records another `reference_origin` (the set drawn from other data: another
    held-out split or source); files that record none are checked as before."""
    from .acceleration import resolve_device

    stats, dev = read_reference_stats(stats_npz), resolve_device(device)
    if ORIGIN in stats and reference_origin is not None:  # the user gave this file: no stage here makes it
        check_origin(stats_npz, stats[ORIGIN], reference_origin,
                     fix=f"give --ref-stats the statistics of this suite's {reference} reference set (rule "
                         f"reference_stats writes them), or leave --ref-stats out to score against its images")
    provenance = provenance_note(stats, stats_npz, extractor, reference)
    check_features_label(stats, stats_npz, gen)
    if gen["features"].shape[1] != stats["mu"].shape[0]:
        raise InputError(f"{stats_npz} holds {stats['mu'].shape[0]}-d statistics but the samples have "
                         f"{gen['features'].shape[1]}-d features: the statistics come from another extractor")
    return [r for scope, classes in scopes(groups, num_classes)
            for r in stats_scope_records(gen, stats, scope, classes, cfg, stats_npz, provenance, dev)]
