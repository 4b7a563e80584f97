"""Sample sets from anywhere: every accepted format gives the suite's records, every bad input
its named error, reference statistics give the FID the images give."""
import json

import numpy as np
import pytest
from PIL import Image

from cbdm.classifier import train_classifier
from cbdm.config import validate_config
from cbdm.dataset import data_origin, prepare_source, read_image_set, reference_origin
from cbdm.evaluate import evaluate
from cbdm.features import extract_features
from cbdm.io import InputError, read_json, write_json, write_npz
from cbdm.refstats import evaluate_against_stats, read_reference_stats, write_reference_stats
from cbdm.samplesets import (
    SampleSetError,
    class_index,
    export_samples,
    fit_to_protocol,
    import_samples,
    read_samples,
)
from cbdm.sources import CLASS_NAMES, ImageSet

DIGITS = CLASS_NAMES["sklearn_digits"]
SHAPE = (1, 8, 8)
PER_CLASS = 12
GROUPS = {"head": [0, 1, 2, 3, 4], "tail": [5, 6, 7, 8, 9]}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Real digits: a prepared source (pool + 30 held-out images per class), a small trained
    classifier, and the held-out set's features as the reference."""
    root = tmp_path_factory.mktemp("suite")
    config = validate_config({"suite": "t", "datasets": {"digits": {
        "source": "sklearn_digits", "heldout_per_class": 30, "longtail": {"n_max": 100}, "groups": GROUPS}},
        "features": {"feature_dim": 8, "epochs": 2},
        "evaluation": {"kid_subset_size": 20, "kid_subsets": 5, "matched_repeats": 3, "kid_bootstrap": 5},
        "variants": {"v": {"losses": [{"name": "eps_mse"}]}}})
    spec = config["datasets"]["digits"]
    prepare_source(spec, str(root / "source.npz"), str(root / "source.json"), origin=data_origin("digits", spec))
    train_classifier(config["features"], source_npz=str(root / "source.npz"), num_classes=10, device="cpu",
                     out_model=str(root / "classifier.pt"), out_report=str(root / "classifier.json"),
                     source_origin=data_origin("digits", spec))
    heldout_features(config, root / "source.npz", root / "classifier.pt", root / "reference.npz")
    return {"root": root, "config": config}


def heldout_features(config: dict, source, classifier, out) -> None:
    """The held-out set's features, recording the reference set as the workflow's job does."""
    extract_features(features_cfg=config["features"], classifier_path=str(classifier), images_npz=str(source),
                     prefix="heldout_", device="cpu", out_npz=str(out),
                     reference_origin=reference_origin("digits", config["datasets"]["digits"], "heldout", 100.0))


def samples_of(suite) -> ImageSet:
    """The first 12 pool images of every class, grouped by class: a stand-in for generated samples."""
    pool = read_image_set(str(suite["root"] / "source.npz"), "pool_")
    keep = np.concatenate([np.where(pool.labels == c)[0][:PER_CLASS] for c in range(10)])
    return pool.subset(keep)


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_class_folder(images: ImageSet, root, names=None):
    for i, (image, label) in enumerate(zip(images.images, images.labels)):
        folder = str(label) if names is None else names[label]
        write_png(root / folder / f"{i:05d}.png", image[0])
    return root


def write_edm_folder(images: ImageSet, root):
    names = [f"{i // 50:05d}/img{i:08d}.png" for i in range(len(images.labels))]
    for name, image in zip(names, images.images):
        write_png(root / name, image[0])
    (root / "dataset.json").write_text(json.dumps({"labels": [[n, int(y)] for n, y in zip(names, images.labels)]}))
    return root


def write_guided_npz(images: ImageSet, path):
    np.savez(path, arr_0=images.images.transpose(0, 2, 3, 1), arr_1=images.labels)
    return path


def write_suite_npz(images: ImageSet, path):
    write_npz(path, images=images.images, labels=images.labels, seeds=np.arange(len(images.labels)))
    return path


def every_format(images: ImageSet, root) -> dict:
    return {"class_folder": write_class_folder(images, root / "folder"),
            "edm": write_edm_folder(images, root / "edm"),
            "guided_npz": write_guided_npz(images, root / "guided.npz"),
            "suite_npz": write_suite_npz(images, root / "suite.npz")}


def read(path, **kw):
    return read_samples(path, num_classes=10, image_shape=SHAPE, class_names=DIGITS, **kw)


def score(suite, source, out_dir, num_samples=10 * PER_CLASS, resize=False, cell=None) -> list[dict]:
    """import -> features -> records, as `cbdm evaluate` and the import, features and metrics rules do."""
    out_dir.mkdir(exist_ok=True)
    import_samples(source=str(source), fmt="auto", resize=resize, labels="exact", num_samples=num_samples,
                   class_counts=[1] * 10, image_shape=list(SHAPE), class_names=DIGITS,
                   source_npz=str(suite["root"] / "source.npz"), out_npz=str(out_dir / "samples.npz"))
    extract_features(features_cfg=suite["config"]["features"], classifier_path=str(suite["root"] / "classifier.pt"),
                     images_npz=str(out_dir / "samples.npz"), prefix="", device="cpu",
                     out_npz=str(out_dir / "features.npz"))
    evaluate(generated_npz=str(out_dir / "features.npz"), reference_npz=str(suite["root"] / "reference.npz"),
             groups=GROUPS, num_classes=10, evaluation=suite["config"]["evaluation"], cell=cell or {}, device="cpu",
             out_json=str(out_dir / "metrics.json"))
    return read_json(out_dir / "metrics.json")["records"]


def without_import_note(records):
    return [{**r, "note": r["note"].split("; imported from")[0].split("imported from")[0]} for r in records]


def test_every_format_is_detected_and_reads_the_same_arrays(suite, tmp_path):
    images = samples_of(suite)
    for fmt, path in every_format(images, tmp_path).items():
        imported = read(path)
        assert imported.format == fmt and imported.note == ""
        np.testing.assert_array_equal(imported.images.images, images.images)
        np.testing.assert_array_equal(imported.images.labels, images.labels)


def test_every_format_gives_the_records_of_the_suites_own_npz(suite, tmp_path):
    paths = every_format(samples_of(suite), tmp_path)
    expected = without_import_note(score(suite, paths.pop("suite_npz"), tmp_path / "suite_out"))
    assert any(r["metric"] == "fid" and r["value"] > 0 for r in expected)
    digest = np.load(tmp_path / "suite_out/samples.npz")["source_digest"]
    for fmt, path in paths.items():
        assert without_import_note(score(suite, path, tmp_path / f"{fmt}_out")) == expected, fmt
        assert np.load(tmp_path / f"{fmt}_out/samples.npz")["source_digest"] == digest  # the same content


def test_heldout_images_scored_as_samples_give_fid_near_zero(suite, tmp_path):
    heldout = read_image_set(str(suite["root"] / "source.npz"), "heldout_")
    records = score(suite, write_class_folder(heldout, tmp_path / "oracle"), tmp_path / "oracle_out", 300)
    fids = {r["scope"]: r["value"] for r in records if r["metric"] == "fid"}
    assert abs(fids["all"]) < 1e-6 and abs(fids["tail"]) < 1e-6 and abs(fids["class 3"]) < 1e-6
    assert "imported from" in next(r["note"] for r in records if r["metric"] == "fid")


def test_fid_from_reference_statistics_equals_fid_from_the_images(suite, tmp_path):
    paths = every_format(samples_of(suite), tmp_path)
    records = score(suite, paths["suite_npz"], tmp_path / "out")
    stats_file = tmp_path / "reference-heldout.stats.npz"
    write_reference_stats(reference_npz=str(suite["root"] / "reference.npz"), groups=GROUPS, num_classes=10,
                          extractor="classifier 8-d", reference="heldout", out_npz=str(stats_file))
    stats = read_reference_stats(stats_file)
    assert stats["mu"].shape == (8,) and stats["sigma"].shape == (8, 8) and int(stats["n"]) == 300
    assert int(stats["n_class_3"]) == 30 and list(stats["classes_tail"]) == GROUPS["tail"]
    gen = dict(np.load(tmp_path / "out/features.npz"))
    from_stats = evaluate_against_stats(gen, str(stats_file), GROUPS, 10, suite["config"]["evaluation"],
                                        extractor="classifier 8-d", reference="heldout")
    images = {r["scope"]: r for r in records if r["metric"] == "fid"}
    compared = 0
    for r in (r for r in from_stats if r["metric"] == "fid"):
        assert r["n_ref"] == images[r["scope"]]["n_ref"]
        if images[r["scope"]]["value"] is not None:
            assert r["value"] == pytest.approx(images[r["scope"]]["value"], rel=1e-8)
            compared += 1
    assert compared == 13  # all, two groups, ten classes
    # EDM's reference files hold only mu and sigma: accepted, per-scope FIDs say they are missing
    np.savez(tmp_path / "edm.npz", mu=stats["mu"], sigma=stats["sigma"])
    edm = {r["scope"]: r for r in evaluate_against_stats(gen, str(tmp_path / "edm.npz"), GROUPS, 10,
                                                           suite["config"]["evaluation"], extractor="classifier 8-d",
                                                           reference="heldout") if r["metric"] == "fid"}
    assert edm["all"]["value"] == pytest.approx(images["all"]["value"], rel=1e-8)
    assert edm["tail"]["value"] is None and "has no statistics for tail" in edm["tail"]["note"]


def test_statistics_of_another_reference_set_say_which_statistics_to_give(suite, tmp_path):
    """`--ref-stats` of another held-out split was refused with the advice for the workflow's own
    files, `--forcerun` the given file (another suite's, or one the user fetched), which cannot
    make it this protocol's."""
    paths = every_format(samples_of(suite), tmp_path)
    score(suite, paths["suite_npz"], tmp_path / "out")
    stats_file = tmp_path / "reference-heldout.stats.npz"
    write_reference_stats(reference_npz=str(suite["root"] / "reference.npz"), groups=GROUPS, num_classes=10,
                          extractor="classifier 8-d", reference="heldout", out_npz=str(stats_file),
                          reference_origin=reference_origin("digits", suite["config"]["datasets"]["digits"],
                                                            "heldout", 100.0))
    gen = dict(np.load(tmp_path / "out/features.npz"))
    other_split = {**suite["config"]["datasets"]["digits"], "heldout_per_class": 20}
    with pytest.raises(InputError) as err:
        evaluate_against_stats(gen, str(stats_file), GROUPS, 10, suite["config"]["evaluation"],
                               extractor="classifier 8-d", reference="heldout",
                               reference_origin=reference_origin("digits", other_split, "heldout", 100.0))
    assert str(err.value).startswith(f"{stats_file} was made for data_digest ")
    assert str(err.value).endswith("; give --ref-stats the statistics of this suite's heldout reference set "
                                   "(rule reference_stats writes them), or leave --ref-stats out to score against "
                                   "its images")


def test_export_then_import_gives_the_original_arrays(suite, tmp_path):
    images = samples_of(suite)
    source = write_suite_npz(images, tmp_path / "ours.npz")
    export_samples(str(source), str(tmp_path / "png"), "folder")
    export_samples(str(source), str(tmp_path / "theirs.npz"), "npz")
    for path, fmt in ((tmp_path / "png", "class_folder"), (tmp_path / "theirs.npz", "guided_npz")):
        back = read(path)
        assert back.format == fmt
        np.testing.assert_array_equal(back.images.images, images.images)
        np.testing.assert_array_equal(back.images.labels, images.labels)
    with pytest.raises(SampleSetError, match="is not empty: export into a new folder"):
        export_samples(str(source), str(tmp_path / "png"), "folder")


def test_class_folders_may_be_named_by_class_name():
    from pathlib import Path

    assert class_index(Path("x/Airplane"), CLASS_NAMES["cifar10"]) == 0
    assert class_index(Path("x/t-shirt_top"), CLASS_NAMES["fashion_mnist"]) == 0
    assert class_index(Path("x/maple_tree"), CLASS_NAMES["cifar100"]) == 47
    assert class_index(Path("x/12"), CLASS_NAMES["cifar100"]) == 12
    with pytest.raises(SampleSetError, match="neither a class index nor a class name"):
        class_index(Path("x/zebra"), CLASS_NAMES["cifar10"])


def gray(side=8, value=0):
    return np.full((side, side), value, dtype=np.uint8)


def test_a_wrong_image_size_is_refused_or_resized_only_when_asked(tmp_path):
    for c in range(10):
        write_png(tmp_path / "big" / str(c) / "a.png", gray(16, 20 * c))
    with pytest.raises(SampleSetError, match="wrong image size for the suite: .* holds 16x16 images, the suite's "
                                             "are 8x8; .* --resize"):
        read(tmp_path / "big")
    resized = read(tmp_path / "big", resize=True)
    assert resized.images.images.shape == (10, 1, 8, 8) and resized.images.images[3].max() == 60
    assert resized.note == "resized from 16x16 to 8x8 (antialiased bilinear) on import"


@pytest.mark.parametrize("make, message", [
    (lambda d: [write_png(d / "0" / "a.png", gray()), write_png(d / "1" / "b.png", gray(9))],
     "mixed image sizes or channels in .*: .*a.png is 1x8x8 .* but .*b.png is 1x9x9"),
    (lambda d: [write_png(d / "0" / "a.png", gray()), write_png(d / "0" / "b.png", np.zeros((8, 8, 3), np.uint8))],
     "mixed image sizes or channels"),
    (lambda d: [write_png(d / "0" / "a.png", gray()), (d / "0" / "notes.txt").write_text("x")],
     "non-image file .*notes.txt"),
    (lambda d: [write_png(d / "0" / "a.png", gray()), (d / "0" / "b.png").write_text("not a png")],
     "b.png is not a readable image"),
    (lambda d: d.mkdir(), "empty folder"),
    (lambda d: [write_png(d / "0" / "a.png", np.zeros((8, 8, 3), np.uint8))],
     "images have 3 channel\\(s\\), the suite's have 1"),
    (lambda d: [write_png(d / "a.png", gray())], "flat folder without dataset.json"),
    (lambda d: [write_png(d / "10" / "a.png", gray())], "labels range 10..10, but the dataset has classes 0..9"),
    (lambda d: [write_png(d / "a.png", gray()), write_png(d / "b.png", gray()),
                (d / "dataset.json").write_text(json.dumps({"labels": [["a.png", 1]]}))],
     "b.png has no label in .*dataset.json"),
])
def test_a_bad_folder_gives_its_named_error(tmp_path, make, message):
    folder = tmp_path / "samples"
    make(folder)
    with pytest.raises(SampleSetError, match=message):
        read(folder)


def test_a_bad_npz_gives_its_named_error(tmp_path):
    np.savez(tmp_path / "labels.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8), arr_1=np.array([0, 1, 2, 12]))
    with pytest.raises(SampleSetError, match="labels range 0..12"):
        read(tmp_path / "labels.npz")
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((4, 8, 8, 1)), arr_1=np.zeros(4, int))
    with pytest.raises(SampleSetError, match="images are float64, expected uint8; save uint8 images"):
        read(tmp_path / "float.npz")
    np.savez(tmp_path / "nolabels.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
    with pytest.raises(SampleSetError, match="no labels \\(arr_1\\)"):
        read(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "cast.npz", arr_0=(np.random.rand(4, 8, 8, 1)).astype(np.uint8), arr_1=np.zeros(4, int))
    with pytest.raises(SampleSetError, match="every pixel is 0: were images in \\[0, 1\\] cast to uint8"):
        read(tmp_path / "cast.npz")
    np.savez(tmp_path / "empty.npz", arr_0=np.zeros((0, 8, 8, 1), np.uint8), arr_1=np.zeros(0, int))
    with pytest.raises(SampleSetError, match="empty sample set"):
        read(tmp_path / "empty.npz")
    with pytest.raises(SampleSetError, match="does not exist"):
        read(tmp_path / "missing.npz")


def test_a_users_npz_that_cannot_be_read_as_its_format_says_how_to_save_it(tmp_path):
    """A truncated .npz gave zipfile's traceback; an unloadable one, or one without the arrays of
    the format named by --format, was refused with read_npz's advice for the workflow's own files
    (`--forcerun` the file: the user made it, no stage does), or said it held arr_0 when it did not."""
    images, labels = np.zeros((4, 8, 8, 1), np.uint8), np.arange(4)
    np.savez(tmp_path / "guided.npz", arr_0=images, arr_1=labels)
    np.savez(tmp_path / "suite.npz", images=images.transpose(0, 3, 1, 2), labels=labels)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "guided.npz").read_bytes()[:100])
    np.savez(tmp_path / "objects.npz", images=np.empty(4, dtype=object), labels=labels)
    cases = [("cut.npz", "auto", "cut.npz is not a readable .npz file"),
             ("objects.npz", "auto", "objects.npz is not a readable .npz file"),
             ("guided.npz", "suite_npz", "guided.npz has no array 'images' .*suite_npz layout is `images` uint8 "),
             ("suite.npz", "guided_npz", "suite.npz has no array 'arr_0' .*guided_npz layout is `arr_0` uint8 ")]
    for name, fmt, message in cases:
        with pytest.raises(SampleSetError, match=message) as err:
            read(tmp_path / name, fmt=fmt)
        assert "--forcerun" not in str(err.value)


@pytest.mark.parametrize("fmt", ["class_folder", "edm", "guided_npz", "suite_npz"])
def test_a_format_named_for_the_wrong_kind_of_path_is_refused_as_such(tmp_path, fmt):
    """--format class_folder (or edm) on an .npz file ended in NotADirectoryError's traceback; an
    .npz format on a folder said to save the folder again with numpy.savez."""
    np.savez(tmp_path / "set.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8), arr_1=np.arange(4))
    (tmp_path / "folder" / "0").mkdir(parents=True)
    path = tmp_path / ("set.npz" if fmt in ("class_folder", "edm") else "folder")
    kind, reads = ("a file", "a folder") if fmt in ("class_folder", "edm") else ("a folder", "an .npz file")
    with pytest.raises(SampleSetError, match=f"^{path} is {kind}, but format {fmt} reads {reads}: name its format "
                                             f"with --format \\(samples_format\\), or leave it auto"):
        read(path, fmt=fmt)


def test_a_suite_npz_saved_channels_last_is_refused_as_such(tmp_path):
    """[N, H, W, C] under `images` used to be read as 8 channels, with the advice to convert to grayscale."""
    images = np.random.RandomState(0).randint(0, 256, (20, 8, 8, 1)).astype(np.uint8)
    write_npz(tmp_path / "nhwc.npz", images=images, labels=np.arange(20) % 10)
    with pytest.raises(SampleSetError, match=r"nhwc.npz: images have shape \(20, 8, 8, 1\), channels-last "
                                             r"\[N, H, W, C\]; the suite's `images` are \[N, C, H, W\]: save "
                                             r"images.transpose\(0, 3, 1, 2\)"):
        read(tmp_path / "nhwc.npz")
    write_npz(tmp_path / "nchw.npz", images=images.transpose(0, 3, 1, 2), labels=np.arange(20) % 10)
    assert read(tmp_path / "nchw.npz").images.images.shape == (20, 1, 8, 8)


def c_cast(values: np.ndarray) -> np.ndarray:
    """`values.astype(np.uint8)` as C casts floats on x86 (truncation, then modulo 256), written out
    because numpy leaves the cast of negative floats undefined."""
    return (np.trunc(values).astype(np.int64) % 256).astype(np.uint8)


@pytest.mark.parametrize("convert, message", [
    (lambda v: np.rint(v / 255 * 16).astype(np.uint8), "no pixel is above 16, while the training images' "
                                                     "brightest 1 % reach 255: .*save them scaled to 0..255"),
    (lambda v: v // 2, "no pixel is above 127"),
    (lambda v: c_cast(v / 127.5 - 1), "100.0% of the pixels are 0, 1 or 255 .*were images in \\[-1, 1\\] cast"),
    (lambda v: c_cast(255 * (v / 127.5 - 1)), "[0-9.]+% of the pixels are 0, the training images' background value "
                                              ".* are 1: images in \\[-1, 1\\] saved as \\(255 \\* x\\).astype"),
    (lambda v: 255 - v, "are 255: inverted images"),
])
def test_pixel_values_on_another_scale_than_the_training_images_are_refused(suite, tmp_path, convert, message):
    """Real digits saved by a mistaken conversion: uint8 of the right shape, scored without error
    (sklearn's 0..16 scale at FID 65, the wrapped [-1, 1] cast at an FID better than the truth)."""
    heldout = read_image_set(str(suite["root"] / "source.npz"), "heldout_")
    path = write_guided_npz(ImageSet(convert(heldout.images), heldout.labels), tmp_path / "mistaken.npz")
    pool = read_image_set(str(suite["root"] / "source.npz"), "pool_").images
    with pytest.raises(SampleSetError, match=f"mistaken.npz: .*{message}"):
        read(path, reference=pool)
    with pytest.raises(SampleSetError, match=message):
        score(suite, path, tmp_path / "out", 300)


def test_real_images_and_poor_generators_pass_the_intensity_check(suite, tmp_path):
    """An untrained model's clamped noise, a background a few levels off, a grey background, real
    images: all scored."""
    heldout = read_image_set(str(suite["root"] / "source.npz"), "heldout_")
    pool = read_image_set(str(suite["root"] / "source.npz"), "pool_").images
    noise = np.clip(np.random.RandomState(0).randn(*heldout.images.shape), -1, 1)
    lifted = np.minimum(heldout.images.astype(int) + np.random.RandomState(1).randint(0, 4, heldout.images.shape), 255)
    grey = np.where(heldout.images == 0, 6, heldout.images)  # a generator's own grey background
    for name, images in {"real": heldout.images, "noise": np.rint((noise + 1) * 127.5).astype(np.uint8),
                         "edm_noise": (noise * 127.5 + 128).clip(0, 255).astype(np.uint8),
                         "lifted": lifted.astype(np.uint8),
                         "grey_background": grey.astype(np.uint8)}.items():
        path = write_guided_npz(ImageSet(images, heldout.labels), tmp_path / f"{name}.npz")
        assert read(path, reference=pool).images.images.shape == heldout.images.shape, name


def test_a_class_with_too_few_samples_for_the_protocol_is_refused():
    labels = np.array([c for c in range(10) for _ in range(1 if c == 8 else 3)])  # class 8: one image
    images = ImageSet(np.zeros((28, 1, 8, 8), np.uint8), labels)
    with pytest.raises(SampleSetError, match="class 8 has 1 samples in x, fewer than the 2 the protocol needs"):
        fit_to_protocol(images, "exact", 20, [5] * 10, "x")
    kept, note = fit_to_protocol(images, "exact", 10, [5] * 10, "x")
    assert kept.labels.tolist() == list(range(10)) and "scored 10 of the 28 images given" in note
    kept, note = fit_to_protocol(images, "uniform_random", 28, [5] * 10, "x")
    assert len(kept.labels) == 28 and note == ""
    with pytest.raises(SampleSetError, match="x holds 28 images; the protocol needs 30"):
        fit_to_protocol(images, "uniform_random", 30, [5] * 10, "x")


def test_uniform_random_scores_a_random_subset_of_a_file_sorted_by_class():
    """A file sorted by class: its first 1,000 of 5,000 images would be classes 0 and 1 only."""
    labels = np.repeat(np.arange(10), 500)
    images = ImageSet(np.zeros((5000, 1, 2, 2), np.uint8), labels)
    kept, note = fit_to_protocol(images, "uniform_random", 1000, [500] * 10, "x")
    counts = np.bincount(kept.labels, minlength=10)
    assert len(kept.labels) == 1000 and counts.min() > 60 and counts.max() < 140
    assert np.all(np.diff(kept.labels) >= 0)  # the file's order is kept
    assert note == "scored 1000 of the 5000 images given, drawn at random (seed 0)"
    assert fit_to_protocol(images, "uniform_random", 1000, [500] * 10, "x")[0].labels.tolist() == kept.labels.tolist()


def evaluate_entry(suite, name, samples, config=None, root=None, manifest_origin=None, **options) -> dict:
    """`cbdm evaluate`'s scoring of `samples` as entry `name` (cbdm.external.score, the suite's
    files from the `suite` fixture, or the classifier and reference features in `root`, a
    protocol of 120 exact samples) in the current folder; its cell. The manifest records the
    long tail of `config` (IF 100), or `manifest_origin`."""
    from cbdm.external import score

    config, root = config or suite["config"], root or suite["root"]
    origin = manifest_origin or data_origin("digits", config["datasets"]["digits"], 100.0)
    write_json(suite["root"] / "manifest.json", {"class_counts": [1] * 10, "origin": origin})
    paths = {"classifier": str(root / "classifier.pt"), "source_json": str(suite["root"] / "source.json"),
             "source_npz": str(suite["root"] / "source.npz"),
             "manifest": str(suite["root"] / "manifest.json"), "reference": str(root / "reference.npz")}
    options = {"fmt": "auto", "resize": False, "ref_stats": None, **options}
    metrics = score(config=with_protocol(config), samples=str(samples), name=name, dataset="digits", imb="100",
                    protocol="ours", paths=paths, device="cpu", **options)
    return read_json(metrics)["cell"]


def with_protocol(config: dict) -> dict:
    """`config` whose protocol `ours` scores 120 samples (12 of each class), what samples_of holds."""
    evaluation = config["evaluation"]
    return {**config, "evaluation": {**evaluation, "protocols": {"ours": {**evaluation["protocols"]["ours"],
                                                                          "num_samples": 10 * PER_CLASS}}}}


def upscaled(images: ImageSet, factor=2) -> ImageSet:
    """Every image `factor` times larger (each pixel repeated), as another method's larger samples."""
    return ImageSet(images.images.repeat(factor, axis=2).repeat(factor, axis=3), images.labels)


@pytest.mark.parametrize("stats", [False, True], ids=["images", "statistics"])
def test_a_resize_on_import_is_part_of_the_measurement_and_gets_a_card_of_its_own(suite, in_tmp, stats):
    """Resized images score differently from images made at the suite's size: the resize (from,
    to, how) is in the cell's preprocessing, so the leaderboard never puts the two in one card."""
    from pathlib import Path

    from cbdm.leaderboard import describe_features, leaderboard, markdown, measurement

    options = {}
    if stats:
        options["ref_stats"] = str(in_tmp / "reference.stats.npz")
        write_reference_stats(reference_npz=str(suite["root"] / "reference.npz"), groups=GROUPS, num_classes=10,
                              extractor=describe_features(suite["config"]["features"]), reference="heldout",
                              out_npz=options["ref_stats"])
    images = samples_of(suite)
    native = evaluate_entry(suite, "native", write_guided_npz(images, in_tmp / "native.npz"), **options)
    big = evaluate_entry(suite, "big", write_guided_npz(upscaled(images), in_tmp / "big.npz"), resize=True, **options)
    plain = measurement(suite["config"]["features"], suite["config"]["datasets"]["digits"],
                        suite["config"]["evaluation"])["preprocessing"]
    assert native["preprocessing"] == plain
    assert big["preprocessing"] == f"imported resized from 16x16 to 8x8 (antialiased bilinear); then {plain}"
    text = markdown(leaderboard(with_protocol(suite["config"]), Path("results/t")), "t")
    assert text.count("## Card") == 2 and "preprocessing: imported resized from 16x16 to 8x8" in text


def test_cbdm_evaluate_refuses_a_prepared_source_of_other_settings(suite, in_tmp):
    """`cbdm evaluate` checked the imported set's pixel values against whatever source.npz it found:
    one split with another held-out size (kept from an earlier config) passed as this config's."""
    spec = suite["config"]["datasets"]["digits"]
    other = {**suite["config"], "datasets": {"digits": {**spec, "heldout_per_class": 20}}}
    samples = write_guided_npz(samples_of(suite), in_tmp / "samples.npz")
    # source.json is read first, and records the same origin as source.npz
    with pytest.raises(InputError, match=r"source\.json was made for data_digest [0-9a-f]{16}, but this job needs "
                                         r"data_digest [0-9a-f]{16}: .*--forcerun"):
        evaluate_entry(suite, "other", samples, config=other)
    assert not (in_tmp / "results").exists()


@pytest.mark.parametrize("wrong", ["classifier", "manifest"])
def test_cbdm_evaluate_refuses_a_classifier_of_another_source_or_a_manifest_of_another_long_tail(suite, in_tmp,
                                                                                                 wrong):
    """`cbdm evaluate` featurised with whatever classifier.pt it found and drew the protocol's class
    counts from whatever manifest.json: a classifier trained on a source split with another
    held-out size, or the manifest of a long tail drawn with another seed (kept from an earlier
    config, or copied), passed as this config's."""
    import torch

    spec = suite["config"]["datasets"]["digits"]
    samples = write_guided_npz(samples_of(suite), in_tmp / "samples.npz")
    if wrong == "classifier":
        payload = torch.load(suite["root"] / "classifier.pt", weights_only=True)
        torch.save({**payload, "source": data_origin("digits", {**spec, "heldout_per_class": 20})},
                   in_tmp / "classifier.pt")
        # the reference features the stale classifier made, as its features job wrote them
        heldout_features(suite["config"], suite["root"] / "source.npz", in_tmp / "classifier.pt",
                         in_tmp / "reference.npz")
        with pytest.raises(InputError, match=r"classifier.pt was trained with data_digest [0-9a-f]{16}, but this "
                                             r"config's features and data settings have data_digest [0-9a-f]{16}: "
                                             r".*--forcerun"):
            evaluate_entry(suite, "other", samples, root=in_tmp)
    else:
        other = data_origin("digits", {**spec, "longtail": {**spec["longtail"], "seed": 1}}, 100.0)
        with pytest.raises(InputError, match=r"manifest.json was made for data_digest [0-9a-f]{16}, but this job "
                                             r"needs data_digest [0-9a-f]{16}: .*--forcerun"):
            evaluate_entry(suite, "other", samples, manifest_origin=other)
    assert not list(in_tmp.rglob("features.npz")) and not list(in_tmp.rglob("ours.json"))


def test_samples_resize_of_a_config_variant_is_part_of_its_cells_measurement(suite, tmp_path):
    """`samples_resize: true` in the config: the import, features and metrics jobs (score) carry
    the resize into the cell the metrics rule writes."""
    from cbdm.leaderboard import measurement

    cell = measurement(suite["config"]["features"], suite["config"]["datasets"]["digits"],
                        suite["config"]["evaluation"])
    score(suite, write_guided_npz(upscaled(samples_of(suite)), tmp_path / "big.npz"), tmp_path / "out",
          resize=True, cell=cell)
    written = read_json(tmp_path / "out/metrics.json")["cell"]
    assert written["preprocessing"] == f"imported resized from 16x16 to 8x8 (antialiased bilinear); then " \
                                       f"{cell['preprocessing']}"


def write_jpeg_folder(images: ImageSet, root, suffix=".jpg"):
    """A class folder of the images saved as JPEG at quality 75 (lossy), under `suffix`."""
    for i, (image, label) in enumerate(zip(images.images, images.labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0]).save(root / str(label) / f"{i:05d}{suffix}", format="JPEG", quality=75)
    return root


def test_images_read_from_jpeg_are_scored_but_get_a_card_of_their_own(suite, in_tmp):
    """JPEG compression changes the pixels, and so the scores, of what a method made: a JPEG
    folder is scored (its outputs may exist only as JPEG), its preprocessing says so, even under
    a .png name, and the leaderboard keeps it apart from the same images read losslessly."""
    from pathlib import Path

    from cbdm.leaderboard import leaderboard, markdown, measurement

    images = samples_of(suite)
    png = evaluate_entry(suite, "png", write_class_folder(images, in_tmp / "png"))
    jpeg = evaluate_entry(suite, "jpeg", write_jpeg_folder(images, in_tmp / "jpeg"))
    plain = measurement(suite["config"]["features"], suite["config"]["datasets"]["digits"],
                        suite["config"]["evaluation"])["preprocessing"]
    assert png["preprocessing"] == plain and jpeg["preprocessing"] == f"imported from JPEG (lossy); then {plain}"
    assert read(write_jpeg_folder(images, in_tmp / "misnamed", ".png")).preprocessing == "from JPEG (lossy)"
    text = markdown(leaderboard(with_protocol(suite["config"]), Path("results/t")), "t")
    assert text.count("## Card") == 2 and "preprocessing: imported from JPEG (lossy); then" in text


def test_other_evaluation_settings_or_another_classifier_get_a_card_of_their_own(suite, in_tmp):
    """The same samples scored with another precision/recall k and KID subset size, or with the
    features of another training of the classifier, give other numbers: each cell records its
    evaluation settings and the features file's extractor label, and each gets its own card."""
    from pathlib import Path

    from cbdm.leaderboard import describe_evaluation, leaderboard, markdown

    config, samples = suite["config"], write_guided_npz(samples_of(suite), in_tmp / "samples.npz")
    other, retrained = in_tmp / "other", {**config, "features": {**config["features"], "seed": 1}}
    train_classifier(retrained["features"], source_npz=str(suite["root"] / "source.npz"), num_classes=10,
                     device="cpu", out_model=str(other / "classifier.pt"), out_report=str(other / "classifier.json"),
                     source_origin=data_origin("digits", config["datasets"]["digits"]))
    heldout_features(retrained, suite["root"] / "source.npz", other / "classifier.pt", other / "reference.npz")
    k10 = {**config, "evaluation": {**config["evaluation"], "pr_neighborhood": 10, "kid_subset_size": 10}}
    cells = {"ours": evaluate_entry(suite, "ours", samples), "k10": evaluate_entry(suite, "k10", samples, k10),
             "retrained": evaluate_entry(suite, "retrained", samples, retrained, root=other)}
    assert cells["ours"]["evaluation"] == describe_evaluation(config["evaluation"])
    assert "precision/recall k=10; KID over 5 subsets of up to 10 " in cells["k10"]["evaluation"]
    assert cells["ours"]["extractor"] == cells["k10"]["extractor"] != cells["retrained"]["extractor"]
    assert cells["retrained"]["extractor"].startswith("classifier ")
    table = leaderboard(with_protocol(config), Path("results/t"))
    assert markdown(table, "t").count("## Card") == 3 and table["fid"].nunique() == 2


def test_cbdm_check_refuses_a_declared_sample_set_the_import_would_refuse(tmp_path, capsys):
    """A `samples:` set on sklearn's 0..16 scale passed `cbdm check` (only its path was checked)
    and failed in its import job, after the dataset and classifier jobs; a good set passes."""
    import yaml

    from cbdm.cli import main
    from cbdm.dataset import split_source

    from helpers import MINIMAL, minimal_config

    heldout = split_source(minimal_config()["datasets"]["digits"])[1]
    good = write_guided_npz(heldout, tmp_path / "good.npz")
    small = write_guided_npz(ImageSet(np.rint(heldout.images / 255 * 16).astype(np.uint8), heldout.labels),
                             tmp_path / "sixteen.npz")
    protocols = {"ours": {"labels": "exact", "num_samples": 500}}  # 50 a class: what the held-out set has
    for path, code in ((good, 0), (small, 1)):
        config = tmp_path / f"{path.stem}.yaml"
        variants = {**MINIMAL["variants"], "ours": {"samples": str(path)}}
        config.write_text(yaml.safe_dump({**MINIMAL, "variants": variants, "evaluation": {"protocols": protocols}}))
        assert main(["check", str(config)]) == code
    err = capsys.readouterr().err
    assert f"sixteen.yaml: variants.ours.samples (dataset digits): {small}: no pixel is above 16" in err
    assert "good.npz" not in err


def test_cbdm_check_refuses_a_declared_sample_set_with_too_few_images_of_a_class(tmp_path, capsys):
    """A `samples:` set with fewer images of a class than a protocol scores passed `cbdm check` and
    failed in its import job, after the dataset and classifier jobs."""
    import yaml

    from cbdm.cli import main
    from cbdm.dataset import split_source

    from helpers import MINIMAL, minimal_config

    heldout = split_source(minimal_config()["datasets"]["digits"])[1]
    keep = np.concatenate([np.where(heldout.labels == c)[0][:20 if c == 3 else 50] for c in range(10)])
    path = write_guided_npz(heldout.subset(keep), tmp_path / "few.npz")
    protocols = {"ours": {"labels": "exact", "num_samples": 500}, "small": {"labels": "exact", "num_samples": 200}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**MINIMAL, "variants": {**MINIMAL["variants"], "mine": {"samples": str(path)}},
                                      "evaluation": {"protocols": protocols, "is_splits": 5}}))
    assert main(["check", str(config)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "variants.mine" in line]
    assert err == [f"{config}: variants.mine.samples (dataset digits, protocol ours): class 3 has 20 samples in "
                   f"{path}, fewer than the 50 the protocol needs (exact labels, 500 samples; 1 class(es) short): "
                   f"generate more"]


def test_cbdm_check_reads_a_declared_sample_set_for_each_dataset_and_names_the_factor_it_falls_short_at(
        tmp_path, capsys):
    """With two datasets, `cbdm check` crashed with AttributeError ('Imported' object has no
    attribute 'items') at the second; and a set short only at one imbalance factor's train_prior
    counts was refused without saying which factor."""
    import yaml

    from cbdm.cli import main
    from cbdm.dataset import split_source

    from helpers import MINIMAL, minimal_config

    heldout = split_source(minimal_config()["datasets"]["digits"])[1]
    keep = np.concatenate([np.where(heldout.labels == c)[0][:35 if c == 0 else 50] for c in range(10)])
    path = write_guided_npz(heldout.subset(keep), tmp_path / "mine.npz")
    longtail = {"n_max": 100, "imbalance_factor": [10, 100]}
    digits = {**MINIMAL["datasets"]["digits"], "longtail": longtail}
    other = {**digits, "longtail": {**digits["longtail"], "seed": 1}}
    protocols = {"prior": {"labels": "train_prior", "num_samples": 120},
                 "ours": {"labels": "exact", "num_samples": 500}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**MINIMAL, "datasets": {"digits": digits, "other": other},
                                      "variants": {**MINIMAL["variants"], "mine": {"samples": str(path)}},
                                      "evaluation": {"protocols": protocols}}))
    assert main(["check", str(config)]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "variants.mine" in line]
    for dataset in ("digits", "other"):
        mine = [line for line in err if f"(dataset {dataset}," in line]
        assert [line.split(": class")[0] for line in mine] == [
            f"{config}: variants.mine.samples (dataset {dataset}, protocol ours)",
            f"{config}: variants.mine.samples (dataset {dataset}, protocol prior, imbalance factor 100)"], err
