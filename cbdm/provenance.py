"""What produced a suite's results: code version, packages, machine, devices and seeds."""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from . import tables
from .io import atomic_path, write_json
from .modelfile import MODEL_FORMAT, check_identity, load_payload

LOCK_FILE = "requirements.lock"  # exact versions, beside environment.yml

PACKAGES = ("cbdm", "torch", "torchvision", "numpy", "scipy", "pandas", "scikit-learn", "snakemake",
            "clean-fid", "torch-fidelity")


def git_version(code_dir: str) -> dict:
    """The commit checked out in `code_dir` and how many tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", code_dir, *args], capture_output=True, text=True, timeout=30)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "note": f"{code_dir} is not a git checkout"}
    changed = git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    return {"commit": head.stdout.strip(), "uncommitted_changes": len(changed)}


def installed_version(name: str) -> str | None:
    """The installed version of distribution `name`, None where it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict:
    """The installed versions of the packages the results depend on."""
    return {name: installed_version(name) for name in PACKAGES}


def lock_status(lock_path: str | Path) -> dict:
    """The lock file's sha256 and whether every version it pins is the one installed; the
    mismatches (pinned, installed) where not."""
    path = Path(lock_path)
    if not path.is_file():
        return {"file": str(path), "sha256": None, "matches": False, "note": "no lock file"}
    text = path.read_text()
    mismatches = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if "==" not in line:
            continue
        name, pinned = (part.strip() for part in line.split("==", 1))
        installed = installed_version(name)
        if installed != pinned:
            mismatches[name] = {"pinned": pinned, "installed": installed}
    return {"file": path.name, "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "matches": not mismatches, "mismatches": mismatches}


def provenance_html(info: dict) -> str:
    """provenance.json as a page of tables, for the HTML report."""
    lock = info["lock"]
    lock_rows = [("file", lock["file"]), ("sha256", lock["sha256"] or "none"),
                 ("installed versions match the lock", "yes" if lock["matches"] else "NO")]
    lock_rows += [(f"mismatch {name}", f"pinned {m['pinned']}, installed {m['installed']}")
                  for name, m in lock.get("mismatches", {}).items()]
    pairs = lambda d: pd.DataFrame([(k, str(v)) for k, v in d.items()], columns=["", "value"])  # noqa: E731
    body = [tables.html_table("<b>Exact-version lock</b>", pd.DataFrame(lock_rows, columns=["", "value"])),
            tables.html_table("<b>Code</b>", pairs(info["code"])),
            tables.html_table("<b>Packages</b>", pairs(info["packages"])),
            tables.html_table("<b>Machine</b>", pairs(info["machine"])),
            tables.html_table("<b>Seeds</b>", pairs(info["seeds"])),
            tables.html_table("<b>Training runs</b>", pd.DataFrame(info["training_runs"]))]
    return tables.html_page(f"Provenance of suite {info['suite']}", "", body)


def training_runs(model_files: list[str], identities: list[dict]) -> list[dict]:
    """What each model file records of its training, each refused unless it was trained for its
    identity (cbdm.origins.model_identity, in model_files' order): a file copied over another
    cell's, or from another suite, was listed as this cell's run with the other run's metadata."""
    runs = []
    for path, identity in zip(model_files, identities, strict=True):
        payload = load_payload(path, MODEL_FORMAT, "rebuild the model")
        check_identity(path, payload, identity)
        runs.append({"model": path, **{k: payload["meta"].get(k) for k in
                                       ("variant", "seed", "steps", "parameters", "device", "processes",
                                        "torch", "seconds_this_session")}})
    return runs


def write_provenance(*, config: dict, seeds: dict, code_dir: str, model_files: list[str], identities: list[dict],
                     out_json: str, out_html: str, out_config: str) -> None:
    """provenance.json, its HTML page and the resolved config of a suite; `identities`: what each
    model file must say it was trained for (see training_runs)."""
    runs = training_runs(model_files, identities)
    info = {
        "suite": config["suite"],
        "code": git_version(code_dir),
        "packages": package_versions(),
        "lock": lock_status(Path(code_dir) / LOCK_FILE),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "seeds": seeds,
        "training_runs": runs,
    }
    write_json(out_json, info)
    with atomic_path(out_html) as tmp:
        tmp.write_text(provenance_html(info))
    with atomic_path(out_config) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
