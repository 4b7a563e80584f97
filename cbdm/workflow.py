"""Glue between Snakemake and the package: the run's config resolved once, the path patterns the
rules and `cbdm evaluate` share, and for `script:` jobs logging to the rule's log file, thread
limits, and one GPU per job on a machine with several."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import traceback
from pathlib import Path

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
GPU_LOCKS = Path(tempfile.gettempdir()) / "cbdm-gpu-locks"


def suite_paths(suite: str) -> dict[str, str]:
    """Path patterns ({dataset}, {imb}, {reference} left open) of the suite's files that both the
    rules (workflow/rules/common.smk) and `cbdm evaluate` (cbdm/external.py) name."""
    results = f"results/{suite}"
    data, features = f"{results}/data/{{dataset}}", f"{results}/features/{{dataset}}/IF{{imb}}"
    return {"results": results, "source_npz": f"{data}/source.npz", "source_json": f"{data}/source.json",
            "train_npz": f"{data}/IF{{imb}}/train.npz", "manifest": f"{data}/IF{{imb}}/manifest.json",
            "classifier": f"{results}/classifier/{{dataset}}/classifier.pt",
            "reference": f"{features}/reference-{{reference}}.npz",
            "reference_stats": f"{features}/reference-{{reference}}.stats.npz"}


def resolve_config(config: dict, workflow) -> dict:
    """The config of a Snakemake run (`config`, resolved in place and returned): --config values
    typed, a profile's placeholders refused, the schema's defaults filled and everything checked,
    once; an error is one ValueError line naming the config file(s)."""
    from .config import DEFAULT_CONFIG, ConfigError, command_line_values, deep_merge, read_config_file, validate_config

    check_profile_placeholders(
        {"default-storage-prefix": getattr(workflow.storage_settings, "default_storage_prefix", None),
         "container-image": getattr(workflow.remote_execution_settings, "container_image", None)})
    files = [str(f) for f in workflow.overwrite_configfiles] or [DEFAULT_CONFIG]
    given = command_line_values(workflow.config_settings.config)
    config.update(deep_merge(config, given))
    # The checked config is the files' merged with --config's keys: an error names both sources.
    sources = ", ".join(files) + (f" with --config {', '.join(given)}" if given else "")
    try:
        for path in files:  # Snakemake's YAML reader keeps the last of a duplicated key without a word
            read_config_file(Path(path))
        return validate_config(config, source=Path(files[0]) if len(files) == 1 else None)
    except ConfigError as err:
        raise ConfigError(f"config error in {sources}: {err}") from err


def visible_gpus() -> int:
    """NVIDIA GPUs on this machine (cheap: no CUDA initialisation, no torch import)."""
    return len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0


def gpus_per_job(config: dict) -> int:
    """GPUs a GPU job of a resolved config asks for: `resources.gpus_per_job` where set, else one
    when the jobs run on CUDA (device: cuda, or auto on a machine with an NVIDIA GPU). The
    workflow's resource requests and `cbdm check`'s GPU-suite test both read it, so they agree."""
    chosen = config["resources"]["gpus_per_job"]
    if chosen is not None:
        return chosen
    if config["device"] == "cpu":
        return 0
    return 1 if config["device"] == "cuda" or visible_gpus() else 0


PLACEHOLDER = "YOUR-"


def check_profile_placeholders(settings: dict[str, str | None]) -> None:
    """Refuse a profile whose settings still hold the shipped placeholders (YOUR-BUCKET,
    YOUR-REGISTRY): one line naming them, before storage or a cluster is contacted."""
    left = [f"{key}: {value}" for key, value in settings.items() if value and PLACEHOLDER in str(value)]
    if left:
        raise ValueError(f"the profile still holds placeholder(s) {'; '.join(left)}: replace them with your "
                         f"bucket and image in the profile's config.yaml (e.g. profiles/kubernetes/config.yaml)")


def claim_gpus(count: int, devices: list[str], lock_dir: Path = GPU_LOCKS) -> tuple[list[str], list]:
    """Claim `count` of the GPUs `devices` (their CUDA ids) with exclusive file locks, held until
    the returned handles are closed (or the process ends). Snakemake schedules GPU jobs by a `gpu`
    resource count but does not say which GPU a job gets; the locks make concurrent jobs on one
    machine take different ones. Lock files are shared by every user of the machine (mode 666)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(lock_dir, 0o1777)  # like /tmp: every user's jobs create their locks here
    chosen, handles = [], []
    for device in devices:
        path = lock_dir / f"gpu{device}.lock"
        handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "w")
        with contextlib.suppress(PermissionError):
            os.chmod(path, 0o666)  # the umask may have narrowed it; another user's job must open it
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        chosen.append(device)
        handles.append(handle)
        if len(chosen) == count:
            return chosen, handles
    for handle in handles:
        handle.close()
    raise RuntimeError(f"no {count} free GPU(s) among {len(devices)} ({','.join(devices)}): more GPU jobs run "
                       f"than the `gpu` resource allows; run snakemake with --resources gpu={len(devices)}")


def job_devices() -> list[str]:
    """The GPUs a job may take: those CUDA_VISIBLE_DEVICES lists where it is set (inside an
    allocation or a container), else every GPU of the machine."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(visible_gpus())]


@contextlib.contextmanager
def job(snakemake):
    """Run a rule's body with stdout/stderr (Python's and C's) going to the rule's log file,
    torch limited to the rule's threads and, for a GPU job, CUDA_VISIBLE_DEVICES set to GPUs no
    other job holds (among those already listed there, where it is set). An error is written to the log
    and raised again with the console restored, so Snakemake shows it too."""
    log_path = snakemake.log[0]
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    gpus = int(snakemake.resources.get("gpu", 0) or 0)
    held, devices = [], job_devices() if gpus else []
    if gpus and len(devices) >= gpus:  # a job taking every GPU claims them too, so no other job does
        chosen, held = claim_gpus(gpus, devices)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            if held:
                print(f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}", flush=True)
            if "torch" in sys.modules:  # stages without torch should not pay for importing it
                sys.modules["torch"].set_num_threads(snakemake.threads)
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            for handle in held:
                handle.close()
