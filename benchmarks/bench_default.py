"""Per-stage breakdown of a finished suite run from its Snakemake benchmark files, and an estimate
of its wall time on a given number of cores.

    python benchmarks/bench_default.py results/digits-lt [--cores 2] [--log snakemake.log]

Every heavy rule writes `results/<suite>/benchmarks/<stage>/...tsv` (Snakemake's `benchmark:`):
wall seconds `s` and `cpu_time` of the job's processes. The table gives per stage the jobs, the
wall and CPU seconds summed over its jobs and the stage's share of all CPU seconds. Wall seconds
of jobs that ran side by side on a loaded machine are inflated. CPU seconds are sampled by
Snakemake now and then, so they miss a job's last seconds and undercount (benchmarks/README.md).

The estimate (an estimate, not a measurement): on `--cores` cores with one thread per job, the
run takes at least max(CPU seconds / cores, critical path) and at most CPU seconds / cores +
critical path (Graham's bound for greedy scheduling), where the critical path is the longest
chain of stages through the DAG, each stage weighted by its longest job's CPU seconds. Snakemake's
own scheduling and the rules without a benchmark file (seconds each) come on top; `--log` reads
the first and last timestamp of a Snakemake log to print the measured wall time beside it.
"""
from __future__ import annotations

import argparse
import csv
import re
from datetime import datetime
from pathlib import Path

# Which stage waits for which (the rules' inputs, coarsened to stages; cbdm's Snakefile).
STAGE_AFTER = {
    "prepare_source": [],
    "train_classifier": ["prepare_source"],
    "features (reference)": ["train_classifier"],
    "reference_stats": ["features (reference)"],
    "train": ["prepare_source"],
    "sample": ["train"],
    "features (samples)": ["sample", "train_classifier"],
    "metrics": ["features (samples)", "features (reference)"],
    "diagnostics": ["sample"],
    "heldout_rates": ["features (reference)"],
    "augment": ["sample"],
    "report": ["metrics", "diagnostics", "augment", "reference_stats", "heldout_rates"],
}
TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def stage_of(relative: Path) -> str:
    """The stage of a benchmark file: its first folder, features split by reference and samples."""
    stage = relative.parts[0]
    if stage == "features":
        return "features (reference)" if relative.name.startswith("reference-") else "features (samples)"
    return stage


def read_jobs(results: Path) -> list[dict]:
    """One row per benchmark file: stage, file, wall s, CPU s (the last line: the last repeat)."""
    bench = results / "benchmarks"
    files = sorted(bench.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"{bench}: no benchmark files (*.tsv); give a results/<suite> folder of a finished run")
    jobs = []
    for path in files:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        last = rows[-1]
        cpu = float(last["cpu_time"]) if last.get("cpu_time") not in (None, "", "NA") else 0.0
        jobs.append({"stage": stage_of(path.relative_to(bench)), "file": str(path.relative_to(bench)),
                     "wall": float(last["s"]), "cpu": cpu})
    return jobs


def stage_table(jobs: list[dict]) -> list[dict]:
    """Per stage: jobs, wall and CPU seconds summed, the longest job's CPU seconds, CPU share."""
    total = sum(j["cpu"] for j in jobs) or 1.0
    stages = {}
    for job in jobs:
        row = stages.setdefault(job["stage"], {"stage": job["stage"], "jobs": 0, "wall": 0.0, "cpu": 0.0,
                                               "longest_cpu": 0.0})
        row["jobs"] += 1
        row["wall"] += job["wall"]
        row["cpu"] += job["cpu"]
        row["longest_cpu"] = max(row["longest_cpu"], job["cpu"])
    for row in stages.values():
        row["share"] = row["cpu"] / total
    return sorted(stages.values(), key=lambda r: -r["cpu"])


def critical_path(stages: list[dict]) -> tuple[float, list[str]]:
    """The longest chain of STAGE_AFTER, each stage weighted by its longest job's CPU seconds."""
    weight = {row["stage"]: row["longest_cpu"] for row in stages}
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(stage: str) -> tuple[float, list[str]]:
        if stage not in best:
            before = [longest(s) for s in STAGE_AFTER.get(stage, [])]
            length, chain = max(before, default=(0.0, []))
            best[stage] = (length + weight.get(stage, 0.0), chain + [stage])
        return best[stage]

    length, chain = max((longest(s) for s in sorted(set(STAGE_AFTER) | set(weight))), default=(0.0, []))
    return length, [s for s in chain if s in weight]  # stages without benchmark files cost nothing here


def logged_wall(log: Path) -> float | None:
    """Seconds between the first and the last timestamp of a Snakemake log."""
    stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
              for line in log.read_text().splitlines() if (m := TIMESTAMP.match(line))]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def report(results: Path, cores: int, log: Path | None = None) -> dict:
    jobs = read_jobs(results)
    stages = stage_table(jobs)
    cpu = sum(r["cpu"] for r in stages)
    path_s, chain = critical_path(stages)
    print(f"{results}: {len(jobs)} jobs with benchmark files")
    print(f"{'stage':<22}{'jobs':>5}{'wall s':>9}{'CPU s':>9}{'longest CPU s':>15}{'CPU share':>11}")
    for r in stages:
        print(f"{r['stage']:<22}{r['jobs']:>5}{r['wall']:>9.1f}{r['cpu']:>9.1f}{r['longest_cpu']:>15.1f}"
              f"{r['share']:>10.1%}")
    print(f"{'total':<22}{len(jobs):>5}{sum(r['wall'] for r in stages):>9.1f}{cpu:>9.1f}")
    low, high = max(cpu / cores, path_s), cpu / cores + path_s
    print(f"critical path (longest job CPU s per stage): {path_s:.1f} s: {' -> '.join(chain)}")
    print(f"estimate on {cores} cores, one thread per job: {low / 60:.1f} to {high / 60:.1f} min "
          f"(CPU s / cores = {cpu / cores:.1f} s; plus Snakemake's own overhead)")
    measured = logged_wall(log) if log else None
    if measured is not None:
        print(f"measured wall time (first to last timestamp of {log}): {measured / 60:.1f} min")
    return {"stages": stages, "cpu_s": cpu, "critical_path_s": path_s, "chain": chain,
            "estimate_s": (low, high), "measured_s": measured}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a finished run's results/<suite> folder")
    parser.add_argument("--cores", type=int, default=2, help="cores of the estimate (default 2)")
    parser.add_argument("--log", type=Path, help="the run's Snakemake log, for the measured wall time")
    args = parser.parse_args(argv)
    return report(args.results, args.cores, args.log)


if __name__ == "__main__":
    main()
