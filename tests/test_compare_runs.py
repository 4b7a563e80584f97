"""benchmarks/compare_runs.py: two runs' aggregates side by side, differences in seed-spread units."""
import pandas as pd
import pytest


@pytest.fixture
def compare_runs(repo, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import compare_runs
    return compare_runs


def aggregate(fid_mean, fid_sd):
    keys = dict(protocol="ours", variant="ddpm", guidance=1.0, runs=3)
    return pd.DataFrame([{**keys, "scope": "all", "metric": "fid", "mean": fid_mean, "sd": fid_sd},
                         {**keys, "scope": "class 0", "metric": "fid", "mean": 9.0, "sd": 1.0}])


def test_the_difference_is_measured_in_pooled_seed_sd_and_other_scopes_are_left_out(compare_runs):
    rows = compare_runs.compare(aggregate(2.0, 0.3), aggregate(2.5, 0.4), ["fid"], ["all", "head", "tail"])
    assert list(rows["scope"]) == ["all"]
    row = rows.iloc[0]
    assert row["A"] == "2 ± 0.3 (3)" and row["B"] == "2.5 ± 0.4 (3)" and row["B - A"] == "+0.5"
    assert row["|B - A| / sd"] == pytest.approx(round(0.5 / ((0.3 ** 2 + 0.4 ** 2) / 2) ** 0.5, 2))
