"""Sample sets from anywhere: read another method's samples into the suite's format, and
export the suite's samples in the formats other tools read.

Accepted formats (`detect_format` tells them apart; `fmt` names one explicitly):

- `class_folder`: a folder with one sub-folder per class, named by class index (`0`, `7`) or
  class name (`cbdm.sources.CLASS_NAMES`, case and punctuation ignored), holding PNG/JPEG images;
- `edm`: a folder of images (sub-folders allowed) plus EDM's `dataset.json`,
  `{"labels": [["00000/img00000000.png", 3], ...]}`, paths relative to the folder;
- `guided_npz`: an .npz with `arr_0` uint8 images [N, H, W, C] (or [N, H, W]) and `arr_1` int
  labels, as the guided-diffusion evaluator reads;
- `suite_npz`: the suite's own sample .npz (`images` uint8 [N, C, H, W], `labels`, `seeds`).

Every reader returns the suite's ImageSet (uint8 [N, C, H, W]). Images are never resized unless
asked (`resize=True`), and then the note and the row's measured preprocessing say so, as they
say when images were read from a lossy format (JPEG). Every way an input can be wrong raises a
SampleSetError whose message names the file and the fix.
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import image_set_problem
from .fingerprint import fingerprint, origin_array
from .io import InputError, atomic_path, read_npz, write_npz
from .sources import ImageSet

FORMATS = ("class_folder", "edm", "guided_npz", "suite_npz")
FOLDER_FORMATS = ("class_folder", "edm")  # the others read one .npz file
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LOSSY_FORMATS = ("JPEG",)  # PIL's names of the formats among IMAGE_SUFFIXES that change pixels when saved
EDM_LABELS = "dataset.json"
NO_SEED = -1  # imported images carry no sampling seed


class SampleSetError(InputError):
    """A sample set cannot be read or does not fit the suite; the message says why and how to fix it."""


@dataclass(frozen=True)
class Imported:
    """A sample set read from `path` in `format`; `note` says what was done to it ('' if nothing);
    `preprocessing` names what of that changed its pixels (a lossy file format, a resize), since
    that changes the scores and so belongs to the measurement its row is compared under
    (cbdm.leaderboard.measured_cell)."""
    images: ImageSet
    format: str
    note: str
    preprocessing: str = ""


def detect_format(path: Path) -> str:
    """Which of FORMATS `path` is in, from its layout or its arrays."""
    if not path.exists():
        raise SampleSetError(f"{path} does not exist: give a folder of images or an .npz file")
    if path.is_file():
        if path.suffix != ".npz":
            raise SampleSetError(f"{path} is a {path.suffix or 'suffix-less'} file: give an .npz file "
                                 f"or a folder of images")
        keys = npz_keys(path)
        if "arr_0" in keys:
            return "guided_npz"
        if {"images", "labels"} <= keys:
            return "suite_npz"
        raise SampleSetError(f"{path} holds arrays {sorted(keys)}: expected `arr_0` (images NHWC) and "
                             f"`arr_1` (labels), or the suite's `images` and `labels`")
    if (path / EDM_LABELS).exists():
        return "edm"
    entries = [p for p in path.iterdir()]
    if not entries:
        raise SampleSetError(f"empty folder {path}: it holds no images")
    if any(p.is_dir() for p in entries):
        return "class_folder"
    raise SampleSetError(f"{path} is a flat folder without {EDM_LABELS}: add EDM's {EDM_LABELS} "
                         f"(labels as [[file, label], ...]) or put the images in one sub-folder per class")


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def class_index(folder: Path, class_names: list[str]) -> int:
    """The class a sub-folder holds, from its name: an index, or a class name."""
    if folder.name.lstrip("-").isdigit():
        return int(folder.name)
    names = {_normalise(n): c for c, n in enumerate(class_names)}
    if _normalise(folder.name) not in names:
        raise SampleSetError(f"class folder {folder} is neither a class index nor a class name "
                             f"({', '.join(class_names[:12])}{', ...' if len(class_names) > 12 else ''})")
    return names[_normalise(folder.name)]


def load_image(file: Path) -> tuple[np.ndarray, str]:
    """One image file as uint8 [C, H, W] (C = 1 for grayscale, 3 for RGB), and its format as PIL
    reads it from the file's bytes ('PNG', 'JPEG'), which the suffix may misname."""
    from PIL import Image, UnidentifiedImageError

    if file.suffix.lower() not in IMAGE_SUFFIXES:
        raise SampleSetError(f"non-image file {file}: only {', '.join(IMAGE_SUFFIXES)} images may be in the "
                             f"sample folder; move it out")
    try:
        with Image.open(file) as image:
            mode, pixels, fmt = image.mode, np.asarray(image), image.format
    except (UnidentifiedImageError, OSError) as err:
        raise SampleSetError(f"{file} is not a readable image ({err}): re-save it or remove it") from err
    if mode not in ("L", "RGB"):
        raise SampleSetError(f"{file} has image mode {mode!r}: save 8-bit grayscale (L) or RGB images")
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)), fmt


def lossy_source(formats: list[str]) -> str:
    """'from JPEG (lossy)' for images read from JPEG files ('k of n images ...' when only some
    were), else '': lossy compression changes the pixels, and so the scores, of what the method
    made, so the row's measurement names it (the method's outputs may exist only as JPEG)."""
    lossy = [f for f in formats if f in LOSSY_FORMATS]
    if not lossy:
        return ""
    share = "" if len(lossy) == len(formats) else f"{len(lossy)} of {len(formats)} images "
    return f"{share}from {'/'.join(sorted(set(lossy)))} (lossy)"


def stack_images(arrays: list[np.ndarray], files: list[Path], where: Path) -> np.ndarray:
    """[N, C, H, W] from per-image arrays that must all have the same size and channels."""
    if not arrays:
        raise SampleSetError(f"empty folder {where}: it holds no images")
    first = arrays[0].shape
    for array, file in zip(arrays, files):
        if array.shape != first:
            raise SampleSetError(f"mixed image sizes or channels in {where}: {files[0]} is "
                                 f"{'x'.join(map(str, first))} (CxHxW) but {file} is "
                                 f"{'x'.join(map(str, array.shape))}; give every image the same size and mode")
    return np.stack(arrays)


def load_images(files: list[Path], where: Path) -> tuple[np.ndarray, str]:
    """(images [N, C, H, W] of `files`, lossy_source of their formats)."""
    loaded = [load_image(f) for f in files]
    return stack_images([pixels for pixels, _ in loaded], files, where), lossy_source([f for _, f in loaded])


def read_class_folder(path: Path, class_names: list[str]) -> tuple[np.ndarray, np.ndarray, str]:
    """Images, labels and lossy_source of a folder of class folders (named by class index or
    class name)."""
    files, labels = [], []
    folders = sorted(path.iterdir(), key=lambda p: p.name)
    stray = [p for p in folders if not p.is_dir()]
    if stray:
        raise SampleSetError(f"non-image file {stray[0]} beside the class folders of {path}: move it out")
    for folder in sorted(folders, key=lambda p: class_index(p, class_names)):
        c = class_index(folder, class_names)
        for file in sorted(p for p in folder.iterdir()):
            if file.is_dir():
                raise SampleSetError(f"{file} is a folder inside class folder {folder}: class folders hold "
                                     f"images only")
            files.append(file)
            labels.append(c)
    images, source = load_images(files, path)
    return images, np.asarray(labels, dtype=np.int64), source


def read_edm_folder(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Images, labels and lossy_source of a folder of images with EDM's dataset.json label list."""
    try:
        listed = json.loads((path / EDM_LABELS).read_text())["labels"]
        names, labels = zip(*[(str(name), int(label)) for name, label in listed]) if listed else ((), ())
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise SampleSetError(f"{path / EDM_LABELS} is not EDM's format {{\"labels\": [[file, label], ...]}} "
                             f"({err!r})") from err
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {EDM_LABELS}
    unlisted = sorted(present - set(names))
    if unlisted:
        raise SampleSetError(f"{path / unlisted[0]} has no label in {path / EDM_LABELS} "
                             f"({len(unlisted)} unlisted file(s)): list it or move it out")
    missing = [n for n in names if n not in present]
    if missing:
        raise SampleSetError(f"{path / EDM_LABELS} lists {missing[0]}, which is not in {path}")
    images, source = load_images([path / n for n in names], path)
    return images, np.asarray(labels, dtype=np.int64), source


NPZ_LAYOUTS = {"guided_npz": "guided_npz layout is `arr_0` uint8 images [N, H, W, C] (or [N, H, W]) and "
                             "`arr_1` integer labels [N]",
               "suite_npz": "suite_npz layout is `images` uint8 [N, C, H, W] and `labels` integer [N]"}


def read_user_npz(path: Path, fmt: str | None = None, names: list[str] = ()) -> dict[str, np.ndarray]:
    """The arrays of a user's .npz, which must hold `names` of format `fmt`. Not read_npz's errors
    as they stand: those advise rebuilding a workflow file with --forcerun, and no stage made this one."""
    try:
        data = read_npz(path)
    except InputError as err:
        raise unreadable_npz(path, err.__cause__ or err) from err
    missing = [name for name in names if name not in data]
    if missing:
        raise SampleSetError(f"{path} has no array {missing[0]!r} (it holds {sorted(data)}): the "
                             f"{NPZ_LAYOUTS[fmt]}; save it so, or name its format with --format (samples_format)")
    return data


def npz_keys(path: Path) -> set[str]:
    """The array names of a user's .npz, read from its listing alone (detect_format)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return set(data.files)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise unreadable_npz(path, err) from err


def unreadable_npz(path: Path, cause: BaseException) -> SampleSetError:
    return SampleSetError(f"{path} is not a readable .npz file ({cause}): save it again with numpy.savez, "
                          f"numeric arrays only")


def read_guided_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, C, H, W] and labels of a guided-diffusion .npz (arr_0 NHWC, arr_1 labels)."""
    data = read_user_npz(path, "guided_npz", ["arr_0"])
    if "arr_1" not in data:
        raise SampleSetError(f"{path} has images (arr_0) but no labels (arr_1): the suite scores class-"
                             f"conditional samples; save the labels as arr_1")
    images, labels = data["arr_0"], data["arr_1"]
    if images.ndim == 3:
        images = images[..., None]  # [N, H, W] grayscale
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise SampleSetError(f"{path}: arr_0 has shape {images.shape}; expected [N, H, W, C] with C = 1 or 3")
    return images.transpose(0, 3, 1, 2), labels


def read_suite_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one of the suite's own sample .npz files. Images saved channels-last
    are refused as such: the channel check would read their height as channels and say to
    convert them to grayscale."""
    data = read_user_npz(path, "suite_npz", ["images", "labels"])
    images = data["images"]
    if images.ndim != 4:
        raise SampleSetError(f"{path}: images have shape {images.shape}; the {NPZ_LAYOUTS['suite_npz']}")
    if images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        raise SampleSetError(f"{path}: images have shape {images.shape}, channels-last [N, H, W, C]; the suite's "
                             f"`images` are [N, C, H, W]: save images.transpose(0, 3, 1, 2), or save them as arr_0 "
                             f"[N, H, W, C] with arr_1 labels (the guided-diffusion layout)")
    return images, data["labels"]


# (images, labels, lossy_source) of each format; arrays in an .npz are stored losslessly.
READERS = {"class_folder": lambda p, names: read_class_folder(p, names),
           "edm": lambda p, names: read_edm_folder(p),
           "guided_npz": lambda p, names: (*read_guided_npz(p), ""),
           "suite_npz": lambda p, names: (*read_suite_npz(p), "")}


def check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, path: Path) -> None:
    """Refuse an imported set that is empty or not one integer label in the suite's classes per
    uint8 image (the checks of cbdm.dataset.image_set_problem)."""
    if len(images) == 0:
        raise SampleSetError(f"empty sample set {path}: it holds no images")
    problem = f"labels of shape {labels.shape}" if labels.ndim != 1 else \
        image_set_problem(images, labels, num_classes, None)
    if problem:
        raise SampleSetError(f"{path}: {problem}; save uint8 images (0..255) with one integer label per image, "
                             f"each one of the suite's classes 0..{num_classes - 1}")


def check_pixel_range(images: np.ndarray, path: Path) -> None:
    """Refuse images whose every pixel is 0 or 1: a float image in [0, 1] cast to uint8 without
    scaling, which would be scored as black images."""
    low, high = int(images.min()), int(images.max())
    if high <= 1:
        raise SampleSetError(f"{path}: every pixel is {low if low == high else f'{low} or {high}'}: were images in "
                             f"[0, 1] cast to uint8 without scaling? save (255 * x).round() as uint8")


# Intensity checks of a whole imported set against the real training images (the prepared
# source's balanced pool), for conversions that keep uint8 and the shape but change what the
# pixel values mean. Each refuses only a signature that generated images do not have, however
# poor the generator (an untrained model's clamped noise, a background a few levels off):
# - ceiling: no pixel of the set above CEILING x the reference's 99th percentile. A 0..16
#   (sklearn's digits) or 0..127 (half range) scale stays at 6 % or 50 % of 255; any generator
#   of natural images, even a dim one, has some pixel within 60 % of the bright end over a set.
# - only 0, 1 and 255 (all but 0.1 % of pixels, with 1 and 255 both present) where the
#   reference has more than 10 % of other values: [-1, 1] cast to uint8 without scaling
#   (-1 -> 255, between -> 0, 1 -> 1). A binarised generator makes 0 and 255, never 1.
# - background: where one value holds BACKGROUND of the reference's pixels (0 for digits and
#   Fashion-MNIST; CIFAR has none, so nothing is checked there), a set that holds under a tenth
#   of that share at that value but at least half of it at another value has its background
#   somewhere else: (255 * x).astype(uint8) of [-1, 1] images wraps -1 to 1; inverted images
#   move it to 255 - b (their share at b is the reference's share at 255 - b, 9 % for digits'
#   strokes, so for them under a quarter is enough); only these two signatures are refused.
#   A generator with a noisy background
#   spreads it over several values and keeps many at b; the suite's own samples keep 21-38 %
#   at 0 against the pool's 49 %.
# A mean check would not add a safe signature: an untrained model's noise has a mean near 128.
CEILING, BACKGROUND = 0.6, 0.2


def pixel_shares(images: np.ndarray) -> np.ndarray:
    """The share of each value 0..255 among all pixels of uint8 `images`."""
    counts = np.bincount(images.ravel(), minlength=256)
    return counts / counts.sum()


def scale_problem(have: np.ndarray, ref: np.ndarray) -> str:
    """What is wrong with a set whose pixel shares `have` are on another scale than `ref`'s ('' if not)."""
    high, bright = int(np.nonzero(have)[0].max()), int(np.searchsorted(np.cumsum(ref), 0.99))
    if high < CEILING * bright:
        return (f"no pixel is above {high}, while the training images' brightest 1 % reach {bright}: images on "
                f"another scale (0..16 as sklearn's digits, 0..127)? save them scaled to 0..255 as uint8")
    if have[[0, 1, 255]].sum() > 0.999 and min(have[1], have[255]) > 0.001 and ref[[0, 1, 255]].sum() < 0.9:
        return (f"{have[[0, 1, 255]].sum():.1%} of the pixels are 0, 1 or 255 ({have[255]:.0%} at 255, "
                f"{have[1]:.0%} at 1): were images in [-1, 1] cast to uint8 without scaling (-1 becomes 255)? "
                f"save ((x + 1) * 127.5).round() as uint8")
    return ""


def background_problem(have: np.ndarray, ref: np.ndarray) -> str:
    """What is wrong with a set whose background is not at the reference's background value ('' if not)."""
    b, m = int(ref.argmax()), int(have.argmax())
    if ref[b] < BACKGROUND or have[m] < ref[b] / 2 or have[b] >= ref[b] / (4 if m == 255 - b else 10):
        return ""
    if m == 255 - b:
        hint = "inverted images (255 - x)? invert them back"
    # Any other shift of the background (a grey one, a few levels up) may be the generator's own.
    elif (b, m) == (0, 1):
        hint = ("images in [-1, 1] saved as (255 * x).astype(uint8), which wraps -1 to 1? save "
                "((x + 1) * 127.5).round().clip(0, 255) as uint8")
    else:
        return ""
    return (f"{have[b]:.1%} of the pixels are {b}, the training images' background value ({ref[b]:.0%} of theirs), "
            f"and {have[m]:.0%} are {m}: {hint}")


def check_intensity(images: np.ndarray, reference: np.ndarray, path: Path) -> None:
    """Refuse a set whose pixel values are on another scale or mapping than the real training
    images' (the signatures above): such a set is scored without error, with wrong numbers
    (an FID better than the true one, for the wrapped [-1, 1] cast)."""
    have, ref = pixel_shares(images), pixel_shares(reference)
    problem = scale_problem(have, ref) or background_problem(have, ref)
    if problem:
        raise SampleSetError(f"{path}: {problem}")


def conform_size(images: np.ndarray, image_shape: tuple[int, int, int], resize: bool,
                 path: Path) -> tuple[np.ndarray, str]:
    """(images at the suite's size, what was done: '' or the resize); resized (antialiased
    bilinear) only when `resize`."""
    channels, height, width = image_shape
    if images.shape[1] != channels:
        raise SampleSetError(f"{path}: images have {images.shape[1]} channel(s), the suite's have {channels}: "
                             f"convert them ({'grayscale' if channels == 1 else 'RGB'}) before scoring")
    if images.shape[2:] == (height, width):
        return images, ""
    size = f"{images.shape[2]}x{images.shape[3]}"
    if not resize:
        raise SampleSetError(f"wrong image size for the suite: {path} holds {size} images, the suite's are "
                             f"{height}x{width}; resize them yourself, or pass --resize "
                             f"(samples_resize: true) to resize them (antialiased bilinear) on import")
    if height != width:
        raise SampleSetError(f"{path}: resizing supports square suite images only, not {height}x{width}")
    from .dataset import resize as resize_images

    resized = resize_images(ImageSet(images, np.zeros(len(images), dtype=np.int64)), height).images
    return resized, f"resized from {size} to {height}x{width} (antialiased bilinear)"


def read_samples(path, *, num_classes: int, image_shape: tuple[int, int, int], class_names: list[str],
                 fmt: str = "auto", resize: bool = False, reference: np.ndarray | None = None) -> Imported:
    """A sample set in any of FORMATS as the suite's ImageSet at the suite's image shape; with
    `reference` (the real training images), pixel values on another scale are refused."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise SampleSetError(f"unknown sample format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if not path.exists():
        raise SampleSetError(f"{path} does not exist: give a folder of images or an .npz file")
    if (fmt in FOLDER_FORMATS) != path.is_dir():
        kind, reads = ("a folder", "an .npz file") if path.is_dir() else ("a file", "a folder")
        raise SampleSetError(f"{path} is {kind}, but format {fmt} reads {reads}: name its format with --format "
                             f"(samples_format), or leave it auto")
    images, labels, source = READERS[fmt](path, class_names)
    check_arrays(images, labels, num_classes, path)
    images, resized = conform_size(np.ascontiguousarray(images), tuple(image_shape), resize, path)
    check_pixel_range(images, path)
    if reference is not None:
        check_intensity(images, reference, path)
    note = "; ".join(filter(None, [source, f"{resized} on import" if resized else ""]))
    return Imported(ImageSet(images, labels.astype(np.int64)), fmt, note, ", ".join(filter(None, [source, resized])))


def fit_to_protocol(images: ImageSet, labels: str, num_samples: int, class_counts: list[int],
                    path) -> tuple[ImageSet, str]:
    """The images a protocol scores: for 'exact' and 'train_prior' the protocol's count of every
    class (the first ones of each class, in file order, grouped by class); for 'uniform_random'
    `num_samples` drawn at random (seed 0, file order kept), since files are often sorted by
    class and their first images would be the first classes only. Too few is an error: scores
    on fewer images are not comparable."""
    from .sample import sample_labels

    have = np.bincount(images.labels, minlength=len(class_counts))
    if labels == "uniform_random":
        if len(images.labels) < num_samples:
            raise SampleSetError(f"{path} holds {len(images.labels)} images; the protocol needs {num_samples}")
        keep = np.sort(np.random.RandomState(0).choice(len(images.labels), num_samples, replace=False))
    else:
        needed = np.bincount(sample_labels(labels, num_samples, class_counts, 0), minlength=len(class_counts))
        short = np.where(have < needed)[0]
        if len(short):
            c = int(short[0])
            raise SampleSetError(f"class {c} has {have[c]} samples in {path}, fewer than the {needed[c]} the "
                                 f"protocol needs ({labels} labels, {num_samples} samples; "
                                 f"{len(short)} class(es) short): generate more")
        keep = np.concatenate([np.where(images.labels == c)[0][:n] for c, n in enumerate(needed)])
    note = "" if len(keep) == len(images.labels) else \
        f"scored {len(keep)} of the {len(images.labels)} images given ({labels} labels: the first of each class)"
    if labels == "uniform_random" and note:
        note = f"scored {len(keep)} of the {len(images.labels)} images given, drawn at random (seed 0)"
    return images.subset(keep), note


def fit_to_dataset_protocol(images: ImageSet, spec: dict, factor: float, protocol: dict, path) -> tuple[ImageSet, str]:
    """fit_to_protocol for a protocol of the dataset `spec` at imbalance `factor`, whose long tail
    sets a 'train_prior' protocol's counts: what an import job, `cbdm evaluate` and `cbdm check`
    all refuse or keep."""
    from .config import training_pool_sizes
    from .dataset import longtail_plan

    pool = training_pool_sizes(spec)
    counts = longtail_plan(spec["longtail"], factor, len(pool), sum(pool))[1]
    return fit_to_protocol(images, protocol["labels"], protocol["num_samples"], counts, path)


def source_state(path: str) -> str:
    """A digest of every file under `path` (relative name, size, modification time), or of the
    file itself: the import rule's params, so that images replaced or added inside a folder
    (whose own timestamp Snakemake reads, and which they do not change) import it again."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root] * root.exists()
    state = []
    for file in files:
        stat = file.stat()  # one call per file: a folder may hold 50k images
        state.append((file.relative_to(root).as_posix() if root.is_dir() else file.name, stat.st_size,
                      stat.st_mtime_ns))
    return fingerprint(state)


def import_samples(*, source: str, fmt: str, resize: bool, labels: str, num_samples: int,
                   class_counts: list[int], image_shape: list[int], class_names: list[str],
                   out_npz: str, source_state: str = "", source_npz: str | None = None,
                   origin: dict | None = None, source_origin: dict | None = None) -> str:
    """Write a user's sample set as the suite's sample .npz (images, labels, seeds = -1, a
    `note` saying where it came from and what was done to it, `preprocessing`, what of that
    changed the pixels (Imported), and `source_digest`, the digest of the images and labels as
    read, whatever their format); returns the note. `source_state` (the files' state when the
    DAG was planned) is the rerun trigger, recorded beside them. `source_npz`: the prepared
    source.npz, whose training pool the set's pixel values are checked against (check_intensity),
    refused unless it records `source_origin` (cbdm.dataset.data_origin) where given.
    `origin`: the cell the set is imported for, recorded for the jobs that read it."""
    from .dataset import array_digest, read_image_set

    reference = read_image_set(source_npz, "pool_", origin=source_origin).images if source_npz else None
    imported = read_samples(source, num_classes=len(class_counts), image_shape=tuple(image_shape),
                            class_names=class_names, fmt=fmt, resize=resize, reference=reference)
    digest = array_digest(imported.images.images, imported.images.labels)
    fitted, fit_note = fit_to_protocol(imported.images, labels, num_samples, class_counts, source)
    note = "; ".join(filter(None, [f"imported from {source} ({imported.format})", imported.note, fit_note]))
    write_npz(out_npz, images=fitted.images, labels=fitted.labels,
              seeds=np.full(len(fitted.labels), NO_SEED, dtype=np.int64), note=np.asarray(note),
              preprocessing=np.asarray(imported.preprocessing), source_digest=np.asarray(digest),
              source_state=np.asarray(source_state), **origin_array(origin))
    print(f"{len(fitted.labels)} images: {note}", flush=True)
    return note


def export_samples(samples_npz: str, out: str, fmt: str, prefix: str = "") -> None:
    """A suite image set as a class folder of PNGs (`folder`: OUT/<class>/<index>.png) or a
    guided-diffusion .npz (`npz`: arr_0 uint8 NHWC, arr_1 labels). `prefix`: '' for a sample
    set, 'pool_' or 'heldout_' for the real images of a prepared source.npz."""
    data = read_npz(samples_npz, {f"{prefix}images": 4, f"{prefix}labels": 1})
    images, labels = data[f"{prefix}images"], data[f"{prefix}labels"]
    if fmt == "npz":
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, arr_0=images.transpose(0, 2, 3, 1), arr_1=labels)
    elif fmt == "folder":
        write_class_folder(images, labels, Path(out))
    else:
        raise SampleSetError(f"unknown export format {fmt!r}; use folder or npz")
    print(f"wrote {len(labels)} images of {samples_npz} to {out} ({fmt})", flush=True)


def write_class_folder(images: np.ndarray, labels: np.ndarray, out: Path) -> None:
    """Images as OUT/<class>/<index>.png; refuses a folder that is not empty."""
    from PIL import Image

    if out.exists() and any(out.iterdir()):
        raise SampleSetError(f"{out} is not empty: export into a new folder")
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = out / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        with atomic_path(folder / f"{i:06d}.png") as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")
