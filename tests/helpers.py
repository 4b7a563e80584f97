"""Shared test helpers: the small configs, networks and workflow runners several test files use."""
from __future__ import annotations

import contextlib
import copy
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from cbdm.config import deep_merge, validate_config, variant_settings

# n_max 100: the default (pool size / classes) exceeds the smallest digits class, which check refuses.
DIGITS = {"source": "sklearn_digits", "longtail": {"n_max": 100},
          "groups": {"head": [0, 1, 2, 3, 4], "tail": [5, 6, 7, 8, 9]}}
# The smallest config `validate_config` accepts: one dataset, one variant; tests merge keys into it.
MINIMAL = {"suite": "t", "datasets": {"digits": DIGITS}, "variants": {"ddpm": {"losses": [{"name": "eps_mse"}]}}}
# The tiny suite's network and schedule (tests/data/tiny.yaml), for tests that call the package directly.
TINY_NETWORK = {"base_channels": 8, "channel_mult": [1, 2], "attention_levels": [], "num_res_blocks": 1,
                "dropout": 0.0, "norm_groups": 4}
TINY_DIFFUSION = {"num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02}


@contextlib.contextmanager
def cpu_placement_kept():
    """Give back this process's cores and torch threads on exit. A benchmark's main() pins its
    process to as many cores as it has threads (harness.pin_threads); called in-process by a test
    it would leave the rest of the suite, and every workflow job it spawns (they inherit the
    mask), on those cores: on a 2-core machine, half the machine for the rest of the run."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if cores is not None:
            os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


def minimal_config(**overrides) -> dict:
    """MINIMAL with `overrides` merged in, validated (schema defaults filled)."""
    return validate_config(deep_merge(copy.deepcopy(MINIMAL), overrides))


def one_variant_config(losses: list[dict], **sections) -> dict:
    """A validated config whose only variant, `v`, has these losses, with these top-level sections."""
    return validate_config({"suite": "t", "datasets": {"digits": dict(DIGITS)}, **sections,
                            "variants": {"v": {"losses": losses}}})


def training_settings(losses: list[dict], **training) -> dict:
    """What a training job receives for a variant with these losses (config form, e.g.
    {"name": "cbdm", "tau": 1.0}) and training keys, every other key at its schema default."""
    resolved = variant_settings(one_variant_config(losses, training=training), "v")
    return {"name": "v", "losses": resolved["losses"], "training": resolved["training"]}


def sampling_settings(**sampling) -> dict:
    """A variant's resolved `sampling` section with these keys, every other key at its schema default."""
    return variant_settings(one_variant_config([{"name": "eps_mse"}], sampling=sampling), "v")["sampling"]


def readme_blocks(repo: Path, language: str) -> list[str]:
    """The README's fenced code blocks in `language`, in order."""
    return re.findall(rf"```{language}\n(.*?)```", (repo / "README.md").read_text(), re.S)


def run_workflow(repo: Path, workdir: Path, configfile: Path, executor="local", html_report: Path | None = None,
                 targets: tuple[str, ...] = ("all",)):
    """Snakemake's `targets` (default `all`) for `configfile` in `workdir` through its API (or,
    with `html_report`, its HTML report of what was run there)."""
    from snakemake.api import SnakemakeApi
    from snakemake.report.html_reporter import ReportSettings
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"} if executor == "dryrun" else set())) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=2),
                                config_settings=ConfigSettings(configfiles=[configfile]),
                                snakefile=repo / "Snakefile", workdir=workdir)
        dag = workflow.dag(DAGSettings(targets=set(targets)))
        if html_report is None:
            dag.execute_workflow(executor=executor)
        else:
            dag.create_report(reporter="html", report_settings=ReportSettings(path=html_report))


def dry_run_output(repo: Path, workdir: Path, configfile: Path, *options: str) -> str:
    """What `snakemake -n` prints for `configfile` in `workdir` (it must succeed)."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n",
                             "--configfile", str(configfile), *options], cwd=workdir, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


@functools.lru_cache(maxsize=8)
def _planned_in_repo(repo: Path, configfile: Path, text: str) -> str:
    """dry_run_output in the repository, once a session for a config's text: the paper configs'
    dry runs take 5-10 s each on the CI machine, and several tests read the same plan."""
    return dry_run_output(repo, repo, configfile)


def planned_wildcards(repo: Path, configfile: Path, rule: str, with_priority: bool = False) -> list[dict[str, str]]:
    """Wildcards of every job of `rule` in a dry run, from Snakemake's job listing; with
    `with_priority`, each with its scheduling priority under the key "priority" (0 if none)."""
    jobs, current = [], None
    for line in _planned_in_repo(repo, configfile, configfile.read_text()).splitlines():
        line = line.strip()
        if line.endswith(":") and line.split()[0] in ("rule", "localrule"):
            current = line.split()[1].rstrip(":")
        elif line.startswith("wildcards:") and current == rule:
            jobs.append(dict(kv.split("=", 1) for kv in line[len("wildcards:"):].strip().split(", ")))
            if with_priority:
                jobs[-1]["priority"] = 0
        elif line.startswith("priority:") and current == rule and with_priority:
            jobs[-1]["priority"] = int(line.split()[1])
    return jobs


def planned_jobs(repo: Path, workdir: Path, configfile: Path) -> dict[str, int]:
    """Jobs per rule of a dry run, from Snakemake's job statistics."""
    counts = {}
    for line in dry_run_output(repo, workdir, configfile, "--quiet", "rules").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def write_tiny_config(repo: Path, path: Path, extension: bool = True, **changes) -> Path:
    """tests/data/tiny.yaml at `path` with top-level keys replaced by `changes`; with
    `extension`, the worked extension rule (absolute path) that builds ddpm_resampled."""
    import yaml

    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    if extension:
        config["extensions"] = [str(repo / "workflow/extensions/balanced_resampling.smk")]
    else:
        del config["variants"]["ddpm_resampled"]
    config.update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
