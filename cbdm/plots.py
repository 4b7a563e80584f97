"""The report's figures, one function per PNG; each is written atomically.

Every function takes the aggregated frame of report.py (one row per variant, guidance, scope and
metric with mean, sd over runs, runs, ci_low/ci_high, n_gen, n_ref) or the sample and training
images (read once with `read_images`), and works for any number of classes, seeds and guidance
scales. Metric labels, display scales and which way is better come from the metric table
(cbdm.records).
"""
from __future__ import annotations

import math

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import records  # noqa: E402
from .dataset import read_image_set  # noqa: E402
from .io import atomic_path  # noqa: E402
from .metrics import nearest_neighbour_distances  # noqa: E402
from .records import class_of, is_class  # noqa: E402
from .tables import scale_label  # noqa: E402

DPI = 120
GRID_COLUMNS = 10  # samples shown per class in a grid row
GRID_MAX_CLASSES = 20  # CIFAR-100's grid would be unreadable with all 100 rows
GRID_GUTTER = 2  # pixels between images in a grid
MAX_CLASS_TICKS = 25  # labelled classes on a per-class axis
NUMBERS_MAX_CLASSES = 10  # confusion cells carry their number up to this many classes
MEMORIZATION_MAX_CLASSES = 5  # tail classes shown in the memorization figure
MEMORIZATION_PAIRS = 3  # flagged samples shown per variant and class
GROUP_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
SCOPE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def read_images(path: str, origin: dict | None = None) -> dict[str, np.ndarray]:
    """The images and labels of a sample or training set file, as the figures take them. A sample
    set must record `origin` (cbdm.dataset.read_image_set checks it): a set copied over another
    cell's, or kept from older settings, would be shown as this variant's images."""
    images = read_image_set(path, "", origin=origin)
    return {"images": images.images, "labels": images.labels}


def _save(fig, path: str) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _variants(agg: pd.DataFrame) -> list[str]:
    """The variants of a frame in the order they appear."""
    return list(dict.fromkeys(agg["variant"]))


def _max_runs(agg: pd.DataFrame) -> int:
    return int(agg["runs"].max()) if len(agg) else 1


def _runs_note(agg: pd.DataFrame) -> str:
    runs = _max_runs(agg)
    return f"bands / error bars: ± sd over {runs} runs" if runs > 1 else "one run: no interval over seeds"


# --- per class --------------------------------------------------------------------------------

def class_order(class_counts: list[int]) -> list[int]:
    """Classes from the most to the fewest training images (ties by class index)."""
    return sorted(range(len(class_counts)), key=lambda c: (-class_counts[c], c))


def _class_axis(ax, order: list[int], class_counts: list[int]) -> None:
    """x = rank of the class by training count; ticks 'class / count', thinned to MAX_CLASS_TICKS."""
    step = max(1, math.ceil(len(order) / MAX_CLASS_TICKS))
    ticks = list(range(0, len(order), step))
    ax.set_xticks(ticks, [f"{order[i]}\n{class_counts[order[i]]}" for i in ticks], fontsize=7)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_xlabel("class, ordered by training images (most first); tick: class index / training images")


def _shade_groups(ax, order: list[int], groups: dict) -> None:
    """A light band behind each run of neighbouring classes of a group (head, tail, ...)."""
    for k, (name, classes) in enumerate(groups.items()):
        inside = [pos for pos, c in enumerate(order) if c in classes]
        starts = [p for p in inside if p - 1 not in inside]
        for i, start in enumerate(starts):
            end = start
            while end + 1 in inside:
                end += 1
            ax.axvspan(start - 0.5, end + 0.5, color=GROUP_COLOURS[k % len(GROUP_COLOURS)], alpha=0.12, lw=0,
                       label=None if i else f"group {name}")


def per_class_frame(agg: pd.DataFrame, metric: str, order: list[int]) -> pd.DataFrame:
    """One variant's per-class rows of `metric`, reindexed to `order` (missing classes NaN)."""
    sub = agg[(agg["metric"] == metric) & agg["scope"].map(is_class)]
    sub = sub.assign(cls=sub["scope"].map(class_of)).drop_duplicates("cls").set_index("cls")
    return sub.reindex(order)[["mean", "sd", "runs", "ci_low", "ci_high"]].astype(float)


def _per_class_panel(ax, agg: pd.DataFrame, metric: str, order: list[int]) -> None:
    x, scale = np.arange(len(order)), records.scale(metric)
    for variant in _variants(agg):
        rows = per_class_frame(agg[agg["variant"] == variant], metric, order) * [scale, scale, 1, scale, scale]
        line = ax.plot(x, rows["mean"], "o-", ms=3, lw=1.2, label=variant)[0]
        if (rows["runs"] > 1).any():
            ax.fill_between(x, rows["mean"] - rows["sd"], rows["mean"] + rows["sd"], color=line.get_color(),
                            alpha=0.2, lw=0)
        if rows["ci_low"].notna().any():
            # Drawn as segments, not error bars around the mean: the interval is a bootstrap's
            # percentiles and need not hold the mean over runs (matplotlib refuses negative yerr).
            ax.vlines(x, rows["ci_low"], rows["ci_high"], color=line.get_color(), alpha=0.6, lw=0.8)
        _mark_missing(ax, x[rows["mean"].isna().to_numpy()], line.get_color())


def _mark_missing(ax, positions: np.ndarray, colour) -> None:
    """An x at the foot of the panel for each class without a value (n/a in the tables: too few
    samples), which the line alone shows as a gap, or not at all at either end."""
    if len(positions) == 0:
        return
    seen = any(line.get_marker() == "x" for line in ax.get_lines())
    ax.plot(positions, np.full(len(positions), 0.03), "x", ms=6, color=colour, transform=ax.get_xaxis_transform(),
            label=None if seen else "x: no value (too few samples; see the tables' notes)")


def plot_per_class(agg: pd.DataFrame, class_counts: list[int], groups: dict, path: str) -> None:
    """Per-class FID and KID (x 1e3, with its bootstrap interval) against the class's rank by
    training count, group bands behind, one line per variant."""
    order = class_order(class_counts)
    width = max(7.0, 0.09 * len(order))
    fig, axes = plt.subplots(2, 1, figsize=(width, 6.5), sharex=True)
    for ax, (metric, interval) in zip(axes, (("fid", ""), ("kid_mean", " [bootstrap 95 %]"))):
        _shade_groups(ax, order, groups)
        _per_class_panel(ax, agg, metric, order)
        ax.set_ylabel(f"per-class {records.metric(metric).scaled_label}{interval}")
    _class_axis(axes[1], order, class_counts)
    axes[0].legend(fontsize=7, ncol=2)
    marks = [[line for line in ax.get_lines() if line.get_marker() == "x"] for ax in axes]
    if marks[1] and not marks[0]:  # said once, on the first panel that has the marks
        axes[1].legend(handles=marks[1][:1], fontsize=7)
    runs = _max_runs(agg)
    bands = f"bands: ± sd over {runs} runs" if runs > 1 else "one run: no band over seeds"
    axes[0].set_title(f"Quality per class against training count\n({bands}; vertical lines: KID's bootstrap "
                      f"95 % interval{', mean over runs' if runs > 1 else ''})", fontsize=10)
    _save(fig, path)


# --- groups -----------------------------------------------------------------------------------

def _scope_values(agg: pd.DataFrame, variant: str, metric: str, scopes: list[str]) -> tuple[list, list]:
    sub = agg[(agg["variant"] == variant) & (agg["metric"] == metric)].drop_duplicates("scope").set_index("scope")
    return ([float(sub["mean"].get(s, np.nan)) for s in scopes],
            [float(np.nan_to_num(sub["sd"].get(s, np.nan))) for s in scopes])


def plot_precision_recall(agg: pd.DataFrame, scopes: list[str], path: str) -> None:
    """Precision against recall, one colour per variant, one marker per scope (all and groups)."""
    fig, ax = plt.subplots(figsize=(6, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, variant in enumerate(_variants(agg)):
        recall, r_sd = _scope_values(agg, variant, "recall", scopes)
        precision, p_sd = _scope_values(agg, variant, "precision", scopes)
        for k, scope in enumerate(scopes):
            ax.errorbar(recall[k], precision[k], xerr=r_sd[k], yerr=p_sd[k], color=colours[i % len(colours)],
                        marker=SCOPE_MARKERS[k % len(SCOPE_MARKERS)], ms=7, capsize=2, ls="none")
    handles = [plt.Line2D([], [], color=colours[i % len(colours)], marker="o", ls="none", label=v)
               for i, v in enumerate(_variants(agg))]
    handles += [plt.Line2D([], [], color="grey", marker=SCOPE_MARKERS[k % len(SCOPE_MARKERS)], ls="none",
                           label=f"scope: {s}") for k, s in enumerate(scopes)]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel(records.metric("recall").axis_label("coverage of the real images"))
    ax.set_ylabel(records.metric("precision").axis_label("fidelity of the samples"))
    missing = [f"{v} {s}" for v in _variants(agg) for s, r, p in zip(scopes, *(
        _scope_values(agg, v, m, scopes)[0] for m in ("recall", "precision"))) if np.isnan(r) or np.isnan(p)]
    ax.set_title(f"Precision and recall per variant and class group\n({_runs_note(agg)})"
                 + (f"\nno value (see the tables' notes): {', '.join(missing)}" if missing else ""), fontsize=10)
    _save(fig, path)


GROUP_METRICS = ("fid", "recall", "precision", "accuracy")  # the panels of the class groups figure


def plot_groups(agg: pd.DataFrame, scopes: list[str], path: str) -> None:
    """FID, recall, precision and accuracy for all classes and each group: points with sd over
    runs; each panel's y-range is zoomed to its values (0.95 and 0.99 apart, not flattened)."""
    metrics = [m for m in GROUP_METRICS if m in set(agg["metric"])]
    variants = _variants(agg)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.8 * len(metrics), 3.8), squeeze=False)
    offsets = np.linspace(-0.3, 0.3, len(variants)) if len(variants) > 1 else [0.0]
    for ax, metric in zip(axes[0], metrics):
        for variant, dx in zip(variants, offsets):
            means, sds = _scope_values(agg, variant, metric, scopes)
            drawn = ax.errorbar(np.arange(len(scopes)) + dx, means, yerr=sds, marker="o", capsize=3, ls="none",
                                label=variant)
            _mark_missing(ax, (np.arange(len(scopes)) + dx)[np.isnan(means)], drawn.lines[0].get_color())
        ax.set_xticks(np.arange(len(scopes)), scopes)
        ax.set_xlabel("scope")
        ax.set_ylabel(records.metric(metric).axis_label())
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(handles=[h for h in axes[0][0].get_legend_handles_labels()[0] if h.get_label() in variants],
                      fontsize=7)
    missing = any(line.get_marker() == "x" for ax in axes[0] for line in ax.get_lines())
    fig.suptitle(f"All classes and class groups ({_runs_note(agg)})"
                 + ("\nx at the foot: no value (too few samples; see the tables' notes)" if missing else ""), y=1.02)
    fig.tight_layout()
    _save(fig, path)


# --- guidance ---------------------------------------------------------------------------------

def _text_figure(path: str, title: str, text: str) -> None:
    """A figure that says in words why there is nothing to draw, rather than an empty plot."""
    fig, ax = plt.subplots(figsize=(6, 1.8))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    _save(fig, path)


def plot_guidance(agg: pd.DataFrame, path: str) -> None:
    """FID and recall over all classes against the guidance scale, for every variant sampled at
    more than one scale; a note instead when no variant was."""
    overall = agg[agg["scope"] == "all"]
    scales = overall.groupby("variant", sort=False)["guidance"].apply(lambda g: sorted(set(map(float, g))))
    swept = [v for v, s in scales.items() if len(s) > 1]
    if not swept:
        listed = ", ".join(f"{v}: {scale_label(s[0])}" for v, s in scales.items())
        _text_figure(path, "Guidance", f"One guidance scale per variant ({listed}): no curve to draw.\n"
                                       f"List several in sampling.guidance to compare them.")
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric in zip(axes, ("fid", "recall")):
        sub = overall[(overall["metric"] == metric) & overall["variant"].isin(swept)]
        for variant, rows in sub.groupby("variant", sort=False):
            rows = rows.sort_values("guidance")
            ax.errorbar(rows["guidance"], rows["mean"], yerr=np.nan_to_num(rows["sd"].to_numpy(float)),
                        marker="o", capsize=3, label=variant)
        ax.set_xlabel("guidance scale w")
        ax.set_ylabel(f"{records.label(metric)} (all classes)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Guidance sweep ({_runs_note(overall)})", y=1.02)
    _save(fig, path)


# --- confusion --------------------------------------------------------------------------------

def group_boundaries(groups: dict, num_classes: int) -> list[float]:
    """Positions between consecutive classes whose group membership differs (head | tail)."""
    member = [tuple(name for name, cs in groups.items() if c in cs) for c in range(num_classes)]
    return [c + 0.5 for c in range(num_classes - 1) if member[c] != member[c + 1]]


def _row_rates(counts: np.ndarray) -> np.ndarray:
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def _off_diagonal(rates: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_array(rates, mask=np.eye(len(rates), dtype=bool))


def _confusion_panel(fig, ax, counts: np.ndarray, groups: dict, variant: str, vmax: float) -> None:
    rates = _row_rates(counts)
    off = _off_diagonal(rates)
    sampled = counts.sum(axis=1) > 0
    off[~sampled] = np.ma.masked  # no samples: no rate, not a row of 0 % leakage
    cmap = matplotlib.colormaps["magma_r"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(off, cmap=cmap, vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row's samples")
    for pos in group_boundaries(groups, len(rates)):
        ax.axhline(pos, color="#1f77b4", lw=1.5)
        ax.axvline(pos, color="#1f77b4", lw=1.5)
    if len(rates) <= NUMBERS_MAX_CLASSES:
        for i, j in ((i, j) for i, j in np.ndindex(rates.shape) if sampled[i]):
            colour = "white" if i != j and rates[i, j] > 0.6 * vmax else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    if len(rates) <= GRID_MAX_CLASSES:  # every class labelled where the labels fit
        ax.set_xticks(range(len(rates)))
        ax.set_yticks(range(len(rates)))
    ax.set_title(variant, fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("generated as class")


def plot_confusions(confusions: dict[str, np.ndarray], groups: dict, path: str) -> None:
    """Classifier confusion of generated samples, diagonal greyed (its number is the class's
    accuracy) so the colour scale shows the leakage between classes; lines divide the groups.
    One colour scale for every panel: a colour means the same share in each variant."""
    confusions = {v: np.asarray(c, float) for v, c in confusions.items()}
    vmax = max([float(_off_diagonal(_row_rates(c)).max() or 0) for c in confusions.values()] + [0.01])
    n = len(confusions)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.2 * rows), squeeze=False)
    for ax, (variant, counts) in zip(axes.flat, confusions.items()):
        _confusion_panel(fig, ax, counts, groups, variant, vmax)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Leakage between classes: row-normalised confusion of generated samples, diagonal in grey;\n"
                 "grey rows: classes without samples; blue lines divide the class groups; one colour scale for "
                 "all panels", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


# --- images -----------------------------------------------------------------------------------

def grid_classes(class_counts: list[int]) -> list[int]:
    """The classes shown in the sample grid: all, or GRID_MAX_CLASSES spread from head to tail."""
    if len(class_counts) <= GRID_MAX_CLASSES:
        return list(range(len(class_counts)))
    order = class_order(class_counts)
    picks = np.linspace(0, len(order) - 1, GRID_MAX_CLASSES).round().astype(int)
    return [order[i] for i in picks]


def _class_rows(images: np.ndarray, labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """GRID_COLUMNS images per class (uint8 NCHW), blank (white) where a class has fewer."""
    shape = images.shape[1:]
    tiles = []
    for c in classes:
        picked = images[labels == c][:GRID_COLUMNS]
        blank = np.full((GRID_COLUMNS - len(picked), *shape), 255, np.uint8)
        tiles.append(np.concatenate([picked, blank]))
    return np.concatenate(tiles)


def tile_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 NCHW images as one RGB HWC image in [0, 1], `columns` to a row, GRID_GUTTER white
    pixels between and around them: torchvision's make_grid, without importing torchvision (and
    torch) into the report job for it."""
    n, _, h, w = images.shape
    columns = min(columns, n)
    step_h, step_w = h + GRID_GUTTER, w + GRID_GUTTER
    grid = np.ones((math.ceil(n / columns) * step_h + GRID_GUTTER, columns * step_w + GRID_GUTTER, 3), np.float32)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        top, left = GRID_GUTTER + row * step_h, GRID_GUTTER + column * step_w
        grid[top:top + h, left:left + w] = image.transpose(1, 2, 0) / np.float32(255)  # grey: one channel to three
    return grid


def image_grid(images: np.ndarray, labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """One row per class, white gutters between images, HWC in [0, 1]."""
    return tile_grid(_class_rows(images, labels, classes), GRID_COLUMNS)


def plot_sample_grids(samples: dict[str, dict], train: dict, class_counts: list[int], path: str) -> None:
    """Real training images first, then each variant's samples (`read_images` of its file): one
    row per class, labelled with the class and its training count."""
    classes = grid_classes(class_counts)
    panels = {"real training images": train, **samples}
    height = 2.6 * len(classes) / GRID_COLUMNS + 0.6  # square images under a 2.6-inch-wide panel
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), height), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels.items()):
        ax.imshow(image_grid(data["images"], data["labels"], classes))
        height = data["images"].shape[2] + GRID_GUTTER
        ax.set_yticks([GRID_GUTTER + r * height + height / 2 for r in range(len(classes))],
                      [f"class {c} (n={class_counts[c]})" for c in classes], fontsize=7)
        ax.set_xticks([])
        ax.tick_params(left=False, labelleft=ax is axes[0][0])
        ax.set_title(name, fontsize=9)
        for side in ax.spines.values():
            side.set_visible(False)
    shown = "every class" if len(classes) == len(class_counts) else f"{len(classes)} classes from head to tail"
    fig.suptitle(f"Samples, one row per class ({shown}); n = training images of the class", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


# --- memorization -----------------------------------------------------------------------------

def tail_classes(class_counts: list[int], groups: dict) -> list[int]:
    """The classes of the group with the fewest training images per class (or the smallest
    classes), at most MEMORIZATION_MAX_CLASSES, the smallest first."""
    candidates = range(len(class_counts))
    if groups:
        candidates = min(groups.values(), key=lambda cs: np.mean([class_counts[c] for c in cs]))
    return sorted(candidates, key=lambda c: (class_counts[c], c))[:MEMORIZATION_MAX_CLASSES]


def _pixels(images: np.ndarray) -> np.ndarray:
    """Images as flat vectors in [0, 1], the space the memorization audit measures distances in."""
    return images.reshape(len(images), -1).astype(np.float64) / 255.0


def _pairs_image(gen: np.ndarray, train: np.ndarray, threshold: float) -> tuple[np.ndarray, str]:
    """Flagged samples (closest first) beside their nearest training image; if none is
    flagged, the closest sample, so the reader sees how far the nearest one is."""
    a, b = _pixels(gen), _pixels(train)
    dist = nearest_neighbour_distances(a, b)  # the audit's own distance (cbdm.memorization)
    flagged = np.where(dist < threshold)[0]
    shown = flagged[np.argsort(dist[flagged])][:MEMORIZATION_PAIRS] if len(flagged) else [int(dist.argmin())]
    # Only the few shown samples need to know which training image is the nearest.
    nearest = {i: int(((b - a[i]) ** 2).sum(axis=1).argmin()) for i in shown}
    tiles = np.stack([img for i in shown for img in (gen[i], train[nearest[i]])])
    # Blank (white) pairs up to MEMORIZATION_PAIRS rows: every panel then draws its images at one
    # scale, instead of one pair filling the panel that three pairs share elsewhere.
    blank = np.full((2 * (MEMORIZATION_PAIRS - len(shown)), *tiles.shape[1:]), 255, dtype=tiles.dtype)
    tiles = np.concatenate([tiles, blank])
    label = (f"{len(flagged)}/{len(gen)} flagged" if len(flagged) else "none flagged; closest") + \
        f"\nd={dist[shown[0]]:.2f}, threshold {threshold:.2f}"
    return tile_grid(tiles, 2), label


def _thresholds(agg: pd.DataFrame) -> dict[int, float]:
    """The memorization audit's near-copy threshold per class."""
    rows = agg[(agg["metric"] == "near_copy_threshold") & agg["mean"].notna()]
    return {class_of(s): float(m) for s, m in zip(rows["scope"], rows["mean"])}


def plot_memorization(samples: dict[str, dict], train: dict, agg: pd.DataFrame, class_counts: list[int],
                      groups: dict, path: str) -> None:
    """For the tail classes: each variant's flagged near-copies (left) beside their nearest
    training image (right), at the audit's threshold; `samples` and `train` as `read_images`
    returns them."""
    thresholds = _thresholds(agg)
    classes = [c for c in tail_classes(class_counts, groups) if c in thresholds]
    if not classes:
        _text_figure(path, "Memorization", "No memorization threshold in the diagnostics: nothing to show.")
        return
    fig, axes = plt.subplots(len(samples), len(classes), figsize=(2.0 * len(classes), 1.9 * len(samples)),
                             squeeze=False)
    for row, (variant, data) in zip(axes, samples.items()):
        for ax, c in zip(row, classes):
            ax.set_xticks([])
            ax.set_yticks([])
            gen, ref = data["images"][data["labels"] == c], train["images"][train["labels"] == c]
            if len(gen) and len(ref):
                image, label = _pairs_image(gen, ref, thresholds[c])
                ax.imshow(image)
                ax.set_xlabel(label, fontsize=6)
            else:  # a blank panel would say nothing
                ax.set_xlabel(f"{len(gen)} samples, {len(ref)} training images\nof this class: no pair", fontsize=6)
            ax.set_title(f"class {c} (n={class_counts[c]})", fontsize=7)
        row[0].set_ylabel(variant, fontsize=8)
    fig.suptitle("Tail classes: flagged samples (left) beside their nearest training image (right)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_losses(loss_logs: dict[str, str], path: str) -> None:
    """Each variant's training loss over steps (log scale), and its eps_mse part where the loss has others."""
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
