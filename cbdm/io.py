"""Atomic file output and checked input.

Every file a stage writes goes to a temporary name in the same folder first and is renamed
into place, so a killed job never leaves a half-written file under a final name.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm


def rebuild(path) -> str:
    """The fix for a damaged intermediate file. Deleting it alone is not enough: Snakemake does
    not remake a missing intermediate file whose later results exist, so it is forced."""
    return (f"re-run its stage: add `--forcerun {path}` to the same snakemake command (it rebuilds the "
            f"file and everything made from it)")


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """tqdm as every long stage shows it: on stderr, redrawn at most every 10 s in 100 columns, so
    a rule's log file gets a line now and then instead of a redraw per step."""
    return tqdm(iterable, file=sys.stderr, mininterval=10, ncols=100, dynamic_ncols=False, **kwargs)


class InputError(RuntimeError):
    """An input file is missing or malformed; the message names the file and the fix."""


class DiskFullError(OSError):
    """Writing a file failed for lack of space; the message names the file."""


# How torch.save reports a failed write (it raises RuntimeError, not OSError).
TORCH_WRITE_FAILURES = ("file write failed", "PytorchStreamWriter failed", "unexpected pos")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` if the block succeeds. The
    file gets the mode a plain open() would give (0666 less the umask), and temporary files a
    killed writer left for the same path are removed once it is in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _name_write_failures(path):
            yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        _remove_leftovers(path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_leftovers(path: Path) -> None:
    """Temporary files of earlier, killed writes of `path` (one job writes a path at a time)."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _name_write_failures(path: Path) -> Iterator[None]:
    """Turn 'no space left' (OSError ENOSPC, or torch.save's RuntimeError) into one line naming
    the file."""
    fix = (f"writing {path} failed: the disk is full (no space left in {path.parent}); free space "
           f"or move results/ to a larger disk, then run the same command again")
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise DiskFullError(errno.ENOSPC, fix) from err
    except RuntimeError as err:
        if not any(marker in str(err) for marker in TORCH_WRITE_FAILURES):
            raise
        raise DiskFullError(errno.ENOSPC, f"{fix} ({str(err).splitlines()[0]})") from err


def save_torch(obj, path) -> None:
    """torch.save `obj` to `path`, atomically. Through a file object: given a path, torch.save
    names the archive's root folder after the file, here atomic_path's random temporary name, so
    two saves of the same tensors differed in bytes, and so in the file digest that labels a
    classifier's features (cbdm.features.extractor_label)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_json(path, obj) -> None:
    """Write `obj` as indented JSON, atomically (numpy scalars and arrays as plain values)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_json(path) -> dict:
    """A JSON file's content; InputError naming the stage to run or re-run otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist: run the stage that makes it (snakemake {path})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err}): {rebuild(path)}") from err


def write_npz(path, **arrays) -> None:
    """Write arrays as an uncompressed .npz, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def read_npz(path, required: dict[str, int | None] | None = None) -> dict[str, np.ndarray]:
    """Load every array of an .npz file; `required` maps array names to their ndim (None: any)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist: run the stage that makes it (snakemake {path})")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise InputError(f"{path} is corrupt or truncated ({err}): {rebuild(path)}") from err
    for name, ndim in (required or {}).items():
        if name not in arrays:
            raise InputError(f"{path} lacks the array {name!r} (has {sorted(arrays)}): "
                             f"it was not written by this version of cbdm; {rebuild(path)}")
        if ndim is not None and arrays[name].ndim != ndim:
            raise InputError(f"{path}: array {name!r} has shape {arrays[name].shape}, expected {ndim} dims: "
                             f"{rebuild(path)}")
    return arrays
