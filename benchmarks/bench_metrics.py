"""The metrics stage at the paper's scale: cbdm.evaluate's records of one sample set (FID, KID,
precision/recall for all classes, every group, every class, the groups at matched n, with the
paper config's evaluation settings) on random features with class structure, on the job's device.
Prints the seconds of each kind of scope, so that a CPU run at a smaller size can be extrapolated
(--estimate-from: see benchmarks/README.md, "Evaluation at the paper's scale").

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
    keep = np.isin(arrays["labels"], classes)
    return {k: v[keep] for k, v in arrays.items()}


def timed_scopes(gen: dict, ref: dict, groups: dict, cfg: dict, device, budget: float | None) -> dict:
    """kind of scope -> (seconds, scopes done, scopes in all); stops at `budget` seconds."""
    started = time.perf_counter()
    done = {"all": [0.0, 0, 1], "groups": [0.0, 0, len(groups)], "classes": [0.0, 0, 0], "matched": [0.0, 0, 1]}
    for scope, classes in scopes(groups, len(np.unique(gen["labels"]))):
        kind = "all" if scope == "all" else "classes" if scope.startswith("class ") else "groups"
        done["classes"][2] += kind == "classes"
        if budget is not None and time.perf_counter() - started > budget:
            continue
        t0 = time.perf_counter()
        scope_records(scope, select(gen, classes), select(ref, classes), groups, cfg, device)
        harness.synchronize(device)
        done[kind][0] += time.perf_counter() - t0
        done[kind][1] += 1
    if budget is None or time.perf_counter() - started <= budget:
        t0 = time.perf_counter()
        matched_group_records(gen, ref, groups, cfg, device)
        done["matched"][0] += time.perf_counter() - t0
        done["matched"][1] = 1
    return done


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50000, help="generated and reference features, each")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=None, help="seconds; scopes after it are skipped")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    threads = harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, _ = harness.variant_settings(str(CIFAR100_CONFIG), "cbdm", reference=False)
    groups = next(iter(config["datasets"].values()))["groups"]
    cfg = config["evaluation"]
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


if __name__ == "__main__":
    main()
