"""The one GPU check (benchmarks/gpu_check.sh runs it): every part is a benchmark of the
pipeline's own code, run as a subprocess with a hard time cap, so the whole check ends within
about 8 minutes on one H100/H200 including compiles, whatever a part does.

Parts, in order of importance: the training ratio (bench_train.py, CBDM variant, batch 48, label
drop 0.1, the paper config's fast path, CUDA graphs included), a 2,000-step training of the paper
network on that path through cbdm.train.train itself (CBDM variant, batch 48; random CIFAR-shaped
images with class structure, not CIFAR), the sampling ratio (bench_sample.py, batch 2000), the
paper-scale metrics (bench_metrics.py, 50k x 2048, 100 classes), the features ratio
(bench_features.py, needs torch_fidelity, and clean-fid with a scipy it runs on), and, where their
caps still fit, the training step without CUDA graphs (compile mode default), the DDPM step (batch
64), and the parts that explain the training step's MFU: its convolutions alone (bench_convs.py)
and its kernel profile with and without channels-last (profile_train.py), the step with PyTorch's
GroupNorm instead of the paper configs' layout-keeping one (training.group_norm), profiled and timed,
the sampling step's kernel profile (profile_sample.py) and its kernel search (max-autotune).
--only picks parts, so one lease can run the diagnosis without the rest.

    bash benchmarks/gpu_check.sh              # on the GPU machine, figures under $OUT
    bash benchmarks/gpu_check.sh --only features,train,train_native_group_norm     # 380 s of caps
    python benchmarks/gpu_check.py --smoke --out /tmp/check   # CPU, tiny sizes, no compile
"""
from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOTAL_BUDGET_S = 450  # hard end of the last part; the shell script adds a margin for start-up
SMOKE_CAP_S = 600  # --smoke on a busy CPU: each part may take this long (no total budget)
# The training step timed and profiled, on a GPU and in --smoke, and the lever the check compares it with.
TRAIN = ["bench_train.py", "--variant", "cbdm", "--blocks", "4", "--calls", "10", "--budget", "10"]
TRAIN_SMOKE = ["bench_train.py", "--variant", "cbdm", "--size", "ci", "--device", "cpu", "--blocks", "2", "--calls",
               "2", "--no-compile"]
# Profiles run in compile mode default: replayed CUDA graphs launch their kernels without the
# operators, so no kernel could be linked to what launched it.
PROFILE = ["profile_train.py", "--variant", "cbdm", "--calls", "10", "--fast", "compile_mode=default"]
PROFILE_SMOKE = ["profile_train.py", "--size", "ci", "--device", "cpu", "--no-compile", "--batch", "4", "--calls", "1"]
NATIVE_GROUP_NORM = ["--fast", "group_norm=native"]
# (name, cap in seconds, arguments on a GPU, arguments in --smoke): the caps sum to at most the budget.
# The training parts run the paper config's compile mode, reduce-overhead (CUDA graphs), unless they say otherwise.
PARTS = [
    ("train", 140, TRAIN, TRAIN_SMOKE),
    ("train2000", 120, ["gpu_check.py", "--part", "train2000"], ["gpu_check.py", "--part", "train2000", "--smoke"]),
    # No warm-up calls: a reference call takes seconds at batch 2000, the cap has no room for them,
    # and the default compile mode has nothing to record after its first call.
    ("sample", 70, ["bench_sample.py", "--variant", "cbdm", "--steps", "3", "--blocks", "3", "--budget", "10",
                    "--warmup", "0"],
     ["bench_sample.py", "--size", "ci", "--device", "cpu", "--batch", "8", "--steps", "2", "--blocks", "2",
      "--no-compile"]),
    ("metrics", 45, ["bench_metrics.py", "--samples", "50000", "--budget", "35"],
     ["bench_metrics.py", "--samples", "2000", "--dim", "32", "--device", "cpu", "--budget", "20"]),
    ("features", 70, ["bench_features.py", "--images", "1000", "--blocks", "2", "--budget", "5"],
     ["bench_features.py", "--images", "4", "--batch", "4", "--reference-batch", "4", "--workers", "0", "--blocks", "1",
      "--device", "cpu", "--stand-in"]),
    # The same step without CUDA graphs: what reduce-overhead gains (a cold compile took 111 s on an H100).
    ("train_default_mode", 150, ["bench_train.py", "--variant", "cbdm", "--blocks", "2", "--calls", "10", "--budget",
                                 "10", "--compile-mode", "default"], None),
    # DDPM's step at its own batch (64); its shapes compile anew (over 90 s cold on an H100).
    ("train_ddpm", 150, ["bench_train.py", "--variant", "ddpm", "--blocks", "3", "--calls", "10", "--budget", "10"],
     None),
    # Why the training step misses its targets: its convolutions alone (the MFU they allow), and
    # where its time goes, kernel by kernel under the operators that launched them.
    ("convs", 60, ["bench_convs.py", "--variant", "cbdm", "--blocks", "3", "--calls", "5", "--budget", "10"],
     ["bench_convs.py", "--size", "ci", "--device", "cpu", "--blocks", "1", "--calls", "1"]),
    ("profile", 90, PROFILE, PROFILE_SMOKE),
    ("profile_contiguous", 120, [*PROFILE, "--fast", "channels_last=false"], None),
    # The step with PyTorch's GroupNorm, whose GPU kernel writes contiguous output, so cuDNN converts
    # the layout of most convolutions' inputs: what the paper configs' layout-keeping GroupNorm
    # (training.group_norm) saves, profiled, then timed against the reference.
    ("profile_native_group_norm", 120, [*PROFILE, *NATIVE_GROUP_NORM], [*PROFILE_SMOKE, *NATIVE_GROUP_NORM]),
    ("train_native_group_norm", 170, [*TRAIN, *NATIVE_GROUP_NORM], None),
    # Where the sampling step's time goes (24.7 % MFU at batch 2000 on an H100, 2.85x the reference).
    ("profile_sample", 90, ["profile_sample.py", "--variant", "cbdm", "--steps", "3", "--calls", "2"],
     ["profile_sample.py", "--size", "ci", "--device", "cpu", "--no-compile", "--batch", "4", "--steps", "2",
      "--calls", "1"]),
    # The lever the sampling profile cannot show: inductor's kernel search (max-autotune), which
    # times Triton convolution templates against cuDNN's for each shape; a long compile, so a part
    # for a call of its own. On a CPU there is nothing to search.
    ("sample_autotune", 300, ["bench_sample.py", "--variant", "cbdm", "--steps", "3", "--blocks", "2", "--budget",
                              "10", "--warmup", "1", "--fast", "compile_mode=max-autotune"], None),
]
# The training settings the 2,000-step part prints.
TRAINING_KEYS = ("precision", "compile", "compile_mode", "channels_last", "group_norm", "fused_adam", "tf32")
# Run only where their whole cap still fits the budget, or where --only names them.
OPTIONAL = {"train_default_mode", "train_ddpm", "convs", "profile", "profile_contiguous", "profile_native_group_norm",
            "train_native_group_norm", "profile_sample", "sample_autotune"}
MODULES = ["torch", "numpy", "yaml", "tqdm", "PIL", "scipy", "pandas", "matplotlib", "torch_fidelity", "cleanfid",
           "jsonschema", "snakemake"]


def environment() -> dict:
    """What this machine has: the check needs torch, numpy, yaml, tqdm and PIL; the features part
    needs torch_fidelity; clean-fid, jsonschema and snakemake are optional (stand-ins are used)."""
    import torch

    found = {m: importlib.util.find_spec(m) is not None for m in MODULES}
    scipy = importlib.util.find_spec("scipy")
    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "scipy": importlib.metadata.version("scipy") + f" ({scipy.origin})" if scipy else "missing",
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU",
            "cpus": os.cpu_count(), "missing": [m for m, ok in found.items() if not ok]}
    print(f"environment: {json.dumps(info)}", flush=True)
    return info


def run_part(name: str, cap: float, argv: list[str], out: Path, work: Path, log) -> dict:
    """Run one benchmark as a subprocess under its time cap; its status, seconds and figures."""
    figures = work / f"{name}.json"
    command = [sys.executable, str(HERE / argv[0]), *argv[1:], "--json", str(figures)]
    print(f"\n=== {name} (cap {cap:.0f} s): {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=HERE, timeout=cap, capture_output=True, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
        status = "ok" if result.returncode == 0 else f"failed (exit {result.returncode})"
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as stopped:
        status, output = f"stopped at its {cap:.0f} s cap", _text(stopped.stdout) + _text(stopped.stderr)
    seconds = time.perf_counter() - started
    log.write(f"=== {name}: {status}, {seconds:.0f} s\n{output}\n")
    print(output[-4000:] if status == "ok" else output[-6000:], flush=True)
    print(f"=== {name}: {status} after {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": round(seconds, 1),
            "figures": json.loads(figures.read_text()) if figures.exists() else None}


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def selected_parts(only: str | None) -> list[tuple]:
    """The PARTS that --only names (comma-separated, run in PARTS' order), or all of them."""
    if only is None:
        return PARTS
    names, known = only.split(","), [part[0] for part in PARTS]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"--only {only}: no part {', '.join(unknown)}; the parts are {', '.join(known)}")
    return [part for part in PARTS if part[0] in names]


def check_all(out: Path, smoke: bool, only: str | None = None) -> None:
    """Run every part (or those --only names) within the total budget and write the summary and
    the log under `out`."""
    parts = selected_parts(only)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary = {"environment": environment(), "smoke": smoke, "parts": {}}
    with tempfile.TemporaryDirectory() as work, open(out / "gpu_check.log", "w") as log:
        for name, cap, argv, smoke_argv in parts:
            argv = smoke_argv if smoke else argv
            left = (len(parts) * SMOKE_CAP_S if smoke else TOTAL_BUDGET_S) - (time.perf_counter() - started)
            cap = SMOKE_CAP_S if smoke else cap
            if argv is None or left < (cap if name in OPTIONAL and only is None else 15):
                summary["parts"][name] = {"status": "skipped: " + ("not in --smoke" if argv is None else
                                                                   f"{left:.0f} s of the budget left")}
                continue
            if name.startswith("train2000"):
                argv = [*argv, "--out", str(out)]
            summary["parts"][name] = run_part(name, min(cap, left), argv, out, Path(work), log)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.md").write_text(summary_table(summary))
    print("\n" + summary_table(summary), flush=True)


def summary_table(summary: dict) -> str:
    """The rows for benchmarks/README.md: median ratio, each path's median rate, MFU."""
    env = summary["environment"]
    lines = [f"GPU check on {env['device']} (torch {env['torch']}, {env['cpus']} CPUs), {summary['seconds']} s; "
             f"missing modules: {', '.join(env['missing']) or 'none'}", "",
             "| part | status | reference median | fast median | ratio | fast MFU | fast 1st call (compile) s |",
             "|---|---|---|---|---|---|---|"]
    for name, part in summary["parts"].items():
        figures = part.get("figures") or {}
        rows = figures.get("rows") or []
        if len(rows) == 2:
            ref, fast = rows
            mfu = f"{100 * fast['mfu']:.1f} %" if fast.get("mfu") is not None else "n/a"
            lines.append(f"| {name} | {part['status']} | {ref['median']:.3g} {figures['unit']} | "
                         f"{fast['median']:.3g} {figures['unit']} | {fast['median'] / ref['median']:.2f} | {mfu} | "
                         f"{fast['first_call_s']:.1f} |")
        elif name.startswith("train2000") and figures:
            lines.append(f"| {name} | {part['status']} | {figures['steps']} steps at batch {figures['batch']} in "
                         f"{figures['seconds_including_compile']} s (compile included) | loss "
                         f"{figures['loss_first_logged']:.4f} -> {figures['loss_last_logged']:.4f} | | | |")
        elif name.startswith("profile") and figures:
            lines.append(f"| {name} | {part['status']} | {figures['total_ms']:.1f} ms of device time | "
                         f"{_largest_launch(figures['by launcher'])} | | | |")
        elif name == "metrics" and figures:
            done = ", ".join(f"{k} {v['done']}/{v['of']}" for k, v in figures["scopes"].items())
            projected = f"{figures['projected_s']:.0f} s" if figures["projected_s"] is not None else "not projected"
            lines.append(f"| {name} | {part['status']} | {figures['samples']} x {figures['dim']}: {done} scopes in "
                         f"{figures['measured_s']:.0f} s | all scopes: {projected} | | | |")
        else:
            lines.append(f"| {name} | {part['status']} | - | | | | |")
    return "\n".join(lines) + "\n"


def _largest_launch(launches: list[dict]) -> str:
    """The summary's cell for a profile's largest (kernel, launching operators) pair."""
    if not launches:
        return "no kernel was linked to a launching operator"
    first = launches[0]
    return f"largest: {first['share %']} % {first['kernel'][:60]} launched by {first['launched by'][:120]}"


def train2000(out: Path, smoke: bool, json_path: str | None, compile_mode: str | None = None) -> None:
    """2,000 steps of cbdm.train.train, the paper config's CBDM variant on its fast path (the shapes
    the train part compiled, so the compile caches serve it; `compile_mode` overrides the config's),
    on random 32x32 images with class structure (harness.class_structured_images), 1,000 per class;
    the loss curve goes to loss.csv, or loss-<compile_mode>.csv (and .png where matplotlib exists)."""
    sys.path.insert(0, str(HERE))
    import numpy as np

    from cbdm.io import write_npz
    from cbdm.train import train

    import harness

    config, settings = harness.variant_settings(str(harness.PAPER_CONFIG), "cbdm", reference=False)
    steps = 20 if smoke else 2000
    settings["training"].update(steps=steps, log_every=2 if smoke else 20)
    if compile_mode:
        settings["training"]["compile_mode"] = compile_mode
    curve = out / (f"loss-{compile_mode}" if compile_mode else "loss")
    if smoke:
        settings["training"]["compile"] = False
    size = "ci" if smoke else "paper"
    channels, side, classes = harness.image_shape(config, size)
    images, labels = harness.class_structured_images((10 if smoke else 1000) * classes, channels, side, classes)
    with tempfile.TemporaryDirectory() as work:
        npz = Path(work) / "train.npz"
        write_npz(npz, images=images.numpy(), labels=labels.numpy().astype(np.int64))
        started = time.perf_counter()
        train({k: settings[k] for k in ("name", "losses", "training")},
              network=harness.CI_NETWORK if smoke else config["network"], diffusion=config["diffusion"],
              train_npz=str(npz), num_classes=classes, seed=0, device="cpu" if smoke else "auto",
              out_model=str(Path(work) / "model.pt"), out_log=str(curve.with_suffix(".csv")),
              checkpoint_path=str(Path(work) / "checkpoint.pt"))
        seconds = time.perf_counter() - started
    rows = list(csv.DictReader(open(curve.with_suffix(".csv"))))
    batch = settings["training"]["batch_size"]
    figures = {"steps": steps, "batch": batch, "seconds_including_compile": round(seconds, 1),
               "images_per_s_including_compile": round(steps * batch / seconds, 1),
               "loss_first_logged": float(rows[0]["loss"]), "loss_last_logged": float(rows[-1]["loss"]),
               "data": "random 32x32 images with class structure (not CIFAR)",
               "settings": harness.describe(settings["training"], TRAINING_KEYS)}
    print(json.dumps(figures, indent=2))
    network = "CI-size" if smoke else "paper"
    mode = settings["training"]["compile_mode"] if settings["training"]["compile"] else "not compiled"
    _plot(rows, curve.with_suffix(".png"), f"{steps} steps, {network} UNet, batch {batch}\nCBDM fast path ({mode})")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2))


def _plot(rows: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no loss.png (loss.csv has the curve)")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows])
    ax.set(xlabel="step", ylabel="training loss (mean over the logging interval)", yscale="log", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    """Parse the command line and run the whole check (or one part in this process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, no compile: checks the wiring")
    parser.add_argument("--part", choices=["train2000"], help="run one part in this process (used by the check)")
    parser.add_argument("--compile-mode", help="--part train2000: override the config's training.compile_mode")
    parser.add_argument("--only", help="comma-separated parts to run, e.g. features,train,train_native_group_norm "
                                       "(default: all, the optional ones where the budget allows)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.part == "train2000":
        train2000(Path(args.out), args.smoke, args.json, args.compile_mode)
    else:
        check_all(Path(args.out), args.smoke, args.only)


if __name__ == "__main__":
    main()
