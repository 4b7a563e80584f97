"""What one measured number is (a Record), and what every metric means (the metric table).

A record is {scope, metric, value, n_gen, n_ref, note, sd, ci_low, ci_high}, kept as a plain dict
so that it goes to JSON and into a pandas frame as it is. Its scope is 'all', a class group's
name, or a class ('class 3'); its metric is a name of the table below, optionally with an
argument ('misclassified_into:head') or at a matched sample size ('fid@matched').

The table is the one place that says, per metric, whether lower or higher is better (or
neither: a descriptive quantity), how it is labelled and scaled when printed, and at which scopes
it is measured. Evaluation, statistics, the report, its plots and the leaderboard all read it; a
metric the table does not know is an error naming it, never a guess. Adding a metric: its
function, and one `register(Metric(...))` here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from .fingerprint import check_recorded
from .io import read_json
from .labels import factor_label

LOWER, HIGHER, NONE = "lower", "higher", "none"
ALL, GROUP, CLASS, MATCHED = "all", "group", "class", "matched"
CLASS_PREFIX = "class "
MATCHED_SUFFIX = "@matched"
ARGUMENT_SEPARATOR = ":"


class MetricError(ValueError):
    """A metric the table does not declare (or not at that scope); the message names it."""


@dataclass(frozen=True)
class Metric:
    """One entry of the metric table. `direction`: which way is better (LOWER, HIGHER) or NONE
    for a descriptive quantity, which gets no better/worse verdict; `description`: the label's
    long form on plot axes; `scale_exponent`: printed values are multiplied by 10**it (KID x
    1e3); `scopes`: the scope kinds it is measured at (ALL, GROUP, CLASS, MATCHED);
    `neighbourhood`: its value depends on the precision/recall k, which its column label names;
    `in_notes`: its notes go to the report's Notes (off where a table's caption already says
    what every note would repeat)."""
    name: str
    direction: str
    label: str
    description: str = ""
    scale_exponent: int = 0
    scopes: tuple[str, ...] = (ALL, GROUP, CLASS)
    neighbourhood: bool = False
    in_notes: bool = True

    def __post_init__(self):
        if self.direction not in (LOWER, HIGHER, NONE):
            raise ValueError(f"metric {self.name!r}: direction must be {LOWER!r}, {HIGHER!r} or {NONE!r}, "
                             f"got {self.direction!r}")

    @property
    def scale(self) -> float:
        """The factor printed values are multiplied by."""
        return 10.0 ** self.scale_exponent

    @property
    def scaled_label(self) -> str:
        """The label with its display scale, e.g. 'KID x 1e3'."""
        return f"{self.label} x 1e{self.scale_exponent}" if self.scale_exponent else self.label

    def axis_label(self, gloss: str = "") -> str:
        """A plot axis: the description (or label), a gloss and which way is better, e.g.
        'FID (lower is better)', 'recall (coverage of the real images; higher is better)'."""
        notes = [gloss] * bool(gloss) + [f"{self.direction} is better"] * (self.direction != NONE)
        return (self.description or self.label) + (f" ({'; '.join(notes)})" if notes else "")


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add a metric to the table (a name may be declared once)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is declared twice in the metric table")
    METRICS[metric.name] = metric
    return metric


for _metric in (
    Metric("fid", LOWER, "FID", scopes=(ALL, GROUP, CLASS, MATCHED)),
    Metric("kid_mean", LOWER, "KID", scale_exponent=3, scopes=(ALL, GROUP, CLASS, MATCHED)),
    Metric("kid_std", NONE, "KID sd over subsets", scale_exponent=3, in_notes=False),  # in no table
    Metric("kid_subset_size", NONE, "KID subset size"),
    Metric("precision", HIGHER, "precision", scopes=(ALL, GROUP, CLASS, MATCHED), neighbourhood=True),
    Metric("recall", HIGHER, "recall", scopes=(ALL, GROUP, CLASS, MATCHED), neighbourhood=True),
    Metric("fid_infinity", LOWER, "FID_inf", scopes=(ALL, GROUP)),
    Metric("is_mean", HIGHER, "IS", scopes=(ALL,)),
    Metric("is_std", NONE, "IS sd over splits", scopes=(ALL,)),
    Metric("accuracy", HIGHER, "acc", "classifier accuracy of the samples"),
    # Neither direction is a verdict: 0 is one label per class, the right one or not.
    Metric("label_entropy", NONE, "label entropy"),
    Metric("misclassified_into", LOWER, "misclassified into"),
    Metric("cas", HIGHER, "CAS"),
    Metric("near_copy_share", LOWER, "near-copy share", scopes=(CLASS,), in_notes=False),
    # How often the near-copy rule fires on images that cannot be copies: a yardstick, no verdict.
    Metric("near_copy_share_heldout", NONE, "held-out", scopes=(CLASS,), in_notes=False),
    Metric("nn_distance_median", NONE, "median nearest-training distance", scopes=(CLASS,)),
    Metric("nn_distance_median_heldout", NONE, "held-out median nearest-training distance", scopes=(CLASS,)),
    Metric("near_copy_threshold", NONE, "near-copy threshold", scopes=(CLASS,), in_notes=False),
    Metric("augment_top1", HIGHER, "top-1"),
):
    register(_metric)

# The headline numbers: the main table's, the per-class table's, the leaderboard's and the
# summary `cbdm evaluate` prints.
HEADLINE = ("fid", "kid_mean", "precision", "recall", "accuracy")


# --- metric names -----------------------------------------------------------------------------

def base_name(name: str) -> str:
    """The table entry a recorded metric name belongs to: 'fid@matched' -> 'fid',
    'misclassified_into:head' -> 'misclassified_into'."""
    return name.removesuffix(MATCHED_SUFFIX).split(ARGUMENT_SEPARATOR, 1)[0]


def metric(name: str) -> Metric:
    """The table entry of a recorded metric name; a MetricError naming it if there is none."""
    found = METRICS.get(base_name(name))
    if found is None:
        raise MetricError(f"metric {name!r} is not in the metric table (cbdm/records.py): declare its "
                          f"direction, label and scopes there with register(Metric(...)); known: "
                          f"{', '.join(METRICS)}")
    return found


def is_matched(name: str) -> bool:
    """Whether a recorded metric name is a value at matched sample size."""
    return name.endswith(MATCHED_SUFFIX)


def matched(name: str) -> str:
    """The recorded name of a metric at matched sample size: 'fid' -> 'fid@matched'."""
    if MATCHED not in metric(name).scopes:
        raise MetricError(f"metric {name!r} is not measured at matched sample size (its scopes in "
                          f"cbdm/records.py: {', '.join(metric(name).scopes)})")
    return name + MATCHED_SUFFIX


def with_argument(name: str, argument: str) -> str:
    """A metric name with its argument, e.g. ('misclassified_into', 'head') -> 'misclassified_into:head'."""
    return f"{metric(name).name}{ARGUMENT_SEPARATOR}{argument}"


def misclassified_into(group: str) -> str:
    """The metric: share of a scope's samples the classifier puts in another class of `group`."""
    return with_argument("misclassified_into", group)


def metrics_at(scope_kind: str) -> list[str]:
    """The metrics the table measures at a scope kind, in table order."""
    return [name for name, m in METRICS.items() if scope_kind in m.scopes]


def direction(name: str) -> str:
    """LOWER, HIGHER or NONE: which way a recorded metric is better."""
    return metric(name).direction


def scale(name: str) -> float:
    """The factor a recorded metric's printed values are multiplied by (1000 for KID)."""
    return metric(name).scale


def label(name: str, k: int | None = None) -> str:
    """A column label: the table's label, with the precision/recall neighbourhood where it has one."""
    m = metric(name)
    return f"{m.label} (k={k})" if k is not None and m.neighbourhood else m.label


# --- scopes -----------------------------------------------------------------------------------

def class_scope(c: int) -> str:
    """The scope of one class: 3 -> 'class 3'."""
    return f"{CLASS_PREFIX}{int(c)}"


def is_class(scope: str) -> bool:
    """Whether a scope is a single class."""
    return scope.startswith(CLASS_PREFIX)


def class_of(scope: str) -> int:
    """The class of a class scope: 'class 3' -> 3; a ValueError for other scopes."""
    if not is_class(scope):
        raise ValueError(f"scope {scope!r} is not a class scope ({CLASS_PREFIX!r}<index>)")
    return int(scope[len(CLASS_PREFIX):])


def scope_kind(scope: str, name: str = "") -> str:
    """ALL, CLASS, MATCHED (a group at matched sample size, by the metric's name) or GROUP."""
    if scope == ALL:
        return ALL
    if is_class(scope):
        return CLASS
    return MATCHED if is_matched(name) else GROUP


def scopes(groups: dict[str, list[int]], num_classes: int) -> list[tuple[str, list[int]]]:
    """(name, classes): 'all', each group, then each class as 'class <c>'."""
    return ([(ALL, list(range(num_classes)))] + list(groups.items())
            + [(class_scope(c), [c]) for c in range(num_classes)])


# --- records ----------------------------------------------------------------------------------

class Record(TypedDict):
    """One measured number with the sample sizes behind it: `value` None means not computed,
    and `note` says why; `sd` and `ci_low`/`ci_high` are a spread computed within the run."""
    scope: str
    metric: str
    value: float | None
    n_gen: int
    n_ref: int
    note: str
    sd: float | None
    ci_low: float | None
    ci_high: float | None


def _as_float(value) -> float | None:
    return None if value is None else float(value)


def _finite(scope: str, name: str, numbers: dict) -> None:
    """A MetricError naming the metric, scope and field for a NaN or inf: a number that could not be
    computed is recorded as None with a note, which the report shows as n/a with its reason."""
    bad = {key: v for key, v in numbers.items() if v is not None and not math.isfinite(v)}
    if bad:
        raise MetricError(f"{name} at {scope!r} is not finite ({bad}): record a number that cannot be computed "
                          f"as None with a note saying why")


def record(scope: str, name: str, value, n_gen, n_ref, note: str = "", sd=None, ci=(None, None)) -> Record:
    """A Record of a metric the table declares at this kind of scope (a MetricError otherwise)."""
    kind = scope_kind(scope, name)
    if kind not in metric(name).scopes:
        raise MetricError(f"metric {name!r} is not measured at {kind} scopes like {scope!r} (its scopes in "
                          f"cbdm/records.py: {', '.join(metric(name).scopes)})")
    value, sd, ci = _as_float(value), _as_float(sd), tuple(map(_as_float, ci))
    _finite(scope, name, {"value": value, "sd": sd, "ci_low": ci[0], "ci_high": ci[1]})
    return Record(scope=scope, metric=name, value=value, n_gen=int(n_gen), n_ref=int(n_ref), note=note, sd=sd,
                  ci_low=ci[0], ci_high=ci[1])


# A metrics file's place in a suite:
# metrics/<dataset>/IF<imb>/<variant>/seed<seed>/w<guidance>-s<sample_seed>/<protocol>.json
METRICS_PLACE = re.compile(r"metrics/(?P<dataset>[^/]+)/IF(?P<imbalance_factor>[^/]+)/(?P<variant>[^/]+)/"
                           r"seed(?P<seed>\d+)/w(?P<guidance>[^/]+)-s(?P<sample_seed>\d+)/(?P<protocol>[^/]+)\.json$")


def read_metrics(path) -> dict:
    """A metrics file's contents; InputError where it lies at a suite's place of another cell than
    the one it records (a file copied over another's): the leaderboard counted it as a second run
    of its own cell and the cell of its place vanished. A file outside that layout is not checked."""
    data = read_json(path)
    place = METRICS_PLACE.search(Path(path).as_posix())
    if place is None:
        return data
    cell = data.get("cell", {})
    recorded = {key: cell.get(key) for key in place.groupdict()}
    for key in ("imbalance_factor", "guidance"):
        if isinstance(recorded[key], (int, float)):
            recorded[key] = factor_label(recorded[key])
    check_recorded(path, {key: str(value) for key, value in recorded.items()}, place.groupdict(),
                   holds="holds the metrics of", needs="its place is that of", cause="it was copied or moved")
    return data
