"""Shared set-up of the benchmark scripts: a paper config's settings for the fast path and the
reference path, the models and data they run on, pinned threads, paths timed in alternating
blocks, FLOP counts and MFU, and the printed table.

The benchmarks run the pipeline's own code (cbdm.train.TrainStep, cbdm.sample.generate,
cbdm.features, cbdm.evaluate); this module only prepares their inputs and times them.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch
import yaml

from cbdm.losses import get_loss
from cbdm.networks import build_unet, count_parameters

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = REPO / "config/paper/cifar10-lt.yaml"
REFERENCE_PATH = REPO / "config/overrides/reference-path.yaml"
# "ci": the paper config's settings on a small network and 8x8 images, for CPU smoke runs.
CI_NETWORK = dict(base_channels=16, channel_mult=[1, 2], attention_levels=[1], num_res_blocks=1, dropout=0.0,
                  norm_groups=4)
CI_IMAGE_SIZE = 8

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets: the H100 Tensor
# Core GPU data sheet (SXM 1,979, PCIe 1,513, NVL 1,671 TFLOP/s "with sparsity", halved here) and
# the H200 product page (1,979 with sparsity). Matched by the device name, most specific first.
PEAK_BF16_DENSE_TFLOPS = {"H100 PCIe": 756.5, "H100 NVL": 835.5, "H100": 989.4, "H200": 989.4}
PEAK_SOURCE = "NVIDIA H100/H200 data sheets, dense bf16 (half the sparsity figure)"


def arguments(description: str, **defaults) -> argparse.ArgumentParser:
    """The command line every benchmark shares, with the script's own defaults."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(PAPER_CONFIG), help="the paper config whose settings are timed")
    parser.add_argument("--variant", default=defaults.get("variant", "cbdm"))
    parser.add_argument("--size", choices=["paper", "ci", "small"], default="paper",
                        help="'ci' (or its older name 'small'): the config's settings on a small network at 8x8 "
                             "(CPU smoke runs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: the config's batch size")
    parser.add_argument("--blocks", type=int, default=defaults.get("blocks", 5),
                        help="timed blocks per path, the paths alternating")
    parser.add_argument("--calls", type=int, default=defaults.get("calls", 5), help="timed calls per block")
    parser.add_argument("--warmup", type=int, default=defaults.get("warmup", 2),
                        help="untimed calls per path after its first, before the blocks (CUDA graphs in "
                             "'reduce-overhead' are recorded on the second call and replayed from the third)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed blocks (after the first calls): no block starts later; one always runs")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads, pinned (default: all cores)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--fast", action="append", default=[], metavar="KEY=VALUE",
                        help="override one of the fast path's settings of the timed section (repeatable; the "
                             "value is YAML), e.g. --fast channels_last=false")
    return parser


def fast_overrides(pairs: list[str], settings: dict) -> dict:
    """The --fast KEY=VALUE pairs as a dict, each key one that `settings` (the timed section) has."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in settings:
            raise SystemExit(f"--fast {pair}: expected KEY=VALUE with KEY one of {', '.join(sorted(settings))}")
        overrides[key] = yaml.safe_load(value)
    return overrides


# --- settings -----------------------------------------------------------------------------------

def variant_settings(config_path: str, variant: str, reference: bool) -> tuple[dict, dict]:
    """(config, the variant's resolved settings) of a paper config, with the reference path's
    overrides (config/overrides/reference-path.yaml) when `reference`."""
    overrides = yaml.safe_load(REFERENCE_PATH.read_text()) if reference else {}
    try:
        from cbdm.config import load_config
        from cbdm.config import variant_settings as resolve
    except ImportError:  # a GPU machine with torch but without jsonschema / snakemake
        return _settings_from_schema(config_path, variant, overrides)
    here = os.getcwd()
    os.chdir(REPO)  # a config's paths (published registry, extensions) are relative to the repository
    try:
        config = load_config(Path(here, config_path), overrides)
    except ImportError:
        return _settings_from_schema(config_path, variant, overrides)
    finally:
        os.chdir(here)
    return config, resolve(config, variant)


def fast_and_reference(args, section: str) -> tuple[dict, dict, dict]:
    """(config, fast settings, reference settings) of `args.variant` in `args.config`, with the
    command line's batch size and --no-compile applied to `section` ('training' or 'sampling'), and
    --fast's overrides to the fast path's."""
    config, fast = variant_settings(args.config, args.variant, reference=False)
    _, reference = variant_settings(args.config, args.variant, reference=True)
    for settings in (fast, reference):
        settings[section]["batch_size"] = args.batch or settings[section]["batch_size"]
        if args.no_compile:
            settings[section]["compile"] = False
    fast[section].update(fast_overrides(args.fast, fast[section]))
    return config, fast, reference


def _settings_from_schema(config_path: str, variant: str, overrides: dict) -> tuple[dict, dict]:
    """What cbdm.config resolves, for a machine without its validators: the config merged with
    the overrides, the schema's defaults filled in, the variant's sections merged over the
    top-level ones. tests/test_benchmarks.py checks it against cbdm.config on both paper configs."""
    schema = yaml.safe_load((REPO / "cbdm/config.schema.yaml").read_text())
    config = _merge(yaml.safe_load(Path(config_path).read_text()), overrides)
    _fill_defaults(config, schema, schema)
    spec = config["variants"][variant]
    settings = {"name": variant, "external": False, "description": spec.get("description", "")}
    for section in ("training", "sampling"):
        settings[section] = _merge(config[section], spec.get(section, {}))
    settings["protocol_sampling"] = {name: _merge(settings["sampling"], protocol["sampling"][variant])
                                     for name, protocol in config["evaluation"]["protocols"].items()
                                     if variant in protocol.get("sampling", {})}
    guidance = settings["sampling"]["guidance"]
    settings["guidance"] = list(guidance) if isinstance(guidance, list) else [guidance]
    settings["losses"] = [{"name": t["name"], "weight": t.get("weight", 1.0),
                           "options": get_loss(t["name"]).options({k: v for k, v in t.items()
                                                                   if k not in ("name", "weight")})}
                          for t in spec["losses"]]
    return config, settings


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else copy.deepcopy(value)
    return merged


def _fill_defaults(instance: dict, schema: dict, root: dict) -> None:
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict):
            _fill_defaults(instance[key], sub, root)
    entries = schema.get("additionalProperties")
    if isinstance(entries, dict):  # named entries (protocols, datasets): each gets the entry defaults
        for key, value in instance.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                _fill_defaults(value, entries, root)


# --- models and data ----------------------------------------------------------------------------

def image_shape(config: dict, size: str) -> tuple[int, int, int]:
    """(channels, side, classes) of the config's dataset, CIFAR-shaped (8x8 at size 'ci'); the
    sklearn digits are 8x8 grey images at any size."""
    source = next(iter(config["datasets"].values()))["source"]
    if source == "sklearn_digits":
        return 1, 8, 10
    classes = 100 if source == "cifar100" else 10
    return 3, 32 if size == "paper" else CI_IMAGE_SIZE, classes


def build_model(config: dict, size: str, device, seed: int = 0, **extras) -> torch.nn.Module:
    """The config's UNet (or the CI network) with the `extras` a variant's losses declare
    (cbdm.objective.network_extras), moved off its near-zero initialisation so that its output
    depends on its input and label (comparisons of outputs would be vacuous otherwise)."""
    channels, side, classes = image_shape(config, size)
    torch.manual_seed(seed)
    model = build_unet(config["network"] if size == "paper" else CI_NETWORK, image_channels=channels,
                       image_size=side, num_classes=classes, num_timesteps=config["diffusion"]["num_timesteps"],
                       **extras)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.to(device)


def class_structured_images(n: int, channels: int, side: int, classes: int, seed: int = 0):
    """Random uint8 images with class structure (a class's images share a smooth colour pattern
    plus noise), and their labels: CIFAR-shaped stand-in data, so a training curve can fall."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    patterns = torch.nn.functional.interpolate(torch.rand(classes, channels, 4, 4, generator=g), size=side,
                                               mode="bilinear", align_corners=False)
    images = patterns[labels] * 0.8 + 0.2 * torch.rand(n, channels, side, side, generator=g)
    return (images * 255).round().to(torch.uint8), labels


# --- timing -------------------------------------------------------------------------------------

def pin_threads(threads: int | None) -> int:
    """Use `threads` CPU threads (default: every core this process may run on), pinned to the
    first that many cores, so that the two paths never compete for or migrate between cores. The
    pin is the whole process's and its children inherit it (DataLoader workers, subprocesses):
    a caller that goes on after the benchmark gives the cores back (tests/helpers.py,
    cpu_placement_kept)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))
    threads = threads or len(cores)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores[:threads])
    torch.set_num_threads(threads)
    return threads


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(paths: dict, device: torch.device, blocks: int, calls: int, budget: float | None = None,
              warmup: int = 0) -> dict:
    """Time the paths (name -> a callable taking one step) in alternating blocks of `calls` calls:
    A B B A A B ..., so that drift of the machine hits both alike. Each path's first call runs
    alone first and is timed apart (compile), then `warmup` more calls untimed (CUDA-graph
    recording, cuDNN's algorithm search). Returns name -> {'first_s', 'block_s': [seconds per
    call, one per block]}."""
    timings = {}
    for name, call in paths.items():
        synchronize(device)
        t0 = time.perf_counter()
        call()
        synchronize(device)
        timings[name] = {"first_s": time.perf_counter() - t0, "block_s": []}
        for _ in range(warmup):
            call()
        synchronize(device)
    started = time.perf_counter()  # the budget is for the timed blocks, after compile and warm-up
    order = list(paths)
    for block in range(blocks):
        if block and budget is not None and time.perf_counter() - started > budget:
            break
        for name in (order if block % 2 == 0 else order[::-1]):
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                paths[name]()
            synchronize(device)
            timings[name]["block_s"].append((time.perf_counter() - t0) / calls)
    return timings


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (matrix products and convolutions, forward and backward), by
    torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def peak_tflops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak in TFLOP/s where it is listed, for MFU; None otherwise."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_DENSE_TFLOPS.items() if key in name), None)


def reset_peak_memory(device: torch.device) -> None:
    """Start the GPU's peak-memory count afresh (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """GPU: peak allocated by torch since the last reset; CPU: the process's peak resident size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine(device: torch.device) -> str:
    """The device's name for the tables: the GPU model, or the CPU and its pinned threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} pinned threads"


def path_row(name: str, timing: dict, per_call: float, flops_per_call: int | None, device, detail: str) -> dict:
    """One path's figures: `per_call` units (images) per call; rates per block; MFU of the median."""
    rates = sorted(per_call / s for s in timing["block_s"])
    median = statistics.median(rates)
    peak = peak_tflops(device)
    mfu = None
    if flops_per_call and peak:
        mfu = flops_per_call / per_call * median / (peak * 1e12)
    return {"path": name, "min": rates[0], "median": median, "max": rates[-1], "blocks": len(rates),
            "first_call_s": timing["first_s"], "mfu": mfu, "peak_mb": peak_memory_mb(device), "detail": detail}


def print_table(title: str, rows: list[dict], unit: str, device, args, extra: dict | None = None) -> dict:
    """Print the paths (the reference first) with min / median / max over blocks, the ratio of
    medians to the reference's, the first call's time (compile + warm-up) and MFU; write them with --json."""
    reference = rows[0]["median"]
    peak = peak_tflops(device)
    print(f"{title}\n  on {machine(device)}, torch {torch.__version__}; "
          f"MFU against {f'{peak} TFLOP/s ({PEAK_SOURCE})' if peak else 'n/a (no peak known for this device)'}")
    width = max(10, *(len(r["path"]) for r in rows))
    print(f"  {'path':<{width}} {unit + ' min':>14} {'median':>10} {'max':>10} {'ratio':>6} {'blocks':>6} "
          f"{'1st call s':>10} {'MFU':>6} {'peak MB':>9}")
    for r in rows:
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "   n/a"
        print(f"  {r['path']:<{width}} {r['min']:14.2f} {r['median']:10.2f} {r['max']:10.2f} "
              f"{r['median'] / reference:6.2f} {r['blocks']:6d} {r['first_call_s']:10.1f} {mfu:>6} "
              f"{r['peak_mb']:9.0f}   [{r['detail']}]")
    for key, value in (extra or {}).items():
        print(f"  {key}: {value}")
    figures = {"title": title, "unit": unit, "machine": machine(device), "torch": torch.__version__,
               "peak_tflops": peak, "rows": rows, "ratio": rows[-1]["median"] / reference, **(extra or {})}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


def parameters_line(model) -> str:
    """'<N> M parameters' of a model."""
    return f"{count_parameters(model) / 1e6:.2f} M parameters"


def describe(section: dict, keys) -> str:
    """'key=value, ...' of the listed settings a section has."""
    return ", ".join(f"{k}={section[k]}" for k in keys if k in section)
