"""Stage 6: per-run metrics -> comparison tables (CSV, Markdown, LaTeX) and plots.

Runs of a variant (training seeds x sampling seeds) are aggregated to mean, sd over runs and the
number of runs; intervals computed inside a run (matched-n subsets, KID bootstrap) are averaged
over runs. Every printed number carries the sample sizes it came from.

The report is made in named steps: `load_report` reads every input file once into a `Report`
(runs, aggregate, manifest, confusions, augmentation runs), whose properties are the derived
views (the main protocol at the chosen guidance, the paired comparisons, the paper table);
`SECTIONS` lists, in printed order, the functions that turn it into report sections (tables as
data, cbdm.tables.Section); `write_outputs` writes the CSV files, the rendered tables and the
figures. What a metric is called, how it is scaled and which way is better comes from the
metric table (cbdm.records).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np
import pandas as pd

from . import plots, records, tables
from .dataset import read_manifest
from .io import atomic_path, read_json, rebuild
from .labels import factor_label, same_factor
from .leaderboard import NOT_RECORDED, describe_evaluation, describe_features
from .phenomenon import group_gap, leakage_excess
from .records import class_scope
from .statistics import compare_to_baseline, sample_sd, seed_variance
from .tables import Section, scale_label, significant

# The main table's metrics, per scope, and the per-class table's: the table's headline numbers.
MAIN_METRICS = records.HEADLINE
# What the matched-n section shows of every group (each at its records.matched() name).
MATCHED_COLUMNS = ("fid", "precision", "recall")
# The overlap diagnostics' metrics, each for all classes and every group.
OVERLAP_METRICS = ("accuracy", "cas", "label_entropy")
# The HTML pages (report items) the sections are shown on, besides table.html with all of them.
HTML_PAGES = {"main": "Main tables", "per_class": "Per-class table", "diagnostics": "Overlap and memorization",
              "comparisons": "Comparisons", "data": "Training data"}


class ReportError(RuntimeError):
    """The report cannot be rendered as asked; the message names what is missing."""


@dataclass(frozen=True)
class ReportFiles:
    """The files one report reads, each once. `sample_files`: the sample set shown per variant;
    `sample_origins`: what each of them must record it is of (cbdm.origins.sample_origin), since
    the figures show its images as that variant's; `loss_logs`: the training loss of each built-in
    variant; `augmentation_files`: the rows of the augmentation experiment (none: not run);
    `train_origin`: what the training set and its manifest must record (cbdm.dataset.data_origin),
    so that one drawn with other settings is not shown as this one."""
    metric_files: list[str]
    diagnostic_files: list[str]
    sample_files: dict[str, str]
    sample_origins: dict[str, dict]
    train_npz: str
    loss_logs: dict[str, str]
    manifest_json: str
    augmentation_files: list[str] = field(default_factory=list)
    heldout_json: str | None = None  # the classifier's rates on the held-out images (cbdm.phenomenon)
    train_origin: dict | None = None


@dataclass(frozen=True)
class ReportSettings:
    """How the report is made, resolved from the config by the workflow (the report rule's
    params carry these names). `variants`: the declared variants in config order, which the
    tables keep; `protocol`: the main table's; `baseline`: the variant the others are compared
    with; `protocol_guidance`: each variant's declared (first listed) guidance per protocol;
    `sampling`: each variant's sampling settings under the main protocol; `published`: the
    registry entries of this dataset; `expected_cells`: every evaluation the table needs."""
    title: str
    variants: list[str]
    groups: dict
    overlap: dict | None
    evaluation: dict
    protocol: str
    baseline: str
    protocol_guidance: dict[str, dict[str, float]]
    sampling: dict[str, dict]
    features: dict
    published: list[dict]
    expected_cells: list[dict]

    @classmethod
    def from_params(cls, params) -> ReportSettings:
        """The settings from an object with one attribute per field (a rule's params)."""
        return cls(**{f.name: getattr(params, f.name) for f in fields(cls)})


# --- collecting and aggregating ---------------------------------------------------------------

def records_frame(files: list[dict]) -> pd.DataFrame:
    """One row per (run, scope, metric) of read metrics files, with the run's cell columns."""
    return pd.DataFrame([{**data["cell"], **r} for data in files for r in data["records"]])


def collect_records(paths: list[str]) -> pd.DataFrame:
    """One row per (run, scope, metric) of the metrics files at `paths`."""
    return records_frame([records.read_metrics(path) for path in paths])


def check_complete(runs: pd.DataFrame, expected: list[dict]) -> None:
    """Refuse to render a partial table: every expected evaluation must have its metrics."""
    have = {(r.variant, int(r.seed), factor_label(float(r.guidance)), int(r.sample_seed), r.protocol)
            for r in runs[["variant", "seed", "guidance", "sample_seed", "protocol"]].drop_duplicates().itertuples()}
    missing = [c for c in expected if (c["variant"], int(c["seed"]), factor_label(float(c["guidance"])),
                                       int(c["sample_seed"]), c["protocol"]) not in have]
    if missing:
        listed = "\n".join(f"  {c}" for c in missing)
        raise ReportError(f"{len(missing)} evaluation(s) have no metrics; the table would be partial:\n{listed}\n"
                          f"Run the workflow to completion (snakemake ... all) before the report.")


# What a metrics file's cell records of its protocol and of how it was measured: every file of
# one report must agree on it, or its tables would average unlike numbers into one cell.
PROTOCOL_KEYS = ("labels", "num_samples", "reference")
MEASURED_KEYS = ("features", "extractor", "evaluation")


def _expected_measurement(key: str, settings: ReportSettings, said: list[str]) -> str:
    """What the config says a file records under `key`, or (the extractor's label, which only
    the features file knows) what most files record."""
    if key == "evaluation":
        return describe_evaluation(settings.evaluation)
    if key == "features":
        return describe_features(settings.features)
    return max(set(said), key=said.count)


def measurement_mismatches(metrics: dict[str, dict], settings: ReportSettings) -> list[str]:
    """One line per metrics file whose protocol or measurement (cbdm.leaderboard.measurement)
    is not the one of the config and the other files. Files that recorded none (written before
    cells did) are checked only against files that did."""
    lines = []
    for path, data in metrics.items():
        spec = settings.evaluation["protocols"].get(data["cell"]["protocol"], {})
        lines += [f"{path}: protocol {data['cell']['protocol']!r} {key} {data['cell'][key]!r}, the config's "
                  f"{spec[key]!r}" for key in PROTOCOL_KEYS
                  if key in data["cell"] and key in spec and data["cell"][key] != spec[key]]
    for key in MEASURED_KEYS:
        said = {path: data["cell"].get(key, NOT_RECORDED) for path, data in metrics.items()}
        if set(said.values()) == {NOT_RECORDED}:
            continue
        expected = _expected_measurement(key, settings, list(said.values()))
        lines += [f"{path}: {key} {value!r}, not {expected!r}" for path, value in said.items() if value != expected]
    return lines


def check_one_measurement(metrics: dict[str, dict], settings: ReportSettings) -> None:
    """Refuse metrics files of another protocol or measurement than the config's and the other
    files' (a file kept from earlier settings): their numbers would be averaged with the rest
    under the config's labels."""
    lines = measurement_mismatches(metrics, settings)
    if lines:
        listed = "\n".join(f"  {line}" for line in lines)
        raise ReportError(f"{len(lines)} metrics file(s) were not measured as the rest and the config say; the "
                          f"tables would average unlike numbers:\n{listed}\nFor each, "
                          f"{rebuild('<file>')}.")


def check_sampled_as_declared(metrics: list[dict], paths: list[str], settings: ReportSettings) -> None:
    """Refuse metrics of the main protocol whose cell records another sampler or step count than
    the config gives its variant: after a config edit that Snakemake did not redraw the samples
    for (--rerun-triggers mtime), the report labelled them with the new settings. Cells written
    before they recorded the sampler are not checked."""
    for path, data in zip(paths, metrics):
        cell, declared = data["cell"], settings.sampling.get(data["cell"]["variant"])
        if cell["protocol"] != settings.protocol or declared is None or "sampler" not in cell:
            continue
        drawn, said = f"{cell['sampler']} {cell['steps']} steps", f"{declared['sampler']} {declared['steps']} steps"
        if drawn != said:
            raise ReportError(f"{path} was measured on samples drawn with {drawn}, but the config says {said} for "
                              f"variant {cell['variant']}: the samples were not redrawn after the config changed "
                              f"(e.g. under --rerun-triggers mtime); run the same command without it, or add "
                              f"`--forcerun sample`")


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and run count per (protocol, variant, guidance, scope, metric) over training and
    sampling seeds; a metric missing in some run is reported with the runs that have it and the
    notes that explain the rest."""
    keys = ["protocol", "variant", "guidance", "scope", "metric"]

    def summarise(group: pd.DataFrame) -> pd.Series:
        values = group["value"].dropna()
        return pd.Series({
            "mean": values.mean() if len(values) else np.nan,
            "sd": np.nan if len(values) < 2 else sample_sd(values),
            "runs": len(values),
            "runs_total": len(group),
            "ci_low": group["ci_low"].mean(),
            "ci_high": group["ci_high"].mean(),
            "n_gen": _one_or_range(group["n_gen"]),
            "n_ref": _one_or_range(group["n_ref"]),
            "note": "; ".join(sorted(set(n for n in group["note"] if n))),
        })

    return runs.groupby(keys, sort=False).apply(summarise, include_groups=False).reset_index()


def _one_or_range(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def chosen_guidance(agg: pd.DataFrame, protocol: str, choice: str, declared: dict[str, float]) -> dict[str, float]:
    """The guidance scale each variant is shown with: its declared (first listed) one, or the one
    with the lowest FID over all classes under `protocol`."""
    if choice == "declared":
        return dict(declared)
    fid = agg[(agg["protocol"] == protocol) & (agg["scope"] == "all") & (agg["metric"] == "fid")]
    best = {}
    for variant, sub in fid.groupby("variant", sort=False):
        sub = sub.dropna(subset=["mean"])
        best[variant] = float(sub.loc[sub["mean"].idxmin(), "guidance"]) if len(sub) else declared[variant]
    return best


def at_guidance(frame: pd.DataFrame, guidance: dict[str, float]) -> np.ndarray:
    """Rows of `frame` at the guidance scale chosen for their variant."""
    return np.array([same_factor(guidance[v], g) for v, g in zip(frame["variant"], frame["guidance"])], dtype=bool)


def augmentation_runs(files: list[dict]) -> pd.DataFrame:
    """Per classifier seed, scope and row, the held-out top-1 of the augmentation experiment (read
    files), as runs the report's aggregation and pairing read (the row as 'variant', seed as 'seed')."""
    rows = []
    for data in files:
        rows += [{"protocol": "augmentation", "variant": data["row"], "guidance": 0.0, "sample_seed": 0,
                  "generated": int(sum(data["generated_per_class"])), **r} for r in data["records"]]
    return pd.DataFrame(rows)


# --- the report's data, read once -------------------------------------------------------------

@dataclass
class Report:
    """Everything the report shows, read once; the derived views are computed on first use."""
    settings: ReportSettings
    files: ReportFiles
    runs: pd.DataFrame  # metrics and diagnostics of every run, variants in config order
    manifest: dict
    confusions: list[tuple[dict, np.ndarray]]  # (cell, confusion matrix) of every metrics file
    augmentation: pd.DataFrame  # per-seed runs of the augmentation experiment; empty: not run
    heldout: list[dict]  # the held-out images' records (accuracy, misclassified-into rates); empty: none
    samples: dict[str, dict]  # the images shown per variant (plots.read_images), each checked for its origin
    train: dict  # the training images (plots.read_images)

    @cached_property
    def agg(self) -> pd.DataFrame:
        """Every run aggregated (see `aggregate`)."""
        return aggregate(self.runs)

    @cached_property
    def guidance(self) -> dict[str, float]:
        """The guidance scale each variant is shown with under the main protocol."""
        s = self.settings
        return chosen_guidance(self.agg, s.protocol, s.evaluation["guidance_choice"],
                               s.protocol_guidance[s.protocol])

    @cached_property
    def main_agg(self) -> pd.DataFrame:
        """The main protocol's aggregate, each variant at its chosen guidance."""
        shown = self.agg[at_guidance(self.agg, self.guidance)]
        return shown[shown["protocol"] == self.settings.protocol]

    @cached_property
    def main_runs(self) -> pd.DataFrame:
        """The main protocol's runs, each variant at its chosen guidance (what is paired)."""
        return self.runs[(self.runs["protocol"] == self.settings.protocol).to_numpy()
                         & at_guidance(self.runs, self.guidance)]

    @property
    def scopes(self) -> list[str]:
        """All classes, then every group."""
        return ["all", *self.settings.groups]

    @property
    def class_counts(self) -> list[int]:
        """Training images per class."""
        return self.manifest["class_counts"]

    @property
    def k(self) -> int:
        """The precision/recall neighbourhood size the column labels name."""
        return self.settings.evaluation["pr_neighborhood"]

    @cached_property
    def overlap_column(self) -> list[tuple[str, str, str]]:
        """The (label, scope, metric) of the overlap pair's leakage (e.g. tail->head); none without one."""
        overlap = self.settings.overlap
        if overlap is None:
            return []
        return [(f"{overlap['source']}->{overlap['target']}", overlap["source"],
                 records.misclassified_into(overlap["target"]))]

    @cached_property
    def extractor(self) -> str:
        """The feature extractor, with the Inception preprocessing in use where it is Inception."""
        features = self.settings.features
        return features["extractor"] + (f" ({features['inception_preprocessing']} preprocessing)"
                                        if features["extractor"] == "inception" else "")

    @cached_property
    def paper(self) -> pd.DataFrame:
        """Published numbers beside ours (see `paper_table`)."""
        return paper_table(self.main_agg, self.settings.published, self.settings.variants, self.settings.features)

    @cached_property
    def differences(self) -> pd.DataFrame:
        """Every variant minus the baseline on the compared (scope, metric) targets, paired by seeds."""
        groups = self.settings.groups
        targets = [(s, "fid") for s in self.scopes] + [("all", "recall"), ("all", "accuracy")]
        targets += [(s, "cas") for s in self.scopes] + [(g, records.matched("fid")) for g in groups]
        targets += [(scope, metric) for _, scope, metric in self.overlap_column]
        return compare_to_baseline(self.main_runs, self.settings.baseline, targets)

    @cached_property
    def variance(self) -> pd.DataFrame:
        """The spread of FID and recall over training and over sampling seeds."""
        return pd.concat([seed_variance(self.main_runs, s, m) for s, m in [("all", "fid"), ("all", "recall")]])


def load_report(files: ReportFiles, settings: ReportSettings) -> Report:
    """Read every input once; refuse a partial table (ReportError), or a sample set of another
    cell or of older settings than its variant's (InputError), before anything is written."""
    metrics = [records.read_metrics(path) for path in files.metric_files]
    runs = records_frame(metrics)
    check_complete(runs, settings.expected_cells)
    check_one_measurement(dict(zip(files.metric_files, metrics)), settings)
    check_sampled_as_declared(metrics, files.metric_files, settings)
    runs = pd.concat([runs, collect_records(files.diagnostic_files)], ignore_index=True)
    runs = runs.sort_values("variant", key=lambda v: v.map(settings.variants.index), kind="stable")
    samples = {v: plots.read_images(path, files.sample_origins[v]) for v, path in files.sample_files.items()}
    return Report(settings=settings, files=files, runs=runs,
                  manifest=read_manifest(files.manifest_json, files.train_origin),
                  confusions=[(data["cell"], np.asarray(data["confusion"])) for data in metrics],
                  augmentation=augmentation_runs([read_json(path) for path in files.augmentation_files]),
                  heldout=read_json(files.heldout_json)["records"] if files.heldout_json else [],
                  samples=samples, train=plots.read_images(files.train_npz, files.train_origin))


# --- tables -----------------------------------------------------------------------------------

def format_value(row, metric: str) -> str:
    """mean [± sd over runs] [[interval]] [(k of n runs)], at the metric table's display scale (KID x 1e3)."""
    if math.isnan(row["mean"]):
        return "n/a"
    scale = records.scale(metric)
    text = significant(row["mean"] * scale)
    if row["runs"] > 1 and not math.isnan(row["sd"]):
        text += f" ± {significant(row['sd'] * scale, 2)}"
    if not math.isnan(row["ci_low"]):
        text += f" [{significant(row['ci_low'] * scale)}, {significant(row['ci_high'] * scale)}]"
    total = row.get("runs_total", row["runs"])
    if row["runs"] < total:  # the others did not compute it (the notes say why): the mean is of fewer
        text += f" ({int(row['runs'])} of {int(total)} runs)"
    return text


def sample_sizes(row) -> str:
    """The 'n' of a value: generated images, or generated vs reference images."""
    return row["n_gen"] if row["n_ref"] == "0" else f"{row['n_gen']} vs {row['n_ref']}"


def scope_columns(scopes: list[str], metrics: list[str], k: int | None = None) -> list[tuple[str, str, str]]:
    """(label, scope, metric) of each metric for each scope, scope by scope: 'FID all', 'FID head'."""
    return [(f"{records.label(m, k)} {scope}", scope, m) for scope in scopes for m in metrics]


def wide_table(agg: pd.DataFrame, columns: list[tuple[str, str, str]],
               sampling: dict[str, dict] | None = None) -> pd.DataFrame:
    """Variants as rows; one value column and one 'n ...' column per (label, scope, metric).
    `agg` holds one protocol and one guidance per variant; `sampling`: each variant's settings,
    which say whether its guidance was declared ('n/a' where not)."""
    rows = []
    for variant, sub in agg.groupby("variant", sort=False):
        row = {"variant": variant, "guidance": shown_scale(sub["guidance"].iloc[0], (sampling or {}).get(variant, {}))}
        for label, scope, metric in columns:
            hit = sub[(sub["scope"] == scope) & (sub["metric"] == metric)]
            if hit.empty:
                continue
            row[label] = format_value(hit.iloc[0], metric)
            row[f"n {label}"] = sample_sizes(hit.iloc[0])
        row["runs"] = int(sub["runs_total"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def class_group(c: int, groups: dict) -> str:
    """The groups a class belongs to, comma-separated."""
    return ", ".join(name for name, classes in groups.items() if c in classes)


def per_class_table(agg: pd.DataFrame, class_counts: list[int], groups: dict) -> pd.DataFrame:
    """One row per class and variant (class, group, training count): FID, KID, precision,
    recall and classifier accuracy of the samples of that class."""
    rows = []
    for c, count in enumerate(class_counts):
        sub = agg[agg["scope"] == class_scope(c)]
        for variant, v in sub.groupby("variant", sort=False):
            row = {"class": c, "group": class_group(c, groups), "training images": count, "variant": variant}
            for metric in MAIN_METRICS:
                hit = v[v["metric"] == metric]
                if len(hit):
                    label = records.label(metric)
                    row[label] = format_value(hit.iloc[0], metric)
                    row[f"n {label}"] = sample_sizes(hit.iloc[0])
            rows.append(row)
    return pd.DataFrame(rows)


def class_metric_table(agg: pd.DataFrame, class_counts: list[int], metric: str,
                       shared: tuple[str, str] | None = None) -> pd.DataFrame:
    """Classes as rows (with their training count), one column per variant of `metric`;
    `shared`: (column, metric) of a quantity the variants share, shown once (e.g. the held-out
    images' near-copy share, the rate at which the audit's rule fires on non-copies)."""
    rows = []
    for c, count in enumerate(class_counts):
        row = {"class": c, "training images": count}
        sub = agg[agg["scope"] == class_scope(c)]
        for variant, v in sub[sub["metric"] == metric].groupby("variant", sort=False):
            row[variant] = format_value(v.iloc[0], metric)
            row[f"n {variant}"] = v.iloc[0]["n_gen"]
        hit = sub[sub["metric"] == shared[1]] if shared else []
        if len(hit):
            row[shared[0]] = format_value(hit.iloc[0], shared[1])
            row[f"n {shared[0]}"] = hit.iloc[0]["n_gen"]
        rows.append(row)
    return pd.DataFrame(rows)


def data_table(agg: pd.DataFrame, class_counts: list[int], groups: dict) -> pd.DataFrame:
    """The long-tailed training set per class, and the reference images the main protocol used."""
    total = sum(class_counts)
    fid = agg[agg["metric"] == "fid"].drop_duplicates("scope").set_index("scope")
    return pd.DataFrame([{"class": c, "group": class_group(c, groups), "training images": n,
                          "share of training set": f"{n / total:.1%}",
                          "reference images": fid["n_ref"].get(class_scope(c), "")}
                         for c, n in enumerate(class_counts)])


def protocol_card(r: Report) -> list[tuple[str, str]]:
    """(item, what) pairs: everything a reader needs to know about how the numbers were made."""
    s, counts = r.settings, r.class_counts
    card = [("suite", s.title),
            ("training set", f"{r.manifest['total']} images in {len(counts)} classes, "
                             f"{max(counts)} (largest class) to {min(counts)} (smallest)"),
            ("class groups", "; ".join(f"{g}: classes {', '.join(map(str, c))}" for g, c in s.groups.items()))]
    card += [(f"protocol {name}" + (" (main table)" if name == s.protocol else ""), protocol_line(name, spec))
             for name, spec in s.evaluation["protocols"].items()]
    card += [("features", r.extractor),
             ("guidance shown", f"{s.evaluation['guidance_choice']} scale per variant"),
             ("training seeds", ", ".join(map(str, sorted(r.runs["seed"].unique())))),
             ("sampling seeds", ", ".join(map(str, sorted(r.runs["sample_seed"].unique())))),
             ("baseline", s.baseline)]
    card += [(f"variant {v}", sampling_line(s.sampling[v], r.guidance[v])) for v in s.variants]
    return card


def sampling_line(sampling: dict, guidance: float) -> str:
    """How a variant's samples were drawn; an imported set only says at which guidance label it
    was declared, if it was (its sampler and steps are its makers', unknown here)."""
    if sampling["sampler"] == "imported":
        said = f"declared guidance {scale_label(guidance)}" if guidance_declared(sampling) else "guidance not declared"
        return f"imported samples ({said}; sampler and steps not known)"
    return f"{sampling['sampler']} {sampling['steps']} steps, guidance {scale_label(guidance)}"


def guidance_declared(sampling: dict) -> bool:
    """Whether a variant's guidance scale is known: false for an imported set given as a plain
    path (cbdm.config.imported_settings), whose cells carry the suite's scale as a label only."""
    return sampling.get("guidance_declared", True)


def shown_scale(guidance, sampling: dict) -> str:
    """A variant's guidance scale as its tables print it: 'n/a' where it was not declared."""
    return scale_label(guidance) if guidance_declared(sampling) else "n/a"


def fold_sample_sizes(table: pd.DataFrame) -> pd.DataFrame:
    """Move every 'n ...' column into its value column's header when it is the same in every
    row, else into the cells, so that each printed number shows its n."""
    out = table.copy()
    for col in [c for c in table.columns if c.startswith("n ")]:
        value_col = col[2:]
        if table[col].nunique(dropna=False) == 1:
            out = out.rename(columns={value_col: f"{value_col} (n={table[col].iloc[0]})"})
        else:
            out[value_col] = [f"{v} (n={n})" for v, n in zip(table[value_col], table[col])]
        out = out.drop(columns=col)
    return out


def _interval(low, high, scale: float) -> str:
    """'[low, high]' at `scale`, blank without an interval (one run)."""
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return ""
    return f"[{low * scale:+.3g}, {high * scale:+.3g}]"


def format_differences(diffs: pd.DataFrame) -> pd.DataFrame:
    """Paired differences as printed: at each metric's display scale, signed, 3 significant digits."""
    if diffs.empty:
        return diffs
    out = diffs.copy()
    scale = [records.scale(m) for m in out["metric"]]
    out["difference"] = ["n/a" if d is None or math.isnan(d) else f"{d * s:+.3g}" for d, s in zip(out["diff"], scale)]
    out["95% CI (t)"] = [_interval(lo, hi, s) for lo, hi, s in zip(out["ci_low"], out["ci_high"], scale)]
    return out[["variant", "baseline", "scope", "metric", "difference", "95% CI (t)", "pairs", "verdict"]]


def not_comparable(mine: pd.Series, entry: dict, features: dict) -> str:
    """Why our number and a published one measure different things ('' where nothing says so):
    another feature extractor, another number of samples (FID's bias depends on n), or an
    Inception preprocessing the entry states and ours is not. A difference is printed only
    where this is empty."""
    if features["extractor"] != "inception":
        return f"not comparable: ours on {features['extractor']} features, published on Inception"
    if entry["samples"] is None:
        return "not comparable: the published number's sample count is not stated"
    if str(mine["n_gen"]) != str(entry["samples"]):
        return f"not comparable: ours on {mine['n_gen']} samples, published on {entry['samples']}"
    stated = entry["inception_preprocessing"]
    if stated in ("pytorch_fid", "torch_fidelity") and stated != features["inception_preprocessing"]:
        return f"not comparable: ours with {features['inception_preprocessing']} preprocessing, published {stated}"
    return ""


def paper_table(agg: pd.DataFrame, published: list[dict], variants: list[str], features: dict) -> pd.DataFrame:
    """Published numbers beside ours (`agg`: main protocol, chosen guidance): one row per
    registry entry, then one per variant of ours that no entry covers. The difference column
    holds a number only where the two were measured alike (`not_comparable`)."""
    def ours(variant, metric):
        hit = agg[(agg["variant"] == variant) & (agg["scope"] == "all") & (agg["metric"] == metric)]
        return hit.iloc[0] if len(hit) else None

    rows, covered = [], set()
    for entry in published:
        mine = ours(entry["variant"], entry["metric"]) if entry["variant"] in variants else None
        covered.add((entry["variant"], entry["metric"]))
        rows.append({
            "method": entry["method"], "variant": entry["variant"] or "", "metric": entry["metric"],
            "published": "not available" if entry["value"] is None else f"{entry['value']:g}",
            "ours": "not run" if mine is None else format_value(mine, entry["metric"]),
            "n ours": "" if mine is None else f"{mine['n_gen']} vs {mine['n_ref']}, {mine['runs']} run(s)",
            "ours - published": ("" if mine is None or entry["value"] is None or math.isnan(mine["mean"])
                                 else not_comparable(mine, entry, features)
                                 or f"{mine['mean'] - entry['value']:+.3g}"),
            "status": entry["status"], "published protocol": published_protocol(entry),
            "reference": entry["reference"]})
    for variant in variants:
        mine = ours(variant, "fid")
        if (variant, "fid") not in covered and mine is not None:
            rows.append({"method": variant, "variant": variant, "metric": "fid", "published": "not available",
                         "ours": format_value(mine, "fid"),
                         "n ours": f"{mine['n_gen']} vs {mine['n_ref']}, {mine['runs']} run(s)",
                         "ours - published": "", "status": "", "published protocol": "", "reference": ""})
    return pd.DataFrame(rows)


def published_protocol(entry: dict) -> str:
    """How a published number was measured: samples, reference statistics, Inception input."""
    samples = "samples not stated" if entry["samples"] is None else f"{entry['samples']} samples"
    reference = entry["reference_statistics"] or "reference statistics not stated"
    return (f"{samples}; vs {reference}; Inception preprocessing: {entry['inception_preprocessing']}; "
            f"{entry['protocol']}")


def protocol_rows(agg: pd.DataFrame, protocol: str, choice: str, declared: dict[str, float]) -> pd.DataFrame:
    """The rows of one protocol, each variant at its guidance scale chosen under that protocol."""
    rows = agg[agg["protocol"] == protocol]
    return rows[at_guidance(rows, chosen_guidance(rows, protocol, choice, declared))]


def protocol_caption(spec: dict) -> str:
    """Which variants a protocol samples with their own (e.g. published) settings."""
    own = spec.get("sampling") or {}
    return "; ".join(f"{v}: " + ", ".join(f"{k} {val}" for k, val in o.items()) for v, o in own.items())


def protocol_line(name: str, spec: dict) -> str:
    """One protocol in words: samples, labels, reference images."""
    return (f"protocol '{name}': {spec['num_samples']} samples with {spec['labels']} labels, "
            f"compared with the {spec['reference']} images")


# --- sections, in printed order ---------------------------------------------------------------

def main_sections(r: Report) -> list[Section]:
    """The main table (main protocol), then the same table under every other protocol."""
    s = r.settings
    protocols, choice = s.evaluation["protocols"], s.evaluation["guidance_choice"]
    columns = scope_columns(r.scopes, list(MAIN_METRICS), r.k) + r.overlap_column
    main = Section(f"Main table: {protocol_line(s.protocol, protocols[s.protocol])}",
                   f"Each variant at its {choice} guidance scale. {records.metric('kid_mean').scaled_label}. "
                   f"acc: share of samples the classifier assigns to their own class. Lower is better for "
                   f"FID and KID, higher for precision, recall and acc.",
                   wide_table(r.main_agg, columns, s.sampling))
    paper = [Section("Paper comparison", "Published numbers (`published:` registry) beside ours.", r.paper,
                     paper_footer(r), "comparisons")] if s.published else []
    others = [Section(protocol_line(name, protocols[name]).capitalize(), protocol_caption(protocols[name]),
                      wide_table(protocol_rows(r.agg, name, choice, s.protocol_guidance[name]), columns,
                                 s.sampling))
              for name in protocols if name != s.protocol]
    return [main, *paper, *others]


def paper_footer(r: Report) -> str:
    """How our numbers beside the published ones were made."""
    s = r.settings
    how = "; ".join(f"{v}: {sampling_line(s.sampling[v], r.guidance[v])}" for v in s.variants)
    return (f"Ours: {protocol_line(s.protocol, s.evaluation['protocols'][s.protocol])}; {r.extractor} features; "
            f"{how}; {r.manifest['total']} training images.")


def matched_sections(r: Report) -> list[Section]:
    """Every group at the same number of images, where there are groups to compare."""
    groups, evaluation = r.settings.groups, r.settings.evaluation
    if len(groups) <= 1:
        return []
    columns = [(f"{records.label(m, r.k)} {g}", g, records.matched(m)) for g in groups for m in MATCHED_COLUMNS]
    return [Section("Class groups at matched n",
                    f"Every group evaluated on the same number of generated and reference images "
                    f"({evaluation['matched_fraction']:g} of the smallest group's), over "
                    f"{evaluation['matched_repeats']} random subsets: mean [2.5 %, 97.5 % of the "
                    f"subsets]. FID grows as n shrinks: compare these groups with each other, not "
                    f"with the main table.", wide_table(r.main_agg, columns, r.settings.sampling))]


def phenomenon_table(r: Report) -> pd.DataFrame:
    """Per variant: the overlap pair's FID gap at matched n and its leakage against the held-out rate."""
    source, target = r.settings.overlap["source"], r.settings.overlap["target"]
    gap = _by_variant(group_gap(r.main_runs, records.matched("fid"), low=target, high=source))
    leak = _by_variant(leakage_excess(r.main_runs, r.heldout, source, target))
    leak_metric = records.misclassified_into(target)
    held_n = next((h["n_gen"] for h in r.heldout if h["scope"] == source and h["metric"] == leak_metric), "")
    rows = []
    for variant in [v for v in r.settings.variants if v in set(r.main_runs["variant"])]:
        g = gap.loc[variant] if variant in gap.index else None
        k = leak.loc[variant] if variant in leak.index else None
        rows.append({
            "variant": variant, "runs": next((int(x["pairs"]) for x in (g, k) if x is not None), 0),
            f"n FID {source} - {target}": _n(r.main_agg, variant, source, records.matched("fid")) + " per group",
            f"n {source}->{target} samples": _n(r.main_agg, variant, source, leak_metric),
            f"n {source}->{target} held-out": held_n,
            f"FID {source} - {target}": "n/a" if g is None else f"{g['diff']:+.3g}",
            "95% CI (gap)": "" if g is None else _interval(g["ci_low"], g["ci_high"], 1.0),
            "gap verdict": NOT_COMPUTED if g is None else g["verdict"],
            f"{source}->{target} samples": "n/a" if k is None else _share(k["samples"], k["samples_sd"]),
            f"{source}->{target} held-out": "" if k is None else
            f"{_share(k['heldout'], None)} [{k['heldout_low'] * 100:.3g}, {k['heldout_high'] * 100:.3g}]",
            "95% CI (excess, pp)": "" if k is None else _interval(k["ci_low"], k["ci_high"], 100.0),
            "leakage verdict": NOT_COMPUTED if k is None else k["verdict"]})
    return pd.DataFrame(rows)


NOT_COMPUTED = "not computed (see the notes)"  # a verdict without its numbers: no run computed them


def _by_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """A per-variant result indexed by variant; empty (no column at all) where no run had numbers."""
    return frame.set_index("variant") if "variant" in frame.columns else pd.DataFrame()


def _n(agg: pd.DataFrame, variant: str, scope: str, metric: str) -> str:
    """The sample sizes of one aggregated cell, as the other tables print them ('' where absent)."""
    hit = agg[(agg["variant"] == variant) & (agg["scope"] == scope) & (agg["metric"] == metric)]
    return sample_sizes(hit.iloc[0]) if len(hit) else ""


def _share(mean: float, sd) -> str:
    """A rate as a percentage, with its sd over runs where there is one."""
    sd_text = "" if sd is None or (isinstance(sd, float) and math.isnan(sd)) else f" ± {round(sd * 100, 2):g}"
    return f"{mean * 100:.3g}{sd_text} %"


def phenomenon_sections(r: Report) -> list[Section]:
    """Whether each variant shows the long-tail problem: none without an overlap pair or held-out rates."""
    if r.settings.overlap is None or not r.heldout:
        return []
    source, target = r.settings.overlap["source"], r.settings.overlap["target"]
    return [Section(
        "The long-tail problem",
        f"Per variant, over its runs (paired by training and sampling seed): FID of the {source} group minus FID "
        f"of the {target} group at matched n (the matched-n records), with a t-based 95 % interval; and the share "
        f"of {source} samples the classifier assigns to a {target} class (mean ± sd over runs) against the same "
        f"share of the real held-out {source} images, which is the classifier's own error, with its exact 95 % "
        f"interval: 'above held-out' when the interval of the excess (samples - held-out, in percentage points, "
        f"holding both the spread over runs and the held-out rate's interval) lies above 0.",
        phenomenon_table(r), page="main")]


def per_class_sections(r: Report) -> list[Section]:
    """The per-class table of the headline metrics."""
    return [Section("Per-class table",
                    "One row per class and variant, with the class's training count and group: "
                    f"FID, {records.metric('kid_mean').scaled_label} [bootstrap 95 % interval], precision, recall "
                    "and classifier accuracy of the samples of that class.",
                    per_class_table(r.main_agg, r.class_counts, r.settings.groups), page="per_class")]


def overlap_sections(r: Report) -> list[Section]:
    """Overlap diagnostics for all classes and the groups, then label entropy per class."""
    overlap = r.settings.overlap
    columns = [c for m in OVERLAP_METRICS for c in scope_columns(r.scopes, [m])] + r.overlap_column
    explanation = ("acc: the balanced classifier's accuracy on the samples; CAS: accuracy on held-out "
                   "real images of a classifier trained on the samples only (mean over classes)"
                   + (f"; {overlap['source']}->{overlap['target']}: share of {overlap['source']} samples "
                      f"classified as a {overlap['target']} class" if overlap else "")
                   + "; label entropy: entropy (bits) of the classifier's predicted labels among one "
                     "generated class's samples, averaged over the scope's classes: 0 = all one label "
                     "(not necessarily the right one), higher = more mixed. Neither direction is a verdict "
                     "by itself: read it with acc.")
    return [Section("Overlap diagnostics", explanation, wide_table(r.main_agg, columns, r.settings.sampling),
                    page="diagnostics"),
            Section("Label entropy per class",
                    "Entropy (bits) of the predicted labels of each generated class's samples.",
                    class_metric_table(r.main_agg, r.class_counts, "label_entropy"), page="per_class")]


def memorization_sections(r: Report) -> list[Section]:
    """The memorization audit per class, with the held-out images' rate under the same rule."""
    threshold = r.settings.evaluation["memorization"]["relative_threshold"]
    return [Section("Memorization audit",
                    f"Share of generated images whose nearest training image of their class (pixel "
                    f"distance) is closer than {threshold} x the median held-out image's distance; "
                    f"'held-out': the same share for real held-out images, which cannot be copies.",
                    class_metric_table(r.main_agg, r.class_counts, "near_copy_share",
                                       shared=("held-out", "near_copy_share_heldout")), page="diagnostics")]


def augmentation_sections(r: Report) -> list[Section]:
    """The augmentation experiment: its table, the differences to real_only, the per-class table;
    one 'not run' line without it."""
    runs = r.augmentation
    if runs.empty:
        return [Section("Augmentation", "Not run (augmentation.enabled: false).", pd.DataFrame(), page="comparisons")]
    agg = aggregate(runs)
    metric = runs["metric"].iloc[0]
    table = wide_table(agg, [(f"top-1 {s}", s, metric) for s in r.scopes])
    generated = runs.groupby("variant")["generated"].first()
    table.insert(1, "filled images", [int(generated[v]) for v in table["variant"]])
    table = table.drop(columns="guidance")
    diffs = compare_to_baseline(runs, "real_only", [(s, metric) for s in r.scopes])
    return [Section("Augmentation",
                    f"Held-out top-1 accuracy (mean over classes) of a classifier trained on the real long-tailed "
                    f"set plus each variant's generated images filling every class (real_only: no generated "
                    f"images; real_oversampled: the fill made of copies of real images); mean ± sd over "
                    f"{runs['seed'].nunique()} classifier seed(s), the k-th trained on the fill of the variant's "
                    f"k-th training seed (cycling) and on the k-th draw of copies, so that the sd covers the "
                    f"generator and the draw too. n: training images vs held-out test images.",
                    table, page="comparisons"),
            Section("Augmentation: differences to real_only",
                    "Paired by classifier seed; a t-based 95 % interval over the seeds.", format_differences(diffs),
                    page="comparisons"),
            Section("Augmentation per class",
                    "Held-out top-1 accuracy of each class (mean ± sd over classifier seeds); n: the class's "
                    "training images, real plus generated.",
                    class_metric_table(agg, r.class_counts, metric), page="comparisons")]


def comparison_sections(r: Report) -> list[Section]:
    """Paired differences to the baseline and the spread over seeds."""
    imported = [v for v in r.settings.variants if r.settings.sampling[v]["sampler"] == "imported"]
    # Their runs share no randomness with the baseline's: the pairing is by seed number only.
    caveat = (f" Imported variants ({', '.join(imported)}) were made elsewhere: paired with the baseline by "
              f"seed number only, which shares no randomness." if imported else "")
    # Each variant is paired at the guidance the main table shows it with, which may differ from the baseline's.
    shown = ", ".join(f"{v} {shown_scale(w, r.settings.sampling[v])}" for v, w in r.guidance.items())
    return [Section(f"Differences to {r.settings.baseline}",
                    "Variant minus baseline, paired by training and sampling seed; a t-based 95 % "
                    "interval over the pairs; 'better'/'worse' when it excludes 0. Each variant at the "
                    f"guidance scale of the main table: {shown}." + caveat,
                    format_differences(r.differences), page="comparisons"),
            Section("Spread over seeds",
                    "sd over training seeds (of each seed's mean over sampling seeds) and pooled sd "
                    "over sampling seeds within a training seed; blank with a single seed.",
                    r.variance, page="comparisons")]


def data_sections(r: Report) -> list[Section]:
    """The training set per class and the main protocol's reference images."""
    return [Section("Training data", "The long-tailed training set per class and the reference images "
                    "of the main protocol.", data_table(r.main_agg, r.class_counts, r.settings.groups),
                    page="data")]


# The report's sections in printed order: each function returns its sections (none where it
# does not apply). A new section is a function here and one entry in this list.
SECTIONS = (main_sections, matched_sections, phenomenon_sections, per_class_sections, overlap_sections,
            memorization_sections, augmentation_sections, comparison_sections, data_sections)


def report_notes(agg: pd.DataFrame) -> list[str]:
    """The notes of the aggregate, less those a section's caption already explains (how values at
    matched n were drawn, and metrics the table keeps out of the notes)."""
    notes = agg[agg["note"] != ""][["protocol", "variant", "scope", "metric", "note"]].drop_duplicates()
    # A value at matched n that some run did not compute keeps its note: the caption gives no reason.
    shown = np.array([records.metric(m).in_notes and (not records.is_matched(m) or "not computed" in note)
                      for m, note in zip(notes["metric"], notes["note"])], dtype=bool)
    # One line per (metric, note): the same note on every variant and scope is said once, with where.
    lines = []
    for (metric, note), rows in notes[shown].groupby(["metric", "note"], sort=False):
        where = [", ".join(map(str, dict.fromkeys(rows[c]))) for c in ("protocol", "variant")]
        lines.append(f"{metric} ({' / '.join([*where, _scope_list(list(dict.fromkeys(rows['scope'])))])}): {note}")
    return lines


def _scope_list(scopes: list[str]) -> str:
    """Scopes as a short list: more than five classes are counted, not listed."""
    classes = [s for s in scopes if records.is_class(s)]
    if len(classes) <= 5:
        return ", ".join(scopes)
    return ", ".join([s for s in scopes if not records.is_class(s)] + [f"{len(classes)} classes"])


# --- writing ----------------------------------------------------------------------------------

def write_text(path, text: str) -> None:
    """A text file, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path, frame: pd.DataFrame) -> None:
    """A table as CSV, written atomically."""
    with atomic_path(path) as tmp:
        # Blank mean: not computed (see note); blank sd: a single run.
        frame.to_csv(tmp, index=False, na_rep="")


def write_tables(sections: list[Section], notes: list[str], outputs: dict, preamble: str,
                 card: list[tuple[str, str]], title: str) -> str:
    """`sections`, the main table first, as table.md, table.tex, table.html (all) and one HTML
    page per HTML_PAGES; each section's HTML is rendered once. Returns the Markdown."""
    printed = [s._replace(table=fold_sample_sizes(s.table)) for s in sections]
    markdown = tables.markdown(printed, preamble, card, notes)
    write_text(outputs["md"], markdown)
    write_text(outputs["tex"], tables.latex(printed, preamble, notes))
    intro = ("'n' is generated vs reference images; ± is the sd over runs (training x sampling seeds) where "
             "there are several; [..] an interval computed within each run. Click a column header to sort.")
    rendered = [tables.html_section(s, i) for i, s in enumerate(printed)]
    # On every page: they say why a cell is n/a, whichever page shows it.
    notes_html = [tables.html_table("<b>Notes</b>", pd.DataFrame({"note": notes}))] if notes else []
    write_text(outputs["html"], tables.html_page(title, intro, [tables.html_card(card), *rendered, *notes_html]))
    write_text(outputs["protocol"], tables.html_page(f"{title}: protocol", "", [tables.html_card(card)]))
    for page, heading in HTML_PAGES.items():
        shown = [html for s, html in zip(printed, rendered) if s.page == page]
        write_text(outputs[f"page_{page}"], tables.html_page(f"{title}: {heading.lower()}", intro,
                                                             (shown or ["<p>No table in this run.</p>"]) + notes_html))
    return markdown


def write_plots(r: Report, outputs: dict[str, str]) -> None:
    """Every figure of the report, from the data read once."""
    protocol, groups, counts = r.settings.protocol, r.settings.groups, r.class_counts
    plots.plot_per_class(r.main_agg, counts, groups, outputs["fid_vs_count"])
    plots.plot_precision_recall(r.main_agg, r.scopes, outputs["precision_recall"])
    plots.plot_groups(r.main_agg, r.scopes, outputs["groups"])
    plots.plot_guidance(r.agg[r.agg["protocol"] == protocol], outputs["guidance"])
    confusions = {}
    for cell, confusion in r.confusions:
        if cell["protocol"] == protocol and same_factor(r.guidance[cell["variant"]], cell["guidance"]):
            confusions[cell["variant"]] = confusions.get(cell["variant"], 0) + confusion
    plots.plot_confusions(confusions, groups, outputs["confusion"])
    plots.plot_sample_grids(r.samples, r.train, counts, outputs["samples"])
    plots.plot_memorization(r.samples, r.train, r.main_agg, counts, groups, outputs["memorization"])
    plots.plot_losses(r.files.loss_logs, outputs["loss"])


def write_outputs(r: Report, sections: list[Section], outputs: dict[str, str]) -> str:
    """The CSV files, the rendered tables and the figures; returns the Markdown tables."""
    title, manifest = r.settings.title, r.manifest
    write_csv(outputs["csv"], r.agg)
    write_csv(outputs["paper"], r.paper)
    write_csv(outputs["augmentation"], r.augmentation)
    write_csv(outputs["runs"], r.runs)
    write_csv(outputs["stats"], pd.concat([r.differences.assign(kind="paired difference"),
                                           r.variance.assign(kind="seed spread")]))
    preamble = (f"# {title}\n\nTraining set: {manifest['total']} images, class counts "
                f"{manifest['class_counts']}. 'n' is generated vs reference images; ± is the sd over "
                f"runs (training x sampling seeds) where there are several.")
    markdown = write_tables(sections, report_notes(r.agg), outputs, preamble, protocol_card(r), title)
    write_plots(r, outputs)
    return markdown


def build_report(files: ReportFiles, settings: ReportSettings, outputs: dict[str, str]) -> None:
    """Stage 6: read the runs once, lay out the sections, write every table and figure."""
    report = load_report(files, settings)
    sections = [section for make in SECTIONS for section in make(report)]
    print(write_outputs(report, sections, outputs), flush=True)
