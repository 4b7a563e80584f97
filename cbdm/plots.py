"""The report's figures, one function per PNG; each is written atomically."""
from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path, read_npz  # noqa: E402

DPI = 120
GRID_COLUMNS = 10  # samples shown per class in a grid row
GRID_MAX_CLASSES = 20  # CIFAR-100's grid would be unreadable with all 100 rows
MAX_SIZE_TICKS = 12  # labelled class sizes on the per-class FID plot


def _save(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def plot_fid_vs_count(agg: pd.DataFrame, class_counts: list[int], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, sub in agg[agg["metric"] == "fid"].groupby("variant", sort=False):
        per_class = sub[sub["scope"].str.startswith("class ")]
        classes = per_class["scope"].str.slice(6).astype(int)
        ax.plot([class_counts[c] for c in classes], per_class["mean"], "o-", label=variant, alpha=0.8)
    ax.set_xscale("log")
    sizes = sorted(set(class_counts))
    spread = np.geomspace(sizes[0], sizes[-1], min(len(sizes), MAX_SIZE_TICKS))  # even on the log axis
    ticks = sorted({min(sizes, key=lambda size: abs(np.log(size / target))) for target in spread})
    ax.set_xticks(ticks, [str(c) for c in ticks], fontsize=7)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("training images of the class (log scale)")
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


def plot_guidance(agg: pd.DataFrame, path: str) -> None:
    """FID and recall over all classes against the guidance scale, per variant."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric in zip(axes, ("fid", "recall")):
        sub = agg[(agg["scope"] == "all") & (agg["metric"] == metric)]
        for variant, rows in sub.groupby("variant", sort=False):
            rows = rows.sort_values("guidance")
            ax.errorbar(rows["guidance"], rows["mean"], yerr=np.nan_to_num(rows["sd"].to_numpy(float)),
                        marker="o", capsize=3, label=variant)
        ax.set_xlabel("guidance scale w")
        ax.set_title(f"{metric} (all classes)")
    axes[0].legend(fontsize=8)
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


def plot_sample_grids(sample_files: dict[str, str], path: str) -> None:
    fig, axes = plt.subplots(1, len(sample_files), figsize=(3 * len(sample_files), 3.4), squeeze=False)
    for ax, (variant, sample_npz) in zip(axes[0], sample_files.items()):
        data = read_npz(sample_npz, {"images": 4, "labels": 1})
        rows = []
        for c in np.unique(data["labels"])[:GRID_MAX_CLASSES]:
            imgs = data["images"][data["labels"] == c][:GRID_COLUMNS]
            imgs = np.concatenate([imgs, np.zeros((GRID_COLUMNS - len(imgs), *imgs.shape[1:]), np.uint8)])
            rows.append(np.concatenate(list(imgs.transpose(0, 2, 3, 1)), axis=1))
        grid = np.concatenate(rows, axis=0)
        ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
        ax.set_title(variant)
        ax.axis("off")
    fig.suptitle(f"Samples, one row per class (class 0 at the top, at most {GRID_MAX_CLASSES} classes)")
    _save(fig, path)


def plot_losses(loss_logs: dict[str, str], path: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.get_cmap("tab20" if len(loss_logs) > 10 else "tab10").colors
    for i, (variant, log_csv) in enumerate(loss_logs.items()):
        log = pd.read_csv(log_csv)
        color = colors[i % len(colors)]  # one colour per variant: its total and its eps_mse part
        ax.plot(log["step"], log["loss"], color=color, label=f"{variant} (total)")
        if "eps_mse" in log and len(log.columns.difference(["step", "lr", "loss"])) > 1:  # not the whole loss
            ax.plot(log["step"], log["eps_mse"], "--", color=color, alpha=0.6, label=f"{variant} (eps_mse)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    ax.set_title("Training loss")
    _save(fig, path)
