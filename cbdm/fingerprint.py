"""Provenance of reusable files: one fingerprint of everything that determines their content.

A resumable intermediate (a training checkpoint, a finished batch of a sample set) is reused
only when the fingerprint stored in it equals the fingerprint of the job that wants to reuse it,
so a file left by other settings, another model or other data is never taken for this job's.
A sample set and its features file record their origin, the cell they were made for (see
`check_origin`), which every job that reads them compares with its own; a reference set's
features file records which set of which data it is (cbdm.dataset.reference_origin) likewise.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .assets import file_digest
from .io import InputError, rebuild

# The array of an .npz that holds its origin (a canonical JSON object).
ORIGIN = "origin"


def fingerprint(*parts) -> str:
    """sha256 (16 hex digits) of a canonical JSON of `parts` (dict keys sorted)."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path | None) -> str | None:
    """The digest of a file's bytes, or None for no file."""
    return None if path is None else file_digest(Path(path))


def origin_array(origin: dict | None) -> dict[str, np.ndarray]:
    """{ORIGIN: the canonical JSON of `origin`}, to store beside an .npz file's arrays; {} for None."""
    return {} if origin is None else {ORIGIN: np.asarray(json.dumps(origin, sort_keys=True))}


def check_origin(path, recorded: np.ndarray | None, expected: dict | None) -> None:
    """InputError unless an .npz file's recorded origin (its ORIGIN array, None where it has none)
    is `expected` (None: nothing to check). A sample set or features file copied over another
    cell's, or kept from other settings while Snakemake did not rerun it, would otherwise be
    scored as this cell's without a word; the error names the keys that differ."""
    if expected is None:
        return
    if recorded is None:
        raise InputError(f"{path} records no origin (the cell or reference set it was made for): it was written "
                         f"by an older cbdm or by hand; {rebuild(path)}")
    found, wanted = json.loads(str(recorded)), json.loads(json.dumps(expected, sort_keys=True))
    if found != wanted:
        keys = [key for key in sorted(set(found) | set(wanted)) if found.get(key) != wanted.get(key)]
        made = ", ".join(f"{key} {found.get(key)}" for key in keys)
        needed = ", ".join(f"{key} {wanted.get(key)}" for key in keys)
        raise InputError(f"{path} was made for {made}, but this job needs {needed}: it was copied or moved, "
                         f"or kept from other settings; {rebuild(path)}")
