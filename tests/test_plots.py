"""Every report figure on synthetic aggregated frames: 10 and 100 classes, one and three seeds,
one and two guidance scales; the files are written and the axes say what they show."""
import numpy as np
import pandas as pd
import pytest

from cbdm import plots
from cbdm.io import write_npz

VARIANTS = ("ddpm", "cbdm")
METRICS = ("fid", "kid_mean", "precision", "recall", "accuracy")


def synthetic_agg(num_classes: int, runs: int, guidances: list[float]) -> pd.DataFrame:
    """An aggregated frame as report.aggregate writes it, with per-class quality falling toward the tail."""
    rng = np.random.default_rng(0)
    scopes = ["all", "head", "tail"] + [f"class {c}" for c in range(num_classes)]
    rows = []
    for variant in VARIANTS:
        for guidance in guidances:
            for scope in scopes:
                for metric in METRICS:
                    mean = {"accuracy": 0.95 if variant == "ddpm" else 0.99}.get(metric, rng.uniform(0.2, 1.0))
                    kid_class = metric == "kid_mean" and scope.startswith("class ")
                    rows.append(dict(protocol="ours", variant=variant, guidance=guidance, scope=scope, metric=metric,
                                     mean=mean, sd=0.01 if runs > 1 else np.nan, runs=runs, runs_total=runs,
                                     ci_low=mean - 0.1 if kid_class else np.nan,
                                     ci_high=mean + 0.1 if kid_class else np.nan, n_gen="10", n_ref="10", note=""))
            rows += [dict(protocol="ours", variant=variant, guidance=guidance, scope=f"class {c}",
                          metric="near_copy_threshold", mean=1.0, sd=np.nan, runs=runs, runs_total=runs,
                          ci_low=np.nan, ci_high=np.nan, n_gen="10", n_ref="10", note="")
                     for c in range(num_classes)]
    return pd.DataFrame(rows)


def class_counts(num_classes: int) -> list[int]:
    return [int(60 * 0.2 ** (c / (num_classes - 1))) for c in range(num_classes)]


def groups(num_classes: int) -> dict:
    half = num_classes // 2
    return {"head": list(range(half)), "tail": list(range(half, num_classes))}


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, by file name, kept open for inspection."""
    saved = {}
    original = plots._save

    def keep(fig, path):
        saved[path.rsplit("/", 1)[-1]] = fig
        original(fig, path)

    close = plots.plt.close
    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(plots.plt, "close", lambda fig: None)
    yield saved
    close("all")


def image_files(tmp_path, num_classes: int) -> tuple[dict, str]:
    rng = np.random.default_rng(1)
    counts = class_counts(num_classes)
    train_labels = np.repeat(np.arange(num_classes), counts)
    train = rng.integers(0, 256, (len(train_labels), 1, 8, 8), dtype=np.uint8)
    write_npz(tmp_path / "train.npz", images=train, labels=train_labels)
    labels = np.repeat(np.arange(num_classes), 4)
    samples = rng.integers(0, 256, (len(labels), 1, 8, 8), dtype=np.uint8)
    last = num_classes - 1  # the smallest class: its first sample is a copy of a training image
    samples[np.where(labels == last)[0][0]] = train[train_labels == last][0]
    samples[np.where(labels == last - 1)[0][:2]] = train[train_labels == last - 1][0]  # two pairs there
    write_npz(tmp_path / "samples.npz", images=samples, labels=labels)
    return {v: str(tmp_path / "samples.npz") for v in VARIANTS}, str(tmp_path / "train.npz")


# Each of 10 / 100 classes, one / three seeds and one / two guidance scales, twice.
@pytest.mark.parametrize(("num_classes", "runs", "guidances"),
                         [(10, 1, [1.0]), (10, 3, [1.0, 2.0]), (100, 1, [1.0, 2.0]), (100, 3, [1.0])])
def test_every_plot_is_written(tmp_path, figures, num_classes, runs, guidances):
    agg = synthetic_agg(num_classes, runs, guidances)
    shown = agg[agg["guidance"] == 1.0]
    counts, grouping = class_counts(num_classes), groups(num_classes)
    samples, train = image_files(tmp_path, num_classes)
    confusion = {v: np.eye(num_classes) * 9 + 1 for v in VARIANTS}
    out = {name: str(tmp_path / f"{name}.png") for name in
           ("per_class", "pr", "groups", "guidance", "confusion", "samples", "memorization")}
    plots.plot_per_class(shown, counts, grouping, out["per_class"])
    plots.plot_precision_recall(shown, ["all", "head", "tail"], out["pr"])
    plots.plot_groups(shown, ["all", "head", "tail"], out["groups"])
    plots.plot_guidance(agg, out["guidance"])
    plots.plot_confusions(confusion, grouping, out["confusion"])
    images = {v: plots.read_images(f) for v, f in samples.items()}
    plots.plot_sample_grids(images, plots.read_images(train), counts, out["samples"])
    plots.plot_memorization(images, plots.read_images(train), shown, counts, grouping, out["memorization"])
    for path in out.values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    per_class = figures["per_class.png"].axes[1]
    assert "ordered by training images" in per_class.get_xlabel()
    first_tick = per_class.get_xticklabels()[0].get_text()
    assert first_tick == f"0\n{counts[0]}"  # the largest class first, with its count
    assert len(per_class.get_xticklabels()) <= plots.MAX_CLASS_TICKS

    accuracy = figures["groups.png"].axes[-1]
    low, high = accuracy.get_ylim()
    assert accuracy.get_ylabel().startswith("classifier accuracy")
    assert 0.04 / (high - low) > 0.3  # 0.95 and 0.99 are far apart on the zoomed axis

    guidance = figures["guidance.png"]
    if len(guidances) == 1:
        assert "One guidance scale per variant" in guidance.axes[0].texts[0].get_text()
    else:
        assert guidance.axes[0].get_xlabel() == "guidance scale w"

    confusion_fig = figures["confusion.png"]
    numbered = [ax for ax in confusion_fig.axes if len(ax.texts) == num_classes ** 2]
    assert len(numbered) == (len(VARIANTS) if num_classes <= plots.NUMBERS_MAX_CLASSES else 0)
    assert any(ax.get_ylabel() == "share of the row's samples" for ax in confusion_fig.axes)  # colour bars

    grid = figures["samples.png"].axes
    assert grid[0].get_title() == "real training images"
    labels = [t.get_text() for t in grid[0].get_yticklabels()]
    assert labels[0] == f"class 0 (n={counts[0]})" and len(labels) == min(num_classes, plots.GRID_MAX_CLASSES)

    memorization = figures["memorization.png"].axes
    smallest = f"class {num_classes - 1} (n={counts[-1]})"
    copied = [ax for ax in memorization if ax.get_title() == smallest]
    assert copied and all(ax.get_xlabel().startswith("1/4 flagged") for ax in copied)
    shapes = {ax.get_images()[0].get_array().shape for ax in memorization if ax.get_images()}
    assert len(shapes) == 1  # one image scale, however many pairs a panel shows


def test_tail_classes_and_group_boundaries():
    counts = [50, 40, 30, 20, 10, 5]
    assert plots.tail_classes(counts, {"head": [0, 1, 2], "tail": [3, 4, 5]}) == [5, 4, 3]
    assert plots.group_boundaries({"head": [0, 1, 2], "tail": [3, 4, 5]}, 6) == [2.5]
    assert plots.grid_classes(list(range(100, 0, -1)))[-1] == 99  # the smallest class is in the grid


def test_a_class_interval_that_does_not_hold_the_mean_over_runs_is_drawn_as_it_is(tmp_path, figures):
    """The KID interval is a bootstrap's percentiles, the mean is over runs: with three runs the
    mean may sit outside it, and the plot draws the interval where it is instead of failing."""
    agg = synthetic_agg(10, 3, [1.0])
    kid = agg["metric"].eq("kid_mean") & agg["ci_low"].notna()
    agg.loc[kid, "ci_low"] = agg.loc[kid, "mean"] + 0.05
    agg.loc[kid, "ci_high"] = agg.loc[kid, "mean"] + 0.2
    plots.plot_per_class(agg, class_counts(10), groups(10), str(tmp_path / "per_class.png"))
    segments = [c for c in figures["per_class.png"].axes[1].collections if hasattr(c, "get_segments")]
    lows = sorted(min(s[:, 1]) for c in segments for s in c.get_segments() if len(s) == 2 and s[0, 0] == s[1, 0])
    assert lows == pytest.approx(sorted(agg.loc[kid, "ci_low"] * 1e3))  # KID is shown x 1e3


def test_confusion_panels_share_one_colour_scale(tmp_path, figures):
    """A colour must mean the same share in every variant's panel: with a scale per panel, a
    variant with 4 % leakage looked as dark as one with 16 %."""
    low, high = np.eye(4) * 96 + 1, np.eye(4) * 80 + 1
    high[3, 0] += 20  # class 3 puts 21 of its 104 samples in class 0
    plots.plot_confusions({"low": low, "high": high}, {"head": [0, 1], "tail": [2, 3]},
                          str(tmp_path / "confusion.png"))
    panels = [ax for ax in figures["confusion.png"].axes if ax.get_images()]
    assert len(panels) == 2
    assert [ax.get_images()[0].get_clim() for ax in panels] == [(0, pytest.approx(21 / 104))] * 2


def test_classes_without_a_value_are_marked_on_the_per_class_plot(tmp_path, figures):
    """A class too small for FID (n/a in the tables) left a silent gap in the line, invisible where
    it is the last class: it is marked at the foot of the panel in its variant's colour."""
    agg = synthetic_agg(10, 3, [1.0])
    missing = agg["metric"].eq("fid") & agg["scope"].isin(["class 9", "class 4"]) & agg["variant"].eq("cbdm")
    agg.loc[missing, ["mean", "sd"]] = np.nan
    counts = class_counts(10)
    plots.plot_per_class(agg, counts, groups(10), str(tmp_path / "per_class.png"))
    fid, kid = figures["per_class.png"].axes
    marks = [line for line in fid.get_lines() if line.get_marker() == "x"]
    order = plots.class_order(counts)
    assert len(marks) == 1 and sorted(marks[0].get_xdata()) == sorted([order.index(4), order.index(9)])
    assert marks[0].get_color() == [line for line in fid.get_lines() if line.get_label() == "cbdm"][0].get_color()
    assert any("no value" in text.get_text() for text in fid.get_legend().get_texts())
    assert not [line for line in kid.get_lines() if line.get_marker() == "x"]  # KID has every class


def test_a_class_without_samples_is_greyed_in_the_confusion_not_drawn_as_no_leakage(tmp_path, figures):
    """A row of zeros (a class without generated samples) was drawn as 0 % leakage everywhere."""
    counts = np.eye(4) * 9 + 1
    counts[2] = 0
    plots.plot_confusions({"v": counts}, {"head": [0, 1], "tail": [2, 3]}, str(tmp_path / "confusion.png"))
    fig = figures["confusion.png"]
    shown = [ax for ax in fig.axes if ax.get_images()][0].get_images()[0].get_array()
    assert np.ma.getmaskarray(shown)[2].all() and not np.ma.getmaskarray(shown)[1].all()
    assert "without samples" in fig._suptitle.get_text()
    assert len(fig.axes[0].texts) == 12  # numbers on the sampled rows only


def test_a_memorization_panel_without_samples_says_so(tmp_path, figures):
    samples, train = image_files(tmp_path, 10)
    images = plots.read_images(samples["ddpm"])
    kept = images["labels"] != 9
    shown = {"ddpm": {"images": images["images"][kept], "labels": images["labels"][kept]}}
    agg = synthetic_agg(10, 1, [1.0])
    plots.plot_memorization(shown, plots.read_images(train), agg, class_counts(10), groups(10),
                            str(tmp_path / "memorization.png"))
    panel = [ax for ax in figures["memorization.png"].axes if ax.get_title().startswith("class 9 ")][0]
    assert panel.get_xlabel().startswith("0 samples, ")


def test_a_group_without_a_value_is_named_on_the_group_figures(tmp_path, figures):
    """A tail group too small for FID, precision and recall left an empty slot over 'tail' in the
    groups figure and no point in the precision-recall figure, whose legend still listed it."""
    agg = synthetic_agg(10, 3, [1.0])
    gone = agg["scope"].eq("tail") & agg["metric"].isin(["fid", "precision", "recall"])
    agg.loc[gone, ["mean", "sd"]] = np.nan
    plots.plot_groups(agg, ["all", "head", "tail"], str(tmp_path / "groups.png"))
    plots.plot_precision_recall(agg, ["all", "head", "tail"], str(tmp_path / "pr.png"))
    groups_fig = figures["groups.png"]
    fid_panel = groups_fig.axes[0]
    marks = [line for line in fid_panel.get_lines() if line.get_marker() == "x"]
    assert sorted(x for line in marks for x in line.get_xdata()) == pytest.approx([1.7, 2.3])  # tail, per variant
    assert "x at the foot: no value" in groups_fig._suptitle.get_text()
    assert not [line for line in groups_fig.axes[3].get_lines() if line.get_marker() == "x"]  # accuracy has all
    assert "no value (see the tables' notes): ddpm tail, cbdm tail" in figures["pr.png"].axes[0].get_title()


@pytest.mark.parametrize("count, channels, columns", [(7, 1, 3), (4, 3, 2), (2, 3, 8)])
def test_the_image_grid_is_torchvisions_make_grid_pixel_for_pixel(count, channels, columns):
    """The report drew its grids with torchvision's make_grid, whose import (torch._dynamo with
    it) was seconds of every report job; the numpy tiling must draw the same picture, grey
    images as RGB, a short last row padded white."""
    import torch
    from torchvision.utils import make_grid

    images = np.random.default_rng(0).integers(0, 256, (count, channels, 5, 6), dtype=np.uint8)
    expected = make_grid(torch.from_numpy(images).float() / 255.0, nrow=columns, padding=plots.GRID_GUTTER,
                         pad_value=1.0).permute(1, 2, 0).numpy()
    assert np.array_equal(plots.tile_grid(images, columns), expected)
