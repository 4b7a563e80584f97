"""What produced a suite's results: code version, packages, machine, devices and seeds."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess

import yaml

from .io import atomic_path, write_json
from .modelfile import MODEL_FORMAT, load_payload

PACKAGES = ("cbdm", "torch", "torchvision", "numpy", "scipy", "pandas", "scikit-learn", "snakemake",
            "clean-fid", "torch-fidelity")


def git_version(code_dir: str) -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", code_dir, *args], capture_output=True, text=True, timeout=30)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"commit": None, "note": f"{code_dir} is not a git checkout"}
    changed = git("status", "--porcelain", "--untracked-files=no").stdout.splitlines()
    return {"commit": head.stdout.strip(), "uncommitted_changes": len(changed)}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_provenance(*, config: dict, seeds: dict, code_dir: str, model_files: list[str], out_json: str,
                     out_config: str) -> None:
    runs = []
    for path in model_files:
        meta = load_payload(path, MODEL_FORMAT, "rebuild the model")["meta"]
        runs.append({"model": path, **{k: meta.get(k) for k in
                                       ("variant", "seed", "steps", "parameters", "device", "processes",
                                        "torch", "seconds_this_session")}})
    write_json(out_json, {
        "suite": config["suite"],
        "code": git_version(code_dir),
        "packages": package_versions(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "seeds": seeds,
        "training_runs": runs,
    })
    with atomic_path(out_config) as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
