"""Provenance of reusable files: one fingerprint of everything that determines their content.

A resumable intermediate (a training checkpoint, a finished batch of a sample set) is reused
only when the fingerprint stored in it equals the fingerprint of the job that wants to reuse it,
so a file left by other settings, another model or other data is never taken for this job's.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .assets import file_digest


def fingerprint(*parts) -> str:
    """sha256 (16 hex digits) of a canonical JSON of `parts` (dict keys sorted)."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_fingerprint(path: str | Path | None) -> str | None:
    """The digest of a file's bytes, or None for no file."""
    return None if path is None else file_digest(Path(path))
