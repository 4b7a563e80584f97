"""Provenance of reusable files: one fingerprint of everything that determines their content.

A resumable intermediate (a training checkpoint, a finished batch of a sample set) is reused
only when the fingerprint stored in it equals the fingerprint of the job that wants to reuse it,
so a file left by other settings, another model or other data is never taken for this job's.
A sample set and its features file record their origin, the cell they were made for (see
`check_origin`), which every job that reads them compares with its own; a reference set's
features file records which set of which data it is (cbdm.dataset.reference_origin), a
prepared source or long-tailed training set (and its manifest) the settings it was made with
(cbdm.dataset.data_origin) likewise, and the domain classifier the data_origin of its source.
These checks, and those of model files' identity, metrics files' place and the classifier's
recipe, word their refusals with `check_recorded`.
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


def check_origin(path, recorded: np.ndarray | dict | None, expected: dict | None, fix: str | None = None) -> None:
    """InputError unless a file's recorded origin (an .npz file's ORIGIN array, a JSON file's
    ORIGIN entry; None where it has none) is `expected` (None: nothing to check). A sample set,
    features or data file copied over another cell's, or kept from other settings while
    Snakemake did not rerun it, would otherwise be used as this job's without a word; the error
    names the keys that differ. `fix`: the advice for a file the user gave, which no stage of
    this suite made (default: rebuild it)."""
    if expected is None:
        return
    if recorded is None:
        raise InputError(f"{path} records no origin (the cell, reference set or data settings it was made for): it "
                         f"was written by an older cbdm or by hand; {fix or rebuild(path)}")
    found = recorded if isinstance(recorded, dict) else json.loads(str(recorded))
    check_recorded(path, found, json.loads(json.dumps(expected, sort_keys=True)),
                   holds="was made for", needs="this job needs",
                   cause="it was copied or moved, or kept from other settings", fix=fix)


def check_recorded(path, recorded: dict, expected: dict, *, holds: str, needs: str, cause: str,
                   fix: str | None = None) -> None:
    """InputError unless what the file at `path` records equals what this job expects (both
    normalised by the caller; a key only one of them has differs too). The error reads
    '<path> <holds> <key value, ...>, but <needs> <key value, ...>: <cause>; <the fix>', naming
    each differing key with both values, so every reused file's refusal says the same things; the
    fix is `fix`, or rebuilding the file."""
    missing = object()
    keys = [key for key in dict.fromkeys([*expected, *recorded])
            if recorded.get(key, missing) != expected.get(key, missing)]
    if keys:
        raise InputError(f"{path} {holds} {_listed(recorded, keys)}, but {needs} {_listed(expected, keys)}: "
                         f"{cause}; {fix or rebuild(path)}")


def _listed(values: dict, keys: list) -> str:
    return ", ".join(f"{key} {values[key] if key in values else '(absent)'}" for key in keys)
