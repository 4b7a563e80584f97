"""The metrics stage at the paper's scale: cbdm.evaluate's records of one sample set (FID, KID,
precision/recall for all classes, every group, every class, the groups at matched n, with the
paper config's evaluation settings) on random features with class structure, on the job's device.
Prints the seconds of each kind of scope, so that a CPU run at a smaller size can be extrapolated
(--estimate-for: see benchmarks/README.md, "Evaluation at the paper's scale").

    python benchmarks/bench_metrics.py                                  # 50k x 2048, 100 classes, GPU
    python benchmarks/bench_metrics.py --samples 5000 --device cpu      # the CPU measurement
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from cbdm.evaluate import matched_group_records, scope_records, scopes
from cbdm.metrics import frechet_distance, kernel_distance, precision_recall

import harness

CIFAR100_CONFIG = harness.REPO / "config/paper/cifar100-lt.yaml"


def class_features(n: int, dim: int, classes: int, seed: int) -> dict:
    """Feature arrays as the features stage writes them: class means plus noise, float64."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % classes
    means = rng.randn(classes, dim)
    features = means[labels] + 2.0 * rng.randn(n, dim)
    return {"features": features, "labels": labels, "predicted": labels.copy(),
            "logits": rng.randn(n, 8)}


def select(arrays: dict, classes: list[int]) -> dict:
    """The rows of every array whose label is in `classes`."""
    keep = np.isin(arrays["labels"], classes)
    return {k: v[keep] for k, v in arrays.items()}


def timed_scopes(gen: dict, ref: dict, groups: dict, cfg: dict, device, budget: float | None) -> dict:
    """kind of scope -> [seconds, scopes done, scopes in all]: 'all', the groups, the groups at
    matched n, then the classes (the many cheap scopes last, so a budget cut leaves a rate for
    each kind); scopes after `budget` seconds are skipped."""
    started = time.perf_counter()
    classes = len(np.unique(gen["labels"]))
    plain = [(s, c) for s, c in scopes(groups, classes) if not s.startswith("class ")]
    jobs = ([("all" if s == "all" else "groups", lambda s=s, c=c: scope_records(s, select(gen, c), select(ref, c),
                                                                               groups, cfg, device)) for s, c in plain]
            + [("matched", lambda: matched_group_records(gen, ref, groups, cfg, device))]
            + [("classes", lambda s=s, c=c: scope_records(s, select(gen, c), select(ref, c), groups, cfg, device))
               for s, c in scopes(groups, classes) if s.startswith("class ")])
    done = {kind: [0.0, 0, sum(k == kind for k, _ in jobs)] for kind in ("all", "groups", "matched", "classes")}
    for kind, job in jobs:
        if budget is not None and time.perf_counter() - started > budget:
            break
        t0 = time.perf_counter()
        job()
        harness.synchronize(device)
        done[kind][0] += time.perf_counter() - t0
        done[kind][1] += 1
    return done


# Calls of each metric in one CIFAR-100-LT record set of n samples per side (groups of 35/35/30
# classes; evaluation.matched_repeats 10 over 3 groups): how they scale with n. FID's cost is its
# D^3 eigendecompositions (constant) plus covariances (linear in n); KID's 100 subsets of 1000 are
# constant; precision/recall's distance matrices grow with the square of the set size.
def record_set_model(n: int) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(calls, set size relative to n)] of one record set (scope_records + matched)."""
    group, matched = 0.33, 0.5 * 0.30  # a group's share; matched subsets: half the smallest group
    return {"fid": [(1, 1.0), (3, group), (100, 0.01), (30, matched)],
            "kid": [(1, 1.0), (3, group), (100, 0.01), (30, matched)],
            "pr": [(1, 1.0), (3, group), (100, 0.01), (30, matched)],
            "kid_bootstrap": [(100, 0.01)]}


def component_seconds(n: int, dim: int, cfg: dict, device, class_size: int) -> dict[str, float]:
    """Seconds of one call of each metric on n x dim features; the bootstrap: one class's resamples
    at the target's class size (its cost at tiny sizes is overhead, which does not extrapolate)."""
    from cbdm.evaluate import kid_bootstrap_interval

    gen, ref = class_features(n, dim, 100, 0)["features"], class_features(n, dim, 100, 1)["features"]
    calls = {"fid": lambda: frechet_distance(gen, ref, device),
             "kid": lambda: kernel_distance(gen, ref, subsets=cfg["kid_subsets"], subset_size=cfg["kid_subset_size"],
                                            seed=0, device=device),
             "pr": lambda: precision_recall(gen, ref, cfg["pr_neighborhood"], device),
             "kid_bootstrap": lambda: kid_bootstrap_interval(
                 *(class_features(class_size, dim, 1, seed)["features"] for seed in (2, 3)), cfg, device)}
    seconds = {}
    for name, call in calls.items():
        t0 = time.perf_counter()
        call()
        harness.synchronize(device)
        seconds[name] = time.perf_counter() - t0
    return seconds


def extrapolate(seconds: dict[str, float], measured_n: int, target_n: int, kid_m: int) -> float:
    """Seconds of a target_n record set from one call of each metric at measured_n (see record_set_model)."""
    total = 0.0
    for metric, uses in record_set_model(target_n).items():
        for calls, share in uses:
            size = share * target_n
            if metric == "pr":
                scale = (size / measured_n) ** 2
            elif metric == "kid":
                scale = (min(kid_m, size) / min(kid_m, measured_n)) ** 2
            elif metric == "fid":
                scale = 1.0  # the D^3 eigendecompositions dominate at D = 2048
            else:
                scale = 1.0  # measured at the target's class size
            total += calls * seconds[metric] * scale
    return total


def main():
    """Parse the command line and time (or, with --estimate-for, estimate) the metrics."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50000, help="generated and reference features, each")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=None, help="seconds; scopes after it are skipped")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--estimate-for", type=int, default=None,
                        help="time one call of each metric at --samples instead, and extrapolate to a record set "
                             "of this many samples (an estimate; benchmarks/README.md gives the method)")
    parser.add_argument("--json")
    args = parser.parse_args()
    threads = harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, _ = harness.variant_settings(str(CIFAR100_CONFIG), "cbdm", reference=False)
    groups = next(iter(config["datasets"].values()))["groups"]
    cfg = config["evaluation"]
    if args.estimate_for:
        return estimate(args, cfg, device, threads)
    gen = class_features(args.samples, args.dim, 100, seed=0)
    ref = class_features(args.samples, args.dim, 100, seed=1)
    done = timed_scopes(gen, ref, groups, cfg, device, args.budget)
    total = sum(seconds for seconds, _, _ in done.values())
    unreached = [kind for kind, (_, n, of) in done.items() if of and not n]
    projected = None if unreached else sum(seconds / n * of for seconds, n, of in done.values() if n)
    print(f"Metrics of one {args.samples} x {args.dim} sample set, 100 classes, groups {list(groups)} "
          f"(cbdm.evaluate, CIFAR-100-LT evaluation settings: KID {cfg['kid_subsets']} x {cfg['kid_subset_size']}, "
          f"KID bootstrap {cfg['kid_bootstrap']}, matched {cfg['matched_repeats']} repeats) on "
          f"{harness.machine(device)} ({threads} threads), torch {torch.__version__}")
    for kind, (seconds, n, of) in done.items():
        each = f"  ({seconds / n:.2f} s each)" if n else ""
        print(f"  {kind:<8} {n:4d} of {of:4d} scopes  {seconds:8.1f} s{each}")
    print(f"  measured {total:.1f} s; all scopes, the unfinished ones at the measured rate of their kind: "
          + (f"{projected:.1f} s" if projected is not None else f"not projected ({', '.join(unreached)} not reached)"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": args.samples, "dim": args.dim, "machine": harness.machine(device),
                       "scopes": {k: {"seconds": s, "done": n, "of": of} for k, (s, n, of) in done.items()},
                       "measured_s": total, "projected_s": projected}, f, indent=2)


H100_FP64_TENSOR_TFLOPS = 67.0  # NVIDIA H100 SXM data sheet, FP64 tensor core
ASSUMED_FP64_EFFICIENCY = 0.25  # an assumption, not a measurement: float64 products, eigh, Python


def gemm_gflops(device, size: int = 2048) -> float:
    """This device's float64 matrix-product rate, GFLOP/s (the metrics are mostly float64 products)."""
    a = torch.randn(size, size, dtype=torch.float64, device=device)
    a @ a
    harness.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    harness.synchronize(device)
    return 3 * 2 * size ** 3 / (time.perf_counter() - t0) / 1e9


def estimate(args, cfg: dict, device, threads: int) -> None:
    """Print the measured seconds per metric and the labelled estimates for a larger record set."""
    seconds = component_seconds(args.samples, args.dim, cfg, device, args.estimate_for // 100)
    total = extrapolate(seconds, args.samples, args.estimate_for, cfg["kid_subset_size"])
    rate = gemm_gflops(device)
    gpu = total * rate / (ASSUMED_FP64_EFFICIENCY * H100_FP64_TENSOR_TFLOPS * 1e3)
    print(f"One call of each metric on {args.samples} x {args.dim} features on {harness.machine(device)}: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    print(f"ESTIMATE for one {args.estimate_for} x {args.dim} record set on this machine, by the complexity "
          f"model of record_set_model: {total:.0f} s ({total / 60:.1f} min)")
    print(f"ESTIMATE on one H100, scaled by float64 rate (this machine {rate:.1f} GFLOP/s measured; the H100 at an "
          f"assumed {ASSUMED_FP64_EFFICIENCY:.0%} of its {H100_FP64_TENSOR_TFLOPS} TFLOP/s FP64 peak): {gpu:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"measured_n": args.samples, "dim": args.dim, "machine": harness.machine(device),
                       "threads": threads, "seconds_per_call": seconds, "estimate_for": args.estimate_for,
                       "estimated_s": total, "gemm_gflops": rate, "estimated_h100_s": gpu}, f, indent=2)


if __name__ == "__main__":
    main()
