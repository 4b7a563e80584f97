"""Files cbdm reads but does not ship (datasets, Inception weights): the lock that names them
(cbdm/assets.lock.yaml), their verification, and the one explicit way to download them
(`cbdm assets fetch`). Nothing else downloads: a missing file is an error naming the fix."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.request
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from .io import atomic_path


class DataError(RuntimeError):
    """A dataset or asset file is missing or not what it should be; the message names the fix."""


@cache
def asset_lock() -> dict:
    """The packaged assets.lock.yaml: official files and their digests."""
    return yaml.safe_load(resources.files("cbdm").joinpath("assets.lock.yaml").read_text())


def file_digest(path: Path, algorithm: str = "sha256", decompressed: bool = False) -> str:
    """'<algorithm>:<hex>' of a file's bytes (of its gzip-decompressed bytes where `decompressed`)."""
    h = hashlib.new(algorithm)
    opener = gzip.open if decompressed else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{algorithm}:{h.hexdigest()}"


def digest_matches(digest: str, expected: str) -> bool:
    """`expected` is '<algorithm>:<hex>', or 'sha256-prefix:<hex>' where only the start of the
    sha256 is known (torch.hub names files after it)."""
    kind, value = expected.split(":")
    if kind == "sha256-prefix":
        return digest.startswith(f"sha256:{value}")
    return digest == expected


def check_file(path: Path, entry: dict, verify: bool) -> str:
    """Digest of `path` in the lock's algorithm; raises DataError on a mismatch when `verify`."""
    algorithm = entry["digest"].split(":")[0].replace("-prefix", "")
    digest = file_digest(path, algorithm, entry.get("decompressed", False))
    if verify and not digest_matches(digest, entry["digest"]):
        raise DataError(
            f"{path} has {digest} but the official file has {entry['digest']}: the file is "
            f"corrupt or not the official release. Delete it and fetch it again, or turn "
            f"checksum verification off in the config if you use a deliberate variant.")
    return digest


def weights_entry(name: str) -> dict:
    """The lock's entry of weights file `name`."""
    return asset_lock()["weights"][name]


def require_weights(name: str, path: str | Path) -> Path:
    """The verified path of a weights file; DataError naming the fetch command otherwise."""
    entry, path = weights_entry(name), Path(path)
    if not path.exists():
        raise DataError(f"{entry['description']} not found at {path}. Fetch it with "
                        f"`cbdm assets fetch --config <your config>`, or download {entry['url']} "
                        f"to {path} yourself.")
    check_file(path, entry, verify=True)
    return path


def download(url: str, dest: Path, entry: dict) -> None:
    """Download `url` to `dest` (atomically) and verify it against the lock entry."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
        check_file(tmp, entry, verify=True)
