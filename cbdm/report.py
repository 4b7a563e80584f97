"""Stage 6: per-run metrics -> comparison tables (CSV, Markdown, LaTeX) and plots.

Runs of a variant (training seeds x sampling seeds) are aggregated to mean, sd over runs and the
number of runs; intervals computed inside a run (matched-n subsets, KID bootstrap) are averaged
over runs. Every printed number carries the sample sizes it came from.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import plots, tables
from .io import atomic_path, read_json
from .labels import factor_label, same_factor
from .statistics import compare_to_baseline, seed_variance
from .tables import Section, scale_label, significant

MAIN_METRICS = {"fid": "FID", "kid_mean": "KID", "precision": "precision", "recall": "recall", "accuracy": "acc"}
MATCHED_METRICS = {"fid@matched": "FID", "precision@matched": "precision", "recall@matched": "recall"}


def with_k(labels: dict[str, str], k: int) -> dict[str, str]:
    """Column labels with the precision/recall neighbourhood size, e.g. 'recall (k=5)'."""
    return {m: f"{label} (k={k})" if m.startswith(("precision", "recall")) else label for m, label in labels.items()}
PER_CLASS_METRICS = MAIN_METRICS  # the per-class table shows the main table's metrics
# The HTML pages (report items) the sections are shown on, besides table.html with all of them.
HTML_PAGES = {"main": "Main tables", "per_class": "Per-class table", "diagnostics": "Overlap and memorization",
              "comparisons": "Comparisons", "data": "Training data"}


class ReportError(RuntimeError):
    """The report cannot be rendered as asked; the message names what is missing."""


# --- collecting and aggregating ---------------------------------------------------------------

def collect_records(files: list[str]) -> pd.DataFrame:
    """One row per (run, scope, metric), with the run's cell columns."""
    rows = []
    for path in files:
        data = read_json(path)
        rows += [{**data["cell"], **r} for r in data["records"]]
    return pd.DataFrame(rows)


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


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and run count per (protocol, variant, guidance, scope, metric) over training and
    sampling seeds; a metric missing in some run is reported with the runs that have it and the
    notes that explain the rest."""
    keys = ["protocol", "variant", "guidance", "scope", "metric"]

    def summarise(group: pd.DataFrame) -> pd.Series:
        values = group["value"].dropna()
        return pd.Series({
            "mean": values.mean() if len(values) else np.nan,
            "sd": values.std(ddof=1) if len(values) > 1 else np.nan,
            "runs": len(values),
            "runs_total": len(group),
            "ci_low": group["ci_low"].mean(),
            "ci_high": group["ci_high"].mean(),
            "n_gen": _one_or_range(group["n_gen"]),
            "n_ref": _one_or_range(group["n_ref"]),
            "note": "; ".join(sorted(set(n for n in group["note"] if n))),
        })

    return records.groupby(keys, sort=False).apply(summarise, include_groups=False).reset_index()


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


# --- tables -----------------------------------------------------------------------------------

def format_value(row, metric: str) -> str:
    """mean [± sd over runs] [[interval]]; KID x 1e3."""
    if math.isnan(row["mean"]):
        return "n/a"
    scale = 1000.0 if metric.startswith("kid") else 1.0
    text = significant(row["mean"] * scale)
    if row["runs"] > 1 and not math.isnan(row["sd"]):
        text += f" ± {significant(row['sd'] * scale, 2)}"
    if not math.isnan(row["ci_low"]):
        text += f" [{significant(row['ci_low'] * scale)}, {significant(row['ci_high'] * scale)}]"
    return text


def wide_table(agg: pd.DataFrame, columns: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Variants as rows; one value column and one 'n ...' column per (label, scope, metric).
    `agg` holds one protocol and one guidance per variant."""
    rows = []
    for variant, sub in agg.groupby("variant", sort=False):
        row = {"variant": variant, "guidance": scale_label(sub["guidance"].iloc[0])}
        for label, scope, metric in columns:
            hit = sub[(sub["scope"] == scope) & (sub["metric"] == metric)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            row[label] = format_value(r, metric)
            row[f"n {label}"] = r["n_gen"] if r["n_ref"] == "0" else f"{r['n_gen']} vs {r['n_ref']}"
        row["runs"] = int(sub["runs_total"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def main_columns(scopes: list[str], overlap: dict | None, k: int) -> list[tuple[str, str, str]]:
    columns = [(f"{label} {scope}", scope, metric) for scope in scopes
               for metric, label in with_k(MAIN_METRICS, k).items()]
    if overlap is not None:
        columns.append((f"{overlap['source']}->{overlap['target']}", overlap["source"],
                        f"misclassified_into:{overlap['target']}"))
    return columns


def overlap_columns(scopes: list[str], overlap: dict | None) -> list[tuple[str, str, str]]:
    columns = [(f"acc {s}", s, "accuracy") for s in scopes] + [(f"CAS {s}", s, "cas") for s in scopes]
    columns += [(f"label entropy {s}", s, "label_entropy") for s in scopes]
    if overlap is not None:
        columns.append((f"{overlap['source']}->{overlap['target']}", overlap["source"],
                        f"misclassified_into:{overlap['target']}"))
    return columns


def memorization_table(agg: pd.DataFrame, class_counts: list[int]) -> pd.DataFrame:
    """Classes as rows: training count, each variant's near-copy share, and the held-out
    images' share under the same threshold (the rate at which the rule fires on non-copies)."""
    rows = []
    mem = agg[agg["metric"].isin(["near_copy_share", "near_copy_share_heldout"])]
    for c, count in enumerate(class_counts):
        sub = mem[mem["scope"] == f"class {c}"]
        row = {"class": c, "training images": count}
        for variant, v in sub[sub["metric"] == "near_copy_share"].groupby("variant", sort=False):
            row[variant] = format_value(v.iloc[0], "near_copy_share")
            row[f"n {variant}"] = v.iloc[0]["n_gen"]
        held = sub[sub["metric"] == "near_copy_share_heldout"]
        if len(held):
            row["held-out"] = format_value(held.iloc[0], "near_copy_share_heldout")
            row["n held-out"] = held.iloc[0]["n_gen"]
        rows.append(row)
    return pd.DataFrame(rows)


def class_group(c: int, groups: dict) -> str:
    return ", ".join(name for name, classes in groups.items() if c in classes)


def per_class_table(agg: pd.DataFrame, class_counts: list[int], groups: dict) -> pd.DataFrame:
    """One row per class and variant (class, group, training count): FID, KID, precision,
    recall and classifier accuracy of the samples of that class."""
    rows = []
    for c, count in enumerate(class_counts):
        sub = agg[agg["scope"] == f"class {c}"]
        for variant, v in sub.groupby("variant", sort=False):
            row = {"class": c, "group": class_group(c, groups), "training images": count, "variant": variant}
            for metric, label in PER_CLASS_METRICS.items():
                hit = v[v["metric"] == metric]
                if len(hit):
                    r = hit.iloc[0]
                    row[label] = format_value(r, metric)
                    row[f"n {label}"] = r["n_gen"] if r["n_ref"] == "0" else f"{r['n_gen']} vs {r['n_ref']}"
            rows.append(row)
    return pd.DataFrame(rows)


def data_table(agg: pd.DataFrame, class_counts: list[int], groups: dict) -> pd.DataFrame:
    """The long-tailed training set per class, and the reference images the main protocol used."""
    total = sum(class_counts)
    fid = agg[agg["metric"] == "fid"].drop_duplicates("scope").set_index("scope")
    return pd.DataFrame([{"class": c, "group": class_group(c, groups), "training images": n,
                          "share of training set": f"{n / total:.1%}",
                          "reference images": fid["n_ref"].get(f"class {c}", "")}
                         for c, n in enumerate(class_counts)])


def protocol_card(*, title: str, manifest: dict, groups: dict, protocols: dict, main: str, evaluation: dict,
                  features: dict, sampling: dict, guidance: dict, runs: pd.DataFrame, baseline: str) -> list:
    """(item, what) pairs: everything a reader needs to know about how the numbers were made."""
    counts = manifest["class_counts"]
    card = [("suite", title),
            ("training set", f"{manifest['total']} images in {len(counts)} classes, "
                             f"{max(counts)} (largest class) to {min(counts)} (smallest)"),
            ("class groups", "; ".join(f"{g}: classes {', '.join(map(str, c))}" for g, c in groups.items()))]
    card += [(f"protocol {name}" + (" (main table)" if name == main else ""), protocol_line(name, spec))
             for name, spec in protocols.items()]
    card += [("features", features["extractor"]),
             ("guidance shown", f"{evaluation['guidance_choice']} scale per variant"),
             ("training seeds", ", ".join(map(str, sorted(runs["seed"].unique())))),
             ("sampling seeds", ", ".join(map(str, sorted(runs["sample_seed"].unique())))),
             ("baseline", baseline)]
    card += [(f"variant {v}", f"{s['sampler']} {s['steps']} steps, guidance {scale_label(guidance[v])}")
             for v, s in sampling.items()]
    return card


def class_metric_table(agg: pd.DataFrame, class_counts: list[int], metric: str) -> pd.DataFrame:
    """Classes as rows (with their training count), one column per variant."""
    rows = []
    for c, count in enumerate(class_counts):
        row = {"class": c, "training images": count}
        sub = agg[(agg["scope"] == f"class {c}") & (agg["metric"] == metric)]
        for variant, v in sub.groupby("variant", sort=False):
            row[variant] = format_value(v.iloc[0], metric)
            row[f"n {variant}"] = v.iloc[0]["n_gen"]
        rows.append(row)
    return pd.DataFrame(rows)


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


def format_differences(diffs: pd.DataFrame) -> pd.DataFrame:
    if diffs.empty:
        return diffs
    out = diffs.copy()
    scale = [1000.0 if m.startswith("kid") else 1.0 for m in out["metric"]]
    out["difference"] = [f"{d * s:+.3g}" for d, s in zip(out["diff"], scale)]
    out["95% CI (t)"] = ["" if lo is None or (isinstance(lo, float) and math.isnan(lo))
                         else f"[{lo * s:+.3g}, {hi * s:+.3g}]"
                         for lo, hi, s in zip(out["ci_low"], out["ci_high"], scale)]
    return out[["variant", "baseline", "scope", "metric", "difference", "95% CI (t)", "pairs", "verdict"]]


def paper_table(agg: pd.DataFrame, published: list[dict], variants: list[str]) -> pd.DataFrame:
    """Published numbers beside ours (`agg`: main protocol, chosen guidance): one row per
    registry entry, then one per variant of ours that no entry covers."""
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
                                 else f"{mine['mean'] - entry['value']:+.3g}"),
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


def augmentation_runs(files: list[str]) -> pd.DataFrame:
    """Per classifier seed, scope and row, the held-out top-1 of the augmentation experiment, as
    runs the report's aggregation and pairing read (the row as 'variant', seed as 'seed')."""
    rows = []
    for path in files:
        data = read_json(path)
        rows += [{"protocol": "augmentation", "variant": data["row"], "guidance": 0.0, "sample_seed": 0,
                  "generated": int(sum(data["generated_per_class"])), **r} for r in data["records"]]
    return pd.DataFrame(rows)


def augmentation_sections(files: list[str], scopes: list[str], class_counts: list[int]) -> tuple[list, pd.DataFrame]:
    """(report sections, per-seed runs) of the augmentation experiment; one 'not run' line without it."""
    if not files:
        not_run = Section("Augmentation", "Not run (augmentation.enabled: false).", pd.DataFrame(), page="comparisons")
        return [not_run], pd.DataFrame()
    runs = augmentation_runs(files)
    agg = aggregate(runs)
    metric = runs["metric"].iloc[0]
    table = wide_table(agg, [(f"top-1 {s}", s, metric) for s in scopes])
    generated = runs.groupby("variant")["generated"].first()
    table.insert(1, "filled images", [int(generated[v]) for v in table["variant"]])
    table = table.drop(columns="guidance")
    diffs = compare_to_baseline(runs, "real_only", [(s, metric) for s in scopes])
    seeds = runs["seed"].nunique()
    return [Section("Augmentation",
             f"Held-out top-1 accuracy (mean over classes) of a classifier trained on the real long-tailed set "
             f"plus each variant's generated images filling every class (real_only: no generated images; "
             f"real_oversampled: the fill made of copies of real images); "
             f"mean ± sd over {seeds} classifier seed(s). n: training images vs held-out test images.", table,
                    page="comparisons"),
            Section("Augmentation: differences to real_only",
                    "Paired by classifier seed; a t-based 95 % interval over the seeds.", format_differences(diffs),
                    page="comparisons"),
            Section("Augmentation per class",
             "Held-out top-1 accuracy of each class (mean ± sd over classifier seeds); n: the class's "
             "training images, real plus generated.",
             class_metric_table(agg, class_counts, metric), page="comparisons")], runs


def protocol_rows(agg: pd.DataFrame, protocol: str, choice: str, declared: dict[str, float]) -> pd.DataFrame:
    """The rows of one protocol, each variant at its guidance scale chosen under that protocol."""
    rows = agg[agg["protocol"] == protocol]
    return rows[at_guidance(rows, chosen_guidance(rows, protocol, choice, declared))]


def protocol_caption(spec: dict) -> str:
    """Which variants a protocol samples with their own (e.g. published) settings."""
    own = spec.get("sampling") or {}
    return "; ".join(f"{v}: " + ", ".join(f"{k} {val}" for k, val in o.items()) for v, o in own.items())


def protocol_line(name: str, spec: dict) -> str:
    return (f"protocol '{name}': {spec['num_samples']} samples with {spec['labels']} labels, "
            f"compared with the {spec['reference']} images")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        # Blank mean: not computed (see note); blank sd: a single run.
        frame.to_csv(tmp, index=False, na_rep="")


def write_tables(sections: list, notes: pd.DataFrame, outputs: dict, preamble: str,
                 card: list[tuple[str, str]], title: str) -> None:
    """`sections`: Sections or (heading, explanation, table[, footer]) tuples, the main table
    first; written as table.md, table.tex, table.html (all) and one HTML page per HTML_PAGES."""
    printed = [s._replace(table=fold_sample_sizes(s.table)) for s in map(tables.as_section, sections)]
    note_lines = [f"{r.protocol} / {r.variant} / {r.scope} / {r.metric}: {r.note}" for r in notes.itertuples()]
    write_text(outputs["md"], tables.markdown(printed, preamble, card, note_lines))
    write_text(outputs["tex"], tables.latex(printed, preamble))
    intro = ("'n' is generated vs reference images; ± is the sd over runs (training x sampling seeds) where "
             "there are several; [..] an interval computed within each run. Click a column header to sort.")
    body = [tables.html_card(card)] + [tables.html_section(s, i) for i, s in enumerate(printed)]
    if note_lines:
        body.append(tables.html_table("<b>Notes</b>", pd.DataFrame({"note": note_lines})))
    write_text(outputs["html"], tables.html_page(title, intro, body))
    write_text(outputs["protocol"], tables.html_page(f"{title}: protocol", "", [tables.html_card(card)]))
    for page, heading in HTML_PAGES.items():
        shown = [tables.html_section(s, i) for i, s in enumerate(printed) if s.page == page]
        write_text(outputs[f"page_{page}"], tables.html_page(f"{title}: {heading.lower()}", intro,
                                                             shown or ["<p>No table in this run.</p>"]))


# --- the report -------------------------------------------------------------------------------

def build_report(*, metric_files: list[str], diagnostic_files: list[str], expected_cells: list[dict],
                 variants: list[str], sample_files: dict[str, str], train_npz: str, loss_logs: dict[str, str],
                 manifest_json: str, groups: dict, overlap: dict | None, evaluation: dict,
                 declared_guidance: dict[str, float], sampling: dict[str, dict], features: dict,
                 published: list[dict], title: str, outputs: dict[str, str],
                 augmentation_files: list[str] = (),
                 protocol_guidance: dict[str, dict[str, float]] | None = None) -> None:
    """`variants`: the declared variants in config order, which the tables keep; `sampling`: each
    variant's sampling settings under the main protocol, `declared_guidance` its first listed
    guidance there; `protocol_guidance`: the same per other protocol where a protocol samples with
    its own settings (default: `declared_guidance`); `published`: the registry entries of this dataset;
    `augmentation_files`: the rows of the augmentation experiment (none: not run)."""
    runs = collect_records(metric_files)
    check_complete(runs, expected_cells)
    runs = pd.concat([runs, collect_records(diagnostic_files)], ignore_index=True)
    runs = runs.sort_values("variant", key=lambda v: v.map(variants.index), kind="stable")
    agg = aggregate(runs)
    protocols = evaluation["protocols"]
    main = evaluation["report_protocol"] or next(iter(protocols))
    baseline = evaluation["baseline"] or variants[0]
    guidance = chosen_guidance(agg, main, evaluation["guidance_choice"], declared_guidance)
    shown = agg[at_guidance(agg, guidance)]
    main_agg = shown[shown["protocol"] == main]
    scopes = ["all"] + list(groups)
    manifest = read_json(manifest_json)
    k = evaluation["pr_neighborhood"]

    sections = [(f"Main table: {protocol_line(main, protocols[main])}",
                 f"Each variant at its {evaluation['guidance_choice']} guidance scale. KID x 1e3. "
                 f"acc: share of samples the classifier assigns to their own class.",
                 wide_table(main_agg, main_columns(scopes, overlap, k)))]
    sections += [(protocol_line(name, protocols[name]).capitalize(), protocol_caption(protocols[name]),
                  wide_table(protocol_rows(agg, name, evaluation["guidance_choice"],
                                           (protocol_guidance or {}).get(name, declared_guidance)),
                             main_columns(scopes, overlap, k)))
                 for name in protocols if name != main]
    if len(groups) > 1:
        sections.append(("Class groups at matched n",
                         f"Every group evaluated on the same number of generated and reference images "
                         f"({evaluation['matched_fraction']:g} of the smallest group's), over "
                         f"{evaluation['matched_repeats']} random subsets: mean [2.5 %, 97.5 % of the "
                         f"subsets]. FID grows as n shrinks: compare these groups with each other, not "
                         f"with the main table.",
                         wide_table(main_agg, [(f"{label} {g}", g, m) for g in groups
                                               for m, label in with_k(MATCHED_METRICS, k).items()])))
    sections.append(Section("Per-class table",
                            "One row per class and variant, with the class's training count and group: "
                            "FID, KID x 1e3 [bootstrap 95 % interval], precision, recall and classifier "
                            "accuracy of the samples of that class.",
                            per_class_table(main_agg, manifest["class_counts"], groups), page="per_class"))
    sections.append(Section("Overlap diagnostics",
                     "acc: the balanced classifier's accuracy on the samples; CAS: accuracy on held-out "
                     "real images of a classifier trained on the samples only (mean over classes)"
                     + (f"; {overlap['source']}->{overlap['target']}: share of {overlap['source']} samples "
                        f"classified as a {overlap['target']} class" if overlap else "")
                     + "; label entropy: entropy (bits) of the classifier's predicted labels among one "
                       "generated class's samples, averaged over the scope's classes: 0 = all one label "
                       "(not necessarily the right one), higher = more mixed. Neither direction is a verdict "
                       "by itself: read it with acc.",
                     wide_table(main_agg, overlap_columns(scopes, overlap)), page="diagnostics"))
    sections.append(Section("Label entropy per class",
                            "Entropy (bits) of the predicted labels of each generated class's samples.",
                            class_metric_table(main_agg, manifest["class_counts"], "label_entropy"),
                            page="per_class"))
    sections.append(Section("Memorization audit",
                     f"Share of generated images whose nearest training image of their class (pixel "
                     f"distance) is closer than {evaluation['memorization']['relative_threshold']} x the "
                     f"median held-out image's distance; 'held-out': the same share for real held-out "
                     f"images, which cannot be copies.",
                     memorization_table(main_agg, manifest["class_counts"]), page="diagnostics"))

    how = "; ".join(f"{v}: {sampling[v]['sampler']} {sampling[v]['steps']} steps, guidance {scale_label(guidance[v])}"
                    for v in variants)
    extractor = features["extractor"] + (f" ({features['inception_preprocessing']} preprocessing)"
                                         if features["extractor"] == "inception" else "")
    ours_protocol = (f"Ours: {protocol_line(main, protocols[main])}; {extractor} features; "
                     f"{how}; {manifest['total']} training images.")
    paper = paper_table(main_agg, published, variants)
    if published:
        sections.insert(1, Section("Paper comparison", "Published numbers (`published:` registry) beside ours.",
                                   paper, ours_protocol, "comparisons"))

    targets = [(s, "fid") for s in scopes] + [("all", "recall"), ("all", "accuracy")]
    targets += [(s, "cas") for s in scopes] + [(g, "fid@matched") for g in groups]
    if overlap is not None:
        targets.append((overlap["source"], f"misclassified_into:{overlap['target']}"))
    main_runs = runs[(runs["protocol"] == main).to_numpy() & at_guidance(runs, guidance)]
    diffs = compare_to_baseline(main_runs, baseline, targets)
    variance = pd.concat([seed_variance(main_runs, s, m) for s, m in [("all", "fid"), ("all", "recall")]])
    augmentation, augmentation_per_seed = augmentation_sections(list(augmentation_files), scopes,
                                                                manifest["class_counts"])
    sections += augmentation
    sections.append(Section(f"Differences to {baseline}",
                     "Variant minus baseline, paired by training and sampling seed; a t-based 95 % "
                     "interval over the pairs; 'better'/'worse' when it excludes 0.",
                     format_differences(diffs), page="comparisons"))
    sections.append(Section("Spread over seeds",
                     "sd over training seeds (of each seed's mean over sampling seeds) and pooled sd "
                     "over sampling seeds within a training seed; blank with a single seed.",
                     variance, page="comparisons"))
    sections.append(Section("Training data", "The long-tailed training set per class and the reference images "
                            "of the main protocol.", data_table(main_agg, manifest["class_counts"], groups),
                            page="data"))

    preamble = (f"# {title}\n\nTraining set: {manifest['total']} images, class counts "
                f"{manifest['class_counts']}. 'n' is generated vs reference images; ± is the sd over "
                f"runs (training x sampling seeds) where there are several.")
    notes = agg[agg["note"] != ""][["protocol", "variant", "scope", "metric", "note"]].drop_duplicates()
    notes = notes[~notes["metric"].str.endswith("@matched") & ~notes["metric"].str.startswith("near_copy")]
    write_csv(outputs["csv"], agg)
    write_csv(outputs["paper"], paper)
    write_csv(outputs["augmentation"], augmentation_per_seed)
    write_csv(outputs["runs"], runs)
    write_csv(outputs["stats"], pd.concat([diffs.assign(kind="paired difference"),
                                           variance.assign(kind="seed spread")]))
    card = protocol_card(title=title, manifest=manifest, groups=groups, protocols=protocols, main=main,
                         evaluation=evaluation, features=features, sampling={v: sampling[v] for v in variants},
                         guidance=guidance, runs=runs, baseline=baseline)
    write_tables(sections, notes, outputs, preamble, card, title)
    write_plots(metric_files=metric_files, main=main, guidance=guidance, agg=agg, main_agg=main_agg,
                scopes=scopes, groups=groups, manifest=manifest, sample_files=sample_files, train_npz=train_npz,
                loss_logs=loss_logs, outputs=outputs)
    print(Path(outputs["md"]).read_text(), flush=True)


def write_plots(*, metric_files, main, guidance, agg, main_agg, scopes, groups, manifest, sample_files, train_npz,
                loss_logs, outputs) -> None:
    """Every figure of the report; `main_agg`: the main protocol at the chosen guidance scales."""
    counts = manifest["class_counts"]

    plots.plot_per_class(main_agg, counts, groups, outputs["fid_vs_count"])
    plots.plot_precision_recall(main_agg, scopes, outputs["precision_recall"])
    plots.plot_groups(main_agg, scopes, outputs["groups"])
    plots.plot_guidance(agg[agg["protocol"] == main], outputs["guidance"])
    confusions = {}
    for path in metric_files:
        data = read_json(path)
        cell = data["cell"]
        if cell["protocol"] == main and same_factor(guidance[cell["variant"]], cell["guidance"]):
            confusions[cell["variant"]] = confusions.get(cell["variant"], 0) + np.asarray(data["confusion"])
    plots.plot_confusions(confusions, groups, outputs["confusion"])
    plots.plot_sample_grids(sample_files, train_npz, counts, outputs["samples"])
    plots.plot_memorization(sample_files, train_npz, main_agg, counts, groups, outputs["memorization"])
    plots.plot_losses(loss_logs, outputs["loss"])
