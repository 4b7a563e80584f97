"""Does a suite's baseline show the long-tail problem? Two measurements against real data.

- The held-out rate: the domain classifier (the feature extractor) applied to the held-out real
  images gives the same accuracy and misclassified-into-group rates as the metrics give for
  generated images. Tail -> head leakage of samples means something only above this rate, which
  is the classifier's own error on real tail images.
- The group gap: per variant, a metric of the tail group minus the same metric of the head group
  at a matched number of images ('<metric>@matched', cbdm.evaluate.matched_group_records), paired
  over runs, with a t-based 95 % interval (cbdm.statistics.paired_difference).
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats

from .config import ConfigError
from .dataset import reference_origin
from .evaluate import classification_records as evaluate_classification
from .evaluate import matched_group_records, read_features, read_reference_features
from .io import InputError, write_json
from .origins import sample_origin
from .records import scopes
from .sources import NUM_CLASSES
from .statistics import paired_difference

HELDOUT_NOTE = "the domain classifier on the held-out real images"
RUN_KEYS = ["seed", "sample_seed"]


def classification_records(labels: np.ndarray, predicted: np.ndarray, groups: dict[str, list[int]],
                           num_classes: int, note: str = "") -> list[dict]:
    """Accuracy and misclassified-into-<group> rate of every scope (all, groups, classes), computed
    as the metrics stage computes them for generated images (cbdm.evaluate.classification_records)."""
    records = []
    for scope, classes in scopes(groups, num_classes):
        keep = np.isin(labels, classes)
        accuracy, leakage = evaluate_classification(scope, labels[keep], predicted[keep], groups,
                                                    note if keep.any() else "no images")
        records += [accuracy, *leakage]
    return records


def heldout_records(reference_npz: str, groups: dict[str, list[int]], num_classes: int,
                    reference_origin: dict | None = None) -> list[dict]:
    """The held-out rates from the held-out reference features file, whose predicted classes are
    the domain classifier's on the held-out images (cbdm.features.extract_features); with
    `reference_origin`, features of another set or other data are refused."""
    ref = read_reference_features(reference_npz, reference_origin)
    return classification_records(ref["labels"], ref["predicted"], groups, num_classes, HELDOUT_NOTE)


def write_heldout_rates(*, reference_npz: str, groups: dict[str, list[int]], num_classes: int,
                        cell: dict, out_json: str, reference_origin: dict | None = None) -> None:
    """The held-out rates of one dataset and imbalance factor, as a records file."""
    records = heldout_records(reference_npz, groups, num_classes, reference_origin)
    write_json(out_json, {"cell": cell, "records": records})
    rates = {f"{r['scope']} {r['metric']}": round(r["value"], 4) for r in records
             if r["scope"] in groups and r["value"] is not None}
    print(f"held-out rates of {reference_npz}: {rates}", flush=True)


def _gap_verdict(verdict: str, low: str, high: str) -> str:
    # paired_difference judges high - low as if high were a variant and low its baseline.
    return {"worse": f"{high} worse than {low}", "better": f"{high} better than {low}"}.get(verdict, verdict)


def group_gap(runs: pd.DataFrame, metric: str = "fid@matched", low: str = "head",
              high: str = "tail") -> pd.DataFrame:
    """Per variant (and guidance, protocol where the runs carry them): `metric` of group `high`
    minus group `low`, paired within each run (training and sampling seed), with the mean, sd,
    t-based 95 % interval and a verdict. `runs` has one row per (run, scope, metric)."""
    by = [c for c in ("variant", "guidance", "protocol") if c in runs.columns]
    sub = runs[(runs["metric"] == metric) & runs["scope"].isin([low, high])].dropna(subset=["value"])
    rows = []
    for key, frame in sub.groupby(by, sort=False):
        wide = frame.pivot_table(index=RUN_KEYS, columns="scope", values="value", aggfunc="first")
        wide = wide.dropna(subset=[c for c in (low, high) if c in wide.columns])
        if low not in wide.columns or high not in wide.columns or wide.empty:
            continue
        diffs = (wide[high] - wide[low]).to_numpy()
        result = paired_difference(diffs, metric)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "metric": metric,
                     "low": low, "high": high, **result,
                     "sd": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
                     "verdict": _gap_verdict(result["verdict"], low, high)})
    return pd.DataFrame(rows)


def heldout_rate(heldout: list[dict], source: str, target: str) -> tuple[float, int]:
    """The held-out images' rate of group `source` classified into group `target`, and how many
    held-out images it is a share of."""
    found = [r for r in heldout if r["scope"] == source and r["metric"] == f"misclassified_into:{target}"]
    if len(found) != 1 or found[0]["value"] is None:
        raise ValueError(f"held-out records have no rate of {source} misclassified into {target}")
    return float(found[0]["value"]), int(found[0]["n_gen"])


def rate_interval(rate: float, n: int) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 95 % interval of a share `rate` of `n` images: 2 of 250 is
    [0.10 %, 2.86 %], too wide to treat the held-out rate as a constant."""
    k = round(rate * n)
    low = stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0
    high = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return float(low), float(high)


def excess_interval(excess: dict, base: float, interval: tuple[float, float]) -> tuple[float, float] | None:
    """95 % interval of (samples - held-out) with both sampling errors: the runs' t half-width and
    the held-out rate's exact interval, each side combined in quadrature (independent estimates).
    None with one run."""
    if excess["ci_low"] is None:
        return None
    runs_half = excess["diff"] - excess["ci_low"]
    return (excess["diff"] - math.hypot(runs_half, interval[1] - base),
            excess["diff"] + math.hypot(runs_half, base - interval[0]))


def leakage_excess(runs: pd.DataFrame, heldout: list[dict], source: str = "tail",
                   target: str = "head") -> pd.DataFrame:
    """Per variant: samples of group `source` classified into group `target`, against the
    held-out images' own rate: mean over runs, the held-out rate, their ratio, and the
    excess (samples - held-out) with a 95 % interval that holds both the spread over runs and
    the held-out rate's own exact interval (`heldout_low`, `heldout_high`; `excess_interval`)."""
    base, n_heldout = heldout_rate(heldout, source, target)
    interval = rate_interval(base, n_heldout)
    metric = f"misclassified_into:{target}"
    by = [c for c in ("variant", "guidance", "protocol") if c in runs.columns]
    sub = runs[(runs["metric"] == metric) & (runs["scope"] == source)].dropna(subset=["value"])
    rows = []
    for key, frame in sub.groupby(by, sort=False):
        values = frame["value"].to_numpy(dtype=float)
        excess = paired_difference(values - base, metric)
        both = excess_interval(excess, base, interval)
        verdict = (excess["verdict"] if both is None else "above held-out" if both[0] > 0
                   else "below held-out" if both[1] < 0 else "not distinguishable from held-out")
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "source": source,
                     "target": target, "samples": float(values.mean()),
                     "samples_sd": float(values.std(ddof=1)) if len(values) > 1 else None,
                     "heldout": base, "heldout_low": interval[0], "heldout_high": interval[1],
                     "ratio": float(values.mean() / base) if base > 0 else None,
                     "diff": excess["diff"], "ci_low": None if both is None else both[0],
                     "ci_high": None if both is None else both[1], "pairs": excess["pairs"], "verdict": verdict})
    return pd.DataFrame(rows)


# --- a finished suite's baseline, under its own groups or others (the sizing sweep, README) ---

CELL_PATH = re.compile(r"(?P<dataset>[^/]+)/IF(?P<imb>[^/]+)/(?P<variant>[^/]+)/seed(?P<seed>\d+)/"
                       r"w(?P<guidance>[^/]+)-s(?P<sample_seed>\d+)/(?P<labelset>[^/]+)\.npz$")


def sample_set_records(features_npz: str, reference_npz: str, groups: dict[str, list[int]], num_classes: int,
                       evaluation: dict, reference_origin: dict | None = None,
                       origin: dict | None = None) -> list[dict]:
    """A sample set's classification records and matched-n group metrics under `groups`, from
    its features file, as the metrics stage computes them (same random subsets); with `origin`
    (its cell, cbdm.origins.sample_origin), features of another cell's samples are refused, and
    with `reference_origin`, reference features of another set or other data."""
    gen, ref = read_features(features_npz, origin), read_reference_features(reference_npz, reference_origin)
    return (classification_records(gen["labels"], gen["predicted"], groups, num_classes)
            + matched_group_records(gen, ref, groups, evaluation))


def expected_origin(path: Path, cell: dict[str, str], config: dict, results: Path) -> dict:
    """The origin the sample features file at `path` (of `cell`, its path's labels) must record,
    as the suite's jobs computed it from the same config (cbdm.origins.sample_origin): a file
    copied over another cell's is refused, as the metrics job refuses it."""
    try:
        return sample_origin(config, **cell)
    except ConfigError as err:
        raise InputError(f"{path}: {results / 'config.yaml'} gives no origin for its cell ({err}); analyse the "
                         f"suite with the config it ran with, from the folder it ran in, or remove the file") from err


def suite_cells(results: Path, groups: dict[str, list[int]] | None = None, labelset: str = "exact-",
                config: dict | None = None) -> dict[tuple[str, str, str], tuple[pd.DataFrame, list[dict]]]:
    """(dataset, imbalance factor, label set) -> (runs, held-out records) of a finished suite
    folder results/<suite> whose reference is the held-out set, under `groups` (default: the
    suite's own); `config` defaults to the resolved config the run wrote. One entry per cell:
    runs of another imbalance factor or label set are other measurements, and each cell has its
    own held-out rates, so nothing here pools them. Each features file must record the origin its
    path's cell has under that config (expected_origin)."""
    config = config or yaml.safe_load((results / "config.yaml").read_text())
    rows, heldout = {}, {}
    for path in sorted((results / "features").rglob(f"{labelset}*.npz")):
        cell = CELL_PATH.search(path.relative_to(results / "features").as_posix())
        key = (cell["dataset"], cell["imb"], cell["labelset"])
        dataset = config["datasets"][cell["dataset"]]
        mine = groups or dataset["groups"]
        num_classes = NUM_CLASSES[dataset["source"]]
        reference = results / "features" / cell["dataset"] / f"IF{cell['imb']}" / "reference-heldout.npz"
        # As the metrics job expects it (the held-out set does not depend on the imbalance factor).
        expected = reference_origin(cell["dataset"], dataset, "heldout", imbalance_factor=None)
        if key not in heldout:
            heldout[key] = heldout_records(str(reference), mine, num_classes, expected)
        fields = {"variant": cell["variant"], "seed": int(cell["seed"]), "sample_seed": int(cell["sample_seed"]),
                  "guidance": cell["guidance"]}
        rows.setdefault(key, []).extend({**fields, **r} for r in sample_set_records(
            str(path), str(reference), mine, num_classes, config["evaluation"], expected,
            expected_origin(path, cell.groupdict(), config, results)))
    if not rows:
        raise ValueError(f"{results}: no sample features ({labelset}*.npz) under features/")
    return {key: (pd.DataFrame(cell_rows), heldout[key]) for key, cell_rows in rows.items()}


def main(argv=None) -> None:
    """`python -m cbdm.phenomenon RESULTS [--head ..] [--tail ..]`: the gap and the leakage of a finished suite."""
    parser = argparse.ArgumentParser(description="tail-minus-head FID gap at matched n and tail -> head "
                                                 "leakage against the held-out rate, of a finished suite")
    parser.add_argument("results", type=Path, help="results/<suite> of a finished run")
    parser.add_argument("--head", help="head classes, comma-separated (default: the suite's groups)")
    parser.add_argument("--tail", help="tail classes, comma-separated")
    args = parser.parse_args(argv)
    groups = ({"head": [int(c) for c in args.head.split(",")], "tail": [int(c) for c in args.tail.split(",")]}
              if args.head and args.tail else None)
    try:
        cells = suite_cells(args.results, groups)
    except InputError as err:  # a file the suite's jobs would refuse: one line, as `cbdm evaluate` says it
        raise SystemExit(f"cbdm.phenomenon: {err}") from err
    for (dataset, imb, labelset), (runs, heldout) in cells.items():
        print(f"== {dataset}, imbalance factor {imb}, {labelset} ==")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(group_gap(runs).to_string(index=False))
            print(leakage_excess(runs, heldout).to_string(index=False))
            accuracy = runs[runs["metric"] == "accuracy"].groupby(["variant", "scope"])["value"].agg(["mean", "std"])
            print(accuracy.loc[(slice(None), ["all", "head", "tail"]), :].to_string())


if __name__ == "__main__":
    main()
