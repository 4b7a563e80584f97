"""Statistics across seeds: paired differences to a baseline with a t interval, and the share
of the spread that comes from training seeds vs sampling seeds."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .records import HIGHER, LOWER, direction

NO_DIFFERENCE = "no detectable difference"
ONE_RUN = "undecided (one run: add seeds)"  # no interval can be formed from one pair
NO_PAIRS = "not computed (no run of both has it: see the notes)"
# Every pair differs by the same non-zero amount (a metric counted in whole samples, few seeds):
# the t interval has no width, which is no evidence of a difference.
NO_SPREAD = "undecided (every pair differs by the same amount: no spread to judge by; add seeds)"


def sample_sd(values) -> float | None:
    """The sd (n - 1) of `values`; None for fewer than two, exactly 0 where they are all equal
    (the float sum of equal values is not n times the value, and left an sd of 1e-16 to print)."""
    values = pd.Series(values, dtype=float).reset_index(drop=True)
    if len(values) < 2:
        return None
    return 0.0 if (values == values[0]).all() else float(values.std(ddof=1))


def verdict(low: float, high: float, way: str) -> str:
    """'better' / 'worse' by the metric's direction `way` when the interval excludes 0,
    'higher' / 'lower' for a descriptive metric (direction 'none'), else 'no detectable
    difference' (at this many pairs: the interval says how large a difference could hide)."""
    if not (low > 0 or high < 0):
        return NO_DIFFERENCE
    if way in (LOWER, HIGHER):
        return "better" if (high < 0) == (way == LOWER) else "worse"
    return "lower" if high < 0 else "higher"


def paired_difference(diffs: np.ndarray, metric: str) -> dict:
    """Mean of paired differences (variant - baseline), its t-based 95 % interval, and a verdict
    (see `verdict`); a metric the table does not declare is refused before any number is made."""
    way = direction(metric)
    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    mean = float(np.mean(diffs))
    if abs(mean) <= np.finfo(float).eps * n * np.abs(diffs).max(initial=0.0):
        mean = 0.0  # within the round-off of the sum: 1/61 - 1/61 left -3.5e-18 to print
    if n < 2:
        return {"diff": mean, "ci_low": None, "ci_high": None, "pairs": n,
                "verdict": ONE_RUN}
    half = stats.t.ppf(0.975, n - 1) * np.std(diffs, ddof=1) / math.sqrt(n)
    low, high = mean - half, mean + half
    same = mean != 0 and (diffs == diffs[0]).all()
    return {"diff": mean, "ci_low": float(low), "ci_high": float(high), "pairs": n,
            "verdict": NO_SPREAD if same else verdict(low, high, way)}


def compare_to_baseline(runs: pd.DataFrame, baseline: str, targets: list[tuple[str, str]]) -> pd.DataFrame:
    """Paired differences of every variant to `baseline` for (scope, metric) `targets`; runs
    are paired by training seed and sampling seed. `runs` holds one guidance per variant."""
    rows = []
    keys = ["seed", "sample_seed"]
    for scope, metric in targets:
        measured = runs[(runs["scope"] == scope) & (runs["metric"] == metric)]
        sub = measured.dropna(subset=["value"])
        base = sub[sub["variant"] == baseline].set_index(keys)["value"]
        # Every variant that has the metric gets a row: one whose runs did not compute it says so.
        for variant in [v for v in dict.fromkeys(measured["variant"]) if v != baseline]:
            mine = sub[sub["variant"] == variant].set_index(keys)["value"]
            paired = mine.index.intersection(base.index)
            diffs = (mine.loc[paired] - base.loc[paired]).to_numpy()
            result = paired_difference(diffs, metric) if len(paired) else {
                "diff": None, "ci_low": None, "ci_high": None, "pairs": 0, "verdict": NO_PAIRS}
            rows.append({"variant": variant, "baseline": baseline, "scope": scope, "metric": metric, **result})
    return pd.DataFrame(rows)


def seed_variance(runs: pd.DataFrame, scope: str, metric: str) -> pd.DataFrame:
    """Per variant: sd over training seeds (of each seed's mean over sampling seeds) and the
    pooled sd over sampling seeds within a training seed; None where there is one seed."""
    rows = []
    sub = runs[(runs["scope"] == scope) & (runs["metric"] == metric)].dropna(subset=["value"])
    for variant, v in sub.groupby("variant", sort=False):
        per_seed = v.groupby("seed")["value"]
        means = per_seed.mean()
        within = per_seed.var(ddof=1).dropna()
        rows.append({"variant": variant, "scope": scope, "metric": metric,
                     "sd_training_seeds": sample_sd(means),
                     "training_seeds": len(means),
                     "sd_sampling_seeds": float(math.sqrt(within.mean())) if len(within) else None,
                     "sampling_seeds": int(per_seed.size().max())})
    return pd.DataFrame(rows)
