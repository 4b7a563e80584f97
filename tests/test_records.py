"""The metric table (cbdm/records.py): a metric added there flows to the report's tables and the
statistics' verdicts; an undeclared metric is an error naming it; scopes are read by helpers,
not by string slicing; and the package's imports run one way (no cycle)."""
import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbdm import records
from cbdm.records import HIGHER, LOWER, Metric, MetricError, record
from cbdm.report import aggregate, format_differences, format_value, wide_table
from cbdm.statistics import compare_to_baseline, paired_difference

PACKAGE = Path(__file__).resolve().parents[1] / "cbdm"


@pytest.fixture
def sharpness():
    """A metric declared through the table for one test, removed again afterwards."""
    metric = records.register(Metric("sharpness", HIGHER, "sharp", scale_exponent=2, scopes=(records.ALL,)))
    yield metric
    del records.METRICS[metric.name]


def runs_of(metric: str, values: dict[str, list[float]]) -> pd.DataFrame:
    """Runs of every variant (seeds 0, 1, ...) with one all-classes record of `metric` each."""
    return pd.DataFrame([{"protocol": "ours", "variant": variant, "guidance": 1.0, "seed": seed, "sample_seed": 0,
                          **record("all", metric, value, 100, 50)}
                         for variant, seeds in values.items() for seed, value in enumerate(seeds)])


def test_a_metric_added_through_the_table_reaches_the_tables_and_the_verdicts(sharpness):
    runs = runs_of("sharpness", {"base": [0.10, 0.20, 0.30], "new": [0.15, 0.26, 0.34]})
    table = wide_table(aggregate(runs), [("sharp all", "all", "sharpness")]).set_index("variant")
    assert table.loc["base", "sharp all"] == "20 ± 10"  # mean 0.2 at the display scale x 1e2
    assert table.loc["base", "n sharp all"] == "100 vs 50"
    diffs = compare_to_baseline(runs, "base", [("all", "sharpness")])
    assert diffs.iloc[0]["verdict"] == "better"  # higher is better: +0.05 every seed
    assert format_differences(diffs).iloc[0]["difference"] == "+5"
    assert records.label("sharpness") == "sharp" and sharpness.scaled_label == "sharp x 1e2"


def test_the_direction_in_the_table_decides_the_verdict():
    worse_every_seed = np.array([1.0, 1.2, 0.9])
    assert paired_difference(worse_every_seed, "fid")["verdict"] == "worse"  # lower is better
    assert paired_difference(worse_every_seed, "misclassified_into:head")["verdict"] == "worse"
    assert paired_difference(worse_every_seed, "recall@matched")["verdict"] == "better"
    # A descriptive metric (direction 'none') says which way it moved, never better or worse.
    assert paired_difference(worse_every_seed, "label_entropy")["verdict"] == "higher"
    assert paired_difference(-worse_every_seed, "label_entropy")["verdict"] == "lower"


def test_an_undeclared_metric_is_an_error_naming_it_not_a_guess():
    with pytest.raises(MetricError, match="'fid_new' is not in the metric table"):
        record("all", "fid_new", 1.0, 10, 10)
    with pytest.raises(MetricError, match="'fidelity' is not in the metric table"):
        paired_difference(np.array([1.0, 2.0]), "fidelity")
    row = {"mean": 1.0, "sd": np.nan, "runs": 1, "ci_low": np.nan, "ci_high": np.nan}
    with pytest.raises(MetricError, match="'kid_total'"):
        format_value(row, "kid_total")  # no scale guessed from a 'kid' prefix
    with pytest.raises(ValueError, match="direction must be"):
        Metric("blur", "smaller", "blur")


def test_a_metric_is_recorded_only_at_the_scopes_the_table_gives_it(sharpness):
    with pytest.raises(MetricError, match="'sharpness' is not measured at class scopes"):
        record("class 2", "sharpness", 1.0, 10, 10)
    with pytest.raises(MetricError, match="'near_copy_share' is not measured at all scopes"):
        record("all", "near_copy_share", 0.1, 10, 10)
    with pytest.raises(MetricError, match="'cas' is not measured at matched sample size"):
        records.matched("cas")
    assert records.matched("fid") == "fid@matched" and records.base_name("kid_mean@matched") == "kid_mean"
    assert records.metrics_at(records.MATCHED) == ["fid", "kid_mean", "precision", "recall"]
    with pytest.raises(ValueError, match="'sharpness' is declared twice"):
        records.register(Metric("sharpness", LOWER, "again"))


def test_scopes_are_read_by_helpers():
    assert records.class_scope(3) == "class 3" and records.class_of("class 12") == 12
    assert records.is_class("class 0") and not records.is_class("head")
    with pytest.raises(ValueError, match="'tail' is not a class scope"):
        records.class_of("tail")
    assert [records.scope_kind(s, m) for s, m in (("all", "fid"), ("tail", "fid"), ("tail", "fid@matched"),
                                                  ("class 1", "fid"))] == ["all", "group", "matched", "class"]
    assert records.scopes({"head": [0]}, 2) == [("all", [0, 1]), ("head", [0]), ("class 0", [0]), ("class 1", [1])]


def package_imports() -> dict[str, set[str]]:
    """cbdm module -> the cbdm modules it imports anywhere in its body (function-level imports too)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cbdm."):
                found.add(node.module.split(".")[1])
        graph[path.stem] = found & {p.stem for p in PACKAGE.glob("*.py")}
    return graph


def test_the_package_has_no_import_cycle():
    graph, state, cycles = package_imports(), {}, []

    def visit(module: str, stack: list[str]) -> None:
        state[module], stack = "open", stack + [module]
        for target in sorted(graph[module]):
            if state.get(target) == "open":  # back to a module still being visited: a cycle
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, cycles
    assert "evaluate" not in graph["cas"] | graph["memorization"] | graph["augment"]  # they read records


@pytest.mark.parametrize("field", ["value", "sd", "ci"])
def test_a_number_that_is_not_finite_is_refused_where_it_is_recorded(field):
    """A NaN value went into the metrics file and the report printed its cell blank or 'n/a' with
    no note saying why; not computed is None with a note, and NaN or inf is an error naming it."""
    args = {"value": dict(value=float("nan")), "sd": dict(value=1.0, sd=float("inf")),
            "ci": dict(value=1.0, ci=(0.5, float("nan")))}[field]
    with pytest.raises(MetricError, match=r"fid at 'class 3' .*not finite.*None with a note"):
        record("class 3", "fid", n_gen=10, n_ref=10, **args)
    assert record("class 3", "fid", None, 10, 10, "not computed: too few")["value"] is None
