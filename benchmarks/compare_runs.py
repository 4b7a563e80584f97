"""Two finished runs of the same suite, side by side: per variant and scope, each metric's mean ± sd
over training seeds in run A and run B, and the difference in units of the seed spread. A lever
that must not change the science (bf16 autocast, fused Adam, another machine) passes when every
difference stays inside the spread that the seeds themselves make.

    python benchmarks/compare_runs.py RESULTS_A RESULTS_B [--metrics fid accuracy ...] [--scopes all head tail]

RESULTS_* are results/<suite> folders; the main table's aggregate (report/*/table.csv) is read.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def table(results: str) -> pd.DataFrame:
    """The aggregate of a finished run's (only) report, one row per protocol/variant/guidance/scope/metric."""
    found = sorted(Path(results).glob("report/*/table.csv"))
    if len(found) != 1:
        raise SystemExit(f"{results}: expected one report/*/table.csv, found {len(found)}")
    return pd.read_csv(found[0])


def compare(a: pd.DataFrame, b: pd.DataFrame, metrics: list[str], scopes: list[str]) -> pd.DataFrame:
    """Rows of (variant, scope, metric, A mean ± sd, B mean ± sd, B - A, |B - A| / pooled sd)."""
    keys = ["protocol", "variant", "guidance", "scope", "metric"]
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    both = both[both["metric"].isin(metrics) & both["scope"].isin(scopes)]
    rows = []
    for _, r in both.iterrows():
        pooled = math.sqrt((r["sd_a"] ** 2 + r["sd_b"] ** 2) / 2)
        diff = r["mean_b"] - r["mean_a"]
        rows.append({"variant": r["variant"], "scope": r["scope"], "metric": r["metric"],
                     "A": f"{r['mean_a']:.3g} ± {r['sd_a']:.2g} ({int(r['runs_a'])})",
                     "B": f"{r['mean_b']:.3g} ± {r['sd_b']:.2g} ({int(r['runs_b'])})",
                     "B - A": f"{diff:+.3g}", "|B - A| / sd": round(abs(diff) / pooled, 2) if pooled > 0 else None})
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--metrics", nargs="+", default=["fid", "accuracy", "misclassified_into:head", "recall"])
    p.add_argument("--scopes", nargs="+", default=["all", "head", "tail"])
    args = p.parse_args(argv)
    rows = compare(table(args.a), table(args.b), args.metrics, args.scopes)
    print(rows.to_string(index=False))
    ratios = rows["|B - A| / sd"].dropna()
    print(f"\n{len(rows)} cells; |B - A| / pooled seed sd: median {ratios.median():.2f}, max {ratios.max():.2f}; "
          f"cells above 2: {int((ratios > 2).sum())}")


if __name__ == "__main__":
    main()
