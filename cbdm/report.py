"""Stage 6: per-run metrics -> comparison tables (CSV, Markdown, LaTeX) and plots.

Runs of the same variant (training seeds x sampling seeds) are aggregated to mean, sd and
the number of runs; every table cell carries the sample sizes it was computed from.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path, read_json, read_npz  # noqa: E402

TABLE_METRICS = {"fid": "FID", "kid_mean": "KID", "recall": "recall", "accuracy": "acc"}


def collect_records(metric_files: list[str]) -> pd.DataFrame:
    """One row per (run, scope, metric), with the run's cell columns."""
    rows = []
    for path in metric_files:
        data = read_json(path)
        rows += [{**data["cell"], **r} for r in data["records"]]
    return pd.DataFrame(rows)


def aggregate(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and run count per (variant, guidance, scope, metric); a metric missing in some
    run is reported with the runs that have it and the notes that explain the rest."""
    keys = ["variant", "guidance", "scope", "metric"]

    def summarise(group: pd.DataFrame) -> pd.Series:
        values = group["value"].dropna()
        return pd.Series({
            "mean": values.mean() if len(values) else np.nan,
            "sd": values.std(ddof=1) if len(values) > 1 else np.nan,
            "runs": len(values),
            "runs_total": len(group),
            "n_gen": _one_or_range(group["n_gen"]),
            "n_ref": _one_or_range(group["n_ref"]),
            "note": "; ".join(sorted(set(n for n in group["note"] if n))),
        })

    return records.groupby(keys, sort=False).apply(summarise, include_groups=False).reset_index()


def _one_or_range(values: pd.Series) -> str:
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def format_value(mean, sd, runs: int, metric: str) -> str:
    if math.isnan(mean):
        return "n/a"
    scale = 1000.0 if metric.startswith("kid") else 1.0
    text = f"{mean * scale:.3g}" if abs(mean * scale) < 1000 else f"{mean * scale:.0f}"
    if runs > 1 and not math.isnan(sd):
        text += f" ± {sd * scale:.2g}"
    return text


def summary_table(agg: pd.DataFrame, scopes: list[str], overlap: dict | None) -> pd.DataFrame:
    """Variants as rows; for each scope, FID / KID (x1e3) / recall / accuracy with their n."""
    rows = []
    for (variant, guidance), sub in agg.groupby(["variant", "guidance"], sort=False):
        row = {"variant": variant, "guidance": guidance}
        for scope in scopes:
            for metric, label in TABLE_METRICS.items():
                hit = sub[(sub["scope"] == scope) & (sub["metric"] == metric)]
                if hit.empty:
                    continue
                r = hit.iloc[0]
                row[f"{label} {scope}"] = format_value(r["mean"], r["sd"], r["runs"], metric)
                row[f"n {label} {scope}"] = (f"{r['n_gen']}" if metric == "accuracy"
                                             else f"{r['n_gen']} vs {r['n_ref']}")
        if overlap is not None:
            metric = f"misclassified_into:{overlap['target']}"
            hit = sub[(sub["scope"] == overlap["source"]) & (sub["metric"] == metric)]
            if not hit.empty:
                r = hit.iloc[0]
                row[f"{overlap['source']}->{overlap['target']}"] = format_value(r["mean"], r["sd"], r["runs"], metric)
                row[f"n {overlap['source']}->{overlap['target']}"] = f"{r['n_gen']}"
        row["runs"] = int(sub["runs_total"].max())
        rows.append(row)
    return pd.DataFrame(rows)


def fold_sample_sizes(table: pd.DataFrame) -> pd.DataFrame:
    """Move every 'n ...' column into its value column's header when it is the same in every
    row, else into the cells, so that each printed number shows its n."""
    out = table.copy()
    for col in [c for c in table.columns if c.startswith("n ")]:
        value_col = col[2:]
        if table[col].nunique() == 1:
            out = out.rename(columns={value_col: f"{value_col} (n={table[col].iloc[0]})"})
        else:
            out[value_col] = [f"{v} (n={n})" for v, n in zip(table[value_col], table[col])]
        out = out.drop(columns=col)
    return out


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_tables(table: pd.DataFrame, agg: pd.DataFrame, out_csv: str, out_md: str, out_tex: str,
                 preamble: str) -> None:
    with atomic_path(out_csv) as tmp:
        # Blank mean: not computed (see note); blank sd: a single run.
        agg.to_csv(tmp, index=False, na_rep="")
    printed = fold_sample_sizes(table)
    notes = agg[agg["note"] != ""][["variant", "scope", "metric", "note"]].drop_duplicates()
    md = [preamble, "", printed.to_markdown(index=False), ""]
    if len(notes):
        md += ["Notes:", ""] + [f"- {r.variant} / {r.scope} / {r.metric}: {r.note}" for r in notes.itertuples()]
    write_text(out_md, "\n".join(md) + "\n")
    tex = printed.to_latex(index=False, escape=True)
    write_text(out_tex, f"% {preamble}\n{tex}")


# --- plots ----------------------------------------------------------------------------------

def _save(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_fid_vs_count(agg: pd.DataFrame, class_counts: list[int], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, sub in agg[agg["metric"] == "fid"].groupby("variant", sort=False):
        per_class = sub[sub["scope"].str.startswith("class ")]
        classes = per_class["scope"].str.slice(6).astype(int)
        ax.plot([class_counts[c] for c in classes], per_class["mean"], "o-", label=variant, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("per-class FID")
    ax.set_title("Per-class FID against class size")
    ax.legend()
    _save(fig, path)


def plot_groups(agg: pd.DataFrame, scopes: list[str], path: str) -> None:
    metrics = [m for m in ("fid", "recall", "accuracy") if m in set(agg["metric"])]
    variants = list(dict.fromkeys(agg["variant"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8))
    width = 0.8 / len(variants)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        for i, variant in enumerate(variants):
            sub = agg[(agg["variant"] == variant) & (agg["metric"] == metric)].set_index("scope")
            means = [sub["mean"].get(s, np.nan) for s in scopes]
            sds = [sub["sd"].get(s, np.nan) for s in scopes]
            ax.bar(np.arange(len(scopes)) + i * width, means, width, yerr=np.nan_to_num(sds), label=variant)
        ax.set_xticks(np.arange(len(scopes)) + 0.4 - width / 2, scopes)
        ax.set_title(metric)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("All classes and class groups", y=1.03)
    _save(fig, path)


def plot_confusions(confusions: dict[str, np.ndarray], path: str) -> None:
    fig, axes = plt.subplots(1, len(confusions), figsize=(3.6 * len(confusions), 3.6), squeeze=False)
    for ax, (variant, counts) in zip(axes[0], confusions.items()):
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(variant)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("generated as class")
    fig.suptitle("Classifier confusion of generated samples (row-normalised)")
    _save(fig, path)


def plot_sample_grids(sample_files: dict[str, str], path: str, per_class: int = 10) -> None:
    fig, axes = plt.subplots(1, len(sample_files), figsize=(3 * len(sample_files), 3.4), squeeze=False)
    for ax, (variant, sample_npz) in zip(axes[0], sample_files.items()):
        data = read_npz(sample_npz, {"images": 4, "labels": 1})
        rows = []
        for c in np.unique(data["labels"]):
            imgs = data["images"][data["labels"] == c][:per_class]
            imgs = np.concatenate([imgs, np.zeros((per_class - len(imgs), *imgs.shape[1:]), np.uint8)])
            rows.append(np.concatenate(list(imgs.transpose(0, 2, 3, 1)), axis=1))
        grid = np.concatenate(rows, axis=0)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(variant)
        ax.axis("off")
    fig.suptitle("Samples, one row per class (class 0 at the top)")
    _save(fig, path)


def plot_losses(loss_logs: dict[str, str], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, log_csv in loss_logs.items():
        log = pd.read_csv(log_csv)
        ax.plot(log["step"], log["loss"], label=f"{variant} (total)")
        if "eps_mse" in log and len(log.columns) > 4:
            ax.plot(log["step"], log["eps_mse"], "--", alpha=0.6, label=f"{variant} (eps_mse)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    ax.set_title("Training loss")
    _save(fig, path)


def build_report(*, metric_files: list[str], sample_files: dict[str, str], loss_logs: dict[str, str],
                 manifest_json: str, groups: dict, overlap: dict | None, evaluation: dict, title: str,
                 outputs: dict[str, str]) -> None:
    records = collect_records(metric_files)
    agg = aggregate(records)
    scopes = ["all"] + list(groups)
    table = summary_table(agg, scopes, overlap)
    manifest = read_json(manifest_json)
    preamble = (f"{title}. Training set: {manifest['total']} images, class counts "
                f"{manifest['class_counts']}. Reference images: {evaluation['reference']}. "
                f"'n': generated vs reference images. KID x 1e3, mean of {evaluation['kid_subsets']} "
                f"subsets of min({evaluation['kid_subset_size']}, n). acc: share of samples the "
                f"classifier assigns to their own class."
                + (f" {overlap['source']}->{overlap['target']}: share of {overlap['source']} samples "
                   f"classified as a {overlap['target']} class." if overlap else ""))
    write_tables(table, agg, outputs["csv"], outputs["md"], outputs["tex"], preamble)
    plot_fid_vs_count(agg, manifest["class_counts"], outputs["fid_vs_count"])
    plot_groups(agg, scopes, outputs["groups"])
    confusions = {}
    for path in metric_files:
        data = read_json(path)
        variant = data["cell"]["variant"]
        confusions[variant] = confusions.get(variant, 0) + np.asarray(data["confusion"])
    plot_confusions(confusions, outputs["confusion"])
    plot_sample_grids(sample_files, outputs["samples"])
    plot_losses(loss_logs, outputs["loss"])
    print(Path(outputs["md"]).read_text(), flush=True)
