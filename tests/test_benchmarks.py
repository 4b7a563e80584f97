"""The paper configs run the fast path; the benchmark scripts time the pipeline's own functions
on those configs' settings and print the full table (CPU, CI-sized); the figures that count are
taken on a GPU (benchmarks/README.md)."""
import copy
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

import cbdm.evaluate
import cbdm.objective
import cbdm.sample
import cbdm.train
from cbdm.config import load_config, variant_settings

PAPER = ["config/paper/cifar10-lt.yaml", "config/paper/cifar100-lt.yaml"]
FAST_TRAINING = {"precision": "bf16", "compile": True, "compile_mode": "reduce-overhead", "channels_last": True,
                 "group_norm": "channels_last",
                 "fused_adam": True, "tf32": True, "cudnn_benchmark": True, "batched_forward": True,
                 "ema_update": "foreach"}
FAST_SAMPLING = {"precision": "bf16", "compile": True, "batched_guidance": True, "tf32": True}
REFERENCE_TRAINING = {"precision": "fp32", "compile": False, "channels_last": False, "group_norm": "native",
                      "fused_adam": False, "batched_forward": False, "ema_update": "loop", "tf32": "convolutions",
                      "cudnn_benchmark": False}
REFERENCE_SAMPLING = {"precision": "fp32", "compile": False, "batched_guidance": False, "tf32": "convolutions"}
SMOKE = {
    "bench_train.py": ["--size", "ci", "--device", "cpu", "--blocks", "2", "--calls", "1", "--no-compile",
                       "--threads", "1"],
    "bench_sample.py": ["--size", "ci", "--device", "cpu", "--batch", "4", "--steps", "2", "--blocks", "2",
                        "--no-compile", "--threads", "1"],
    "bench_features.py": ["--device", "cpu", "--images", "2", "--batch", "2", "--reference-batch", "2",
                          "--workers", "0", "--blocks", "1", "--threads", "1"],
    "bench_convs.py": ["--size", "ci", "--device", "cpu", "--blocks", "2", "--calls", "1", "--threads", "1"],
}


@pytest.fixture
def benchmarks(repo, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    monkeypatch.chdir(repo / "benchmarks")


def resolved(repo, path, reference=False):
    """(config, variant -> settings) as the pipeline resolves them (paths in configs are relative
    to the repository)."""
    overrides = yaml.safe_load((repo / "config/overrides/reference-path.yaml").read_text()) if reference else {}
    here = os.getcwd()
    os.chdir(repo)
    try:
        config = load_config(repo / path, overrides)
    finally:
        os.chdir(here)
    return config, {v: variant_settings(config, v) for v in config["variants"]}


@pytest.mark.parametrize("path", PAPER)
def test_the_paper_configs_run_the_fast_path_and_the_reference_path_is_declared(repo, path):
    _, fast = resolved(repo, path)
    _, reference = resolved(repo, path, reference=True)
    for name in fast:
        assert FAST_TRAINING.items() <= fast[name]["training"].items(), name
        assert FAST_SAMPLING.items() <= fast[name]["sampling"].items(), name
        assert REFERENCE_TRAINING.items() <= reference[name]["training"].items(), name
        assert REFERENCE_SAMPLING.items() <= reference[name]["sampling"].items(), name
        # the reference protocol changes how the networks run, nothing the results depend on
        same = lambda a, b: {k: v for k, v in a.items() if k not in {**FAST_TRAINING, **FAST_SAMPLING}} == \
            {k: v for k, v in b.items() if k not in {**FAST_TRAINING, **FAST_SAMPLING}}  # noqa: E731
        assert same(fast[name]["training"], reference[name]["training"])
        assert same(fast[name]["sampling"], reference[name]["sampling"])


@pytest.mark.parametrize("path", PAPER)
@pytest.mark.parametrize("reference", [False, True])
def test_the_benchmarks_resolve_a_config_as_the_pipeline_does_without_its_validators(repo, benchmarks, path,
                                                                                      reference):
    """The GPU machine has no jsonschema/snakemake: the harness's fallback must give the same settings."""
    import harness

    config, settings = resolved(repo, path, reference)
    overrides = yaml.safe_load(harness.REFERENCE_PATH.read_text()) if reference else {}
    fallback_config, _ = harness._settings_from_schema(str(repo / path), "cbdm", overrides)
    assert fallback_config["training"] == config["training"]
    assert fallback_config["sampling"] == config["sampling"]
    assert fallback_config["evaluation"] == config["evaluation"]
    for name in settings:
        assert harness._settings_from_schema(str(repo / path), name, overrides)[1] == settings[name]


def spy(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_bench_train_times_the_trainers_own_step(benchmarks, monkeypatch, capsys):
    import bench_train

    assert bench_train.setup_training is cbdm.train.setup_training
    steps = spy(monkeypatch, cbdm.train.TrainStep, "__call__")
    figures = bench_train.run(bench_train.parser().parse_args(SMOKE["bench_train.py"]))
    assert len(steps) == 2 * (1 + 2 + 2 * 1) + 1  # two paths: first call, 2 warm-up calls, 2 blocks of 1; FLOPs
    assert [row["path"] for row in figures["rows"]] == ["reference", "fast"]
    assert figures["rows"][1]["detail"].startswith("precision=bf16")
    assert "batch 48, label drop 0.1 per batch" in figures["title"]  # the paper config's CBDM settings
    printed = capsys.readouterr().out
    for column in ("min", "median", "max", "ratio", "1st call s", "MFU"):
        assert column in printed


def test_the_flops_of_a_step_do_not_depend_on_the_label_drop_coin(benchmarks):
    # An eager step whose batch loses its labels runs only the trained pass; counted on such a step,
    # CBDM's FLOPs (and every MFU from them) would come out halved.
    import bench_train
    import torch

    import harness

    args = bench_train.parser().parse_args(SMOKE["bench_train.py"])
    config, _, reference = harness.fast_and_reference(args, "training")
    dropped = copy.deepcopy(reference)
    dropped["training"]["label_drop"] = {"policy": "batch", "probability": 1.0}
    cpu = torch.device("cpu")
    base = harness.build_model(config, "ci", cpu)
    data = bench_train.pool(config, "ci", cpu)
    full = bench_train.step_flops(config, reference, base, data, cpu)
    assert bench_train.step_flops(config, dropped, base, data, cpu) == full
    assert harness.count_flops(bench_train.training_step(config, dropped, base, data, cpu)[0]) < 0.6 * full


def test_bench_convs_times_the_convolutions_of_the_trainers_own_step(benchmarks, monkeypatch):
    import bench_convs
    import torch

    import harness

    args = bench_convs.parser().parse_args([*SMOKE["bench_convs.py"], "--warmup", "0"])
    config, fast, reference = harness.fast_and_reference(args, "training")
    base = harness.build_model(config, "ci", torch.device("cpu"))
    data = bench_convs.pool(config, "ci", torch.device("cpu"))
    modules = sum(isinstance(m, torch.nn.Conv2d) for m in base.modules())
    recorded = {name: bench_convs.step_convolutions(config, s, base, data, torch.device("cpu"))
                for name, s in (("reference", reference), ("fast", fast))}
    seen = {name: convolutions for name, (convolutions, _) in recorded.items()}
    # CBDM: two label sets, one forward each on the reference path, one forward of both on the fast one
    assert sum(seen["reference"].values()) == 2 * modules and sum(seen["fast"].values()) == modules
    assert {key[0][0] for key in seen["reference"]} == {48} and {key[0][0] for key in seen["fast"]} == {96}
    # With a peak known (a GPU's; here a stand-in), the bound comes from the kernels' profiled time.
    monkeypatch.setattr(harness, "peak_tflops", lambda device: 1e-3)
    figures = bench_convs.run(args)
    conv, step = map(float, figures["GFLOP per step: convolutions / whole step"].split(" / "))
    assert 0.9 * step < conv < step  # the step's FLOPs are nearly all convolutions
    bound = figures["bound on the whole step's MFU with these kernels (step FLOPs / their device time / peak)"]
    assert float(bound.rstrip(" %")) > 0


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5),
                                        ("NVIDIA H100 NVL", 835.5), ("NVIDIA H200", 989.4),
                                        ("NVIDIA A100-SXM4-80GB", None)])
def test_mfu_takes_the_peak_of_the_gpu_the_device_name_names(benchmarks, monkeypatch, name, peak):
    # The names torch reports on the lent machines (H100 SXM, H200), the other H100 boards, and one not
    # listed: MFU is then n/a, not a division by nothing.
    import harness

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 0)
    assert harness.peak_tflops(torch.device("cuda")) == peak
    assert harness.peak_tflops(torch.device("cpu")) is None
    row = harness.path_row("fast", {"first_s": 1.0, "block_s": [0.5]}, 48, 10**12, torch.device("cuda"), "")
    assert row["mfu"] == (pytest.approx(2e12 / (peak * 1e12)) if peak else None)


def test_a_fast_path_setting_is_overridden_from_the_command_line_and_a_wrong_key_named(benchmarks):
    import bench_train

    import harness

    args = bench_train.parser().parse_args([*SMOKE["bench_train.py"], "--fast", "channels_last=false",
                                            "--fast", "compile_mode=max-autotune-no-cudagraphs"])
    _, fast, reference = harness.fast_and_reference(args, "training")
    assert fast["training"]["channels_last"] is False and reference["training"]["channels_last"] is False
    assert fast["training"]["compile_mode"] == "max-autotune-no-cudagraphs"
    args = bench_train.parser().parse_args([*SMOKE["bench_train.py"], "--fast", "channel_last=false"])
    with pytest.raises(SystemExit, match="--fast channel_last=false: expected KEY=VALUE with KEY one of"):
        harness.fast_and_reference(args, "training")


def test_bench_bf16_times_the_default_trainers_cpu_levers_with_and_without_static_shapes(benchmarks, monkeypatch):
    import bench_bf16

    images_per_pass = []
    predict = cbdm.objective.Objective._predict

    def recording(self, model, x_t, t, label_sets):
        images_per_pass.append(len(x_t) * len(label_sets))
        return predict(self, model, x_t, t, label_sets)

    monkeypatch.setattr(cbdm.objective.Objective, "_predict", recording)
    args = bench_bf16.parser().parse_args(["--blocks", "1", "--calls", "1", "--threads", "1", "--drop", "1.0",
                                          "--warmup", "0"])
    figures = bench_bf16.run(args)
    names = ["fp32", "bf16", "bf16+fused", "bf16+fused+nhwc", "bf16+fused+static"]
    assert [row["path"] for row in figures["rows"]] == names
    assert "label drop 1.0 per batch" in figures["title"]
    # every batch dropped: the eager paths run the trained pass alone (batch 64), the static one all three sets
    assert sorted(images_per_pass) == [64] * 8 + [192] * 2  # first call + one timed call per path


def test_bench_sample_times_the_pipelines_sampler(benchmarks, monkeypatch, repo):
    import bench_sample

    calls = spy(monkeypatch, bench_sample, "generate")
    figures = bench_sample.run(bench_sample.parser().parse_args(SMOKE["bench_sample.py"]))
    assert len(calls) == 2 * (1 + 2 + 2)  # two paths: first call, 2 warm-up calls, 2 blocks of 1
    assert all(row["median"] > 0 for row in figures["rows"])
    paper = yaml.safe_load((repo / "config/paper/cifar10-lt.yaml").read_text())
    first_guidance = paper["variants"]["cbdm"]["sampling"]["guidance"][0]  # the config's main-table scale
    assert f"guidance {first_guidance}" in figures["title"] and "ancestral" in figures["title"]


def test_bench_sample_imports_the_pipelines_generate(benchmarks):
    import bench_sample

    assert bench_sample.generate is cbdm.sample.generate


def test_bench_metrics_times_the_evaluation_stage(benchmarks, monkeypatch, tmp_path):
    import bench_metrics

    assert bench_metrics.scope_records is cbdm.evaluate.scope_records
    calls = spy(monkeypatch, bench_metrics, "scope_records")
    out = tmp_path / "metrics.json"
    monkeypatch.setattr(sys, "argv", ["bench_metrics.py", "--samples", "1500", "--dim", "8", "--device", "cpu",
                                      "--threads", "1", "--json", str(out)])
    bench_metrics.main()
    figures = json.loads(out.read_text())
    assert len(calls) == 1 + 3 + 100  # all, the three CIFAR-100-LT groups, every class
    assert figures["scopes"]["classes"]["done"] == 100 and figures["projected_s"] > 0


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_benchmark_run_in_process_gives_back_the_cores_it_pinned(benchmarks):
    """The suite's guard (conftest, helpers.cpu_placement_kept): a benchmark's main() pins the
    test process, and the workflow jobs later tests spawn inherit the pin."""
    import harness
    from helpers import cpu_placement_kept

    def child_cores():
        code = "import os; print(len(os.sched_getaffinity(0)))"
        return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)

    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    with cpu_placement_kept():
        harness.pin_threads(1)
        assert len(os.sched_getaffinity(0)) == 1 and torch.get_num_threads() == 1 and child_cores() == 1
    assert os.sched_getaffinity(0) == cores and torch.get_num_threads() == threads
    assert child_cores() == len(cores)


@pytest.mark.slow
@pytest.mark.parametrize("script", SMOKE)
def test_benchmark_scripts_print_the_full_table(script, repo, tmp_path):
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(repo / "benchmarks" / script), *SMOKE[script], "--json", str(out)],
                            capture_output=True, text=True, timeout=900, cwd=repo / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert len(figures["rows"]) == 2
    assert all(0 < row["min"] <= row["median"] <= row["max"] and row["peak_mb"] > 0 for row in figures["rows"])
    header = next(line for line in result.stdout.splitlines() if "median" in line)
    assert all(column in header for column in ("min", "max", "ratio", "1st call s", "MFU"))


def test_on_a_gpu_every_convolution_gets_a_channels_last_input_only_with_the_layout_keeping_group_norm(benchmarks):
    """conv_layouts.py on a fake CUDA device: PyTorch's GroupNorm writes contiguous output on a
    GPU, so most convolutions of the channels-last network get the other layout; the layout-keeping
    GroupNorm leaves none, and both return fp32, as a GPU's autocast runs GroupNorm."""
    import conv_layouts

    figures = conv_layouts.run(conv_layouts.parser().parse_args(["--size", "ci"]))
    native, kept = figures["native"], figures["channels_last"]
    assert native["convolutions"] == kept["convolutions"] > 10
    assert kept["not_channels_last"] == 0 and native["not_channels_last"] >= native["convolutions"] // 2
    assert native["group_norm_dtypes"] == kept["group_norm_dtypes"] == ["torch.float32"]
    assert torch._C._select_conv_backend.__name__ == "_select_conv_backend"  # the patch is undone


def test_the_gpu_check_fits_its_time_budget(repo, benchmarks, monkeypatch, tmp_path):
    """Mandatory parts' caps fit the budget, the shell's hard limit lies above it, and an optional
    part runs only where its whole cap still fits."""
    import gpu_check

    mandatory = [cap for name, cap, _, _ in gpu_check.PARTS if name not in gpu_check.OPTIONAL]
    assert sum(mandatory) <= gpu_check.TOTAL_BUDGET_S
    limit = int(re.search(r"^limit=(\d+)$", (repo / "benchmarks/gpu_check.sh").read_text(), re.M).group(1))
    assert limit <= 480 and gpu_check.TOTAL_BUDGET_S < limit - 10  # 8 minutes at most, a margin for start-up
    clock = iter(range(0, 10000, 70))  # every part appears to take 70 s
    monkeypatch.setattr(gpu_check.time, "perf_counter", lambda: next(clock))
    ran = []
    monkeypatch.setattr(gpu_check, "run_part", lambda name, cap, *rest: ran.append((name, cap)) or {"status": "ok"})
    monkeypatch.setattr(gpu_check, "environment", lambda: {"device": "x", "torch": "y", "cpus": 1, "missing": []})
    gpu_check.check_all(tmp_path, smoke=False)
    assert [name for name, _ in ran][:5] == ["train", "train2000", "sample", "metrics", "features"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert all(summary["parts"][name]["status"].startswith("skipped") for name in gpu_check.OPTIONAL
               if name not in dict(ran))
    assert all(cap <= gpu_check.TOTAL_BUDGET_S for _, cap in ran)


# What the GPU image lacks (benchmarks/README.md, "The GPU check"): the workflow's packages, and
# the features part's, which gpu_check.sh installs from carried wheels only for that part.
GPU_IMAGE_LACKS = ["jsonschema", "snakemake", "cleanfid", "torch_fidelity"]


def test_every_script_of_the_gpu_check_imports_where_the_gpu_image_lacks_the_workflows_packages(repo, benchmarks):
    import gpu_check

    scripts = sorted({argv[0].removesuffix(".py") for _, _, argv, _ in gpu_check.PARTS})
    lacking = "; ".join(f"sys.modules[{name!r}] = None" for name in GPU_IMAGE_LACKS)  # import raises ImportError
    code = f"import sys; {lacking}; sys.path.insert(0, 'benchmarks'); import cbdm.train, {', '.join(scripts)}"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_gpu_check_runs_the_parts_only_names_and_refuses_an_unknown_one(benchmarks, monkeypatch, tmp_path):
    import gpu_check

    ran = []
    monkeypatch.setattr(gpu_check, "run_part", lambda name, cap, *rest: ran.append(name) or {"status": "ok"})
    monkeypatch.setattr(gpu_check, "environment", lambda: {"device": "x", "torch": "y", "cpus": 1, "missing": []})
    gpu_check.check_all(tmp_path, smoke=False, only="train_native_group_norm,train,features")
    assert ran == ["train", "features", "train_native_group_norm"]  # in PARTS' order, optional ones included
    caps = dict((name, cap) for name, cap, *_ in gpu_check.PARTS)
    assert sum(caps[name] for name in ran) <= gpu_check.TOTAL_BUDGET_S  # the diagnosis README names fits
    with pytest.raises(SystemExit, match="--only train,profil: no part profil; the parts are train, "):
        gpu_check.check_all(tmp_path, smoke=False, only="train,profil")


def test_the_gpu_checks_summary_says_so_where_a_profile_recorded_no_launches(benchmarks):
    # A profile whose kernels link to no operator has no launcher rows: its part is still summarised
    # (the summary is written after every part has run, so failing there loses the whole table).
    import gpu_check

    figures = {"total_ms": 219.2, "by launcher": []}
    summary = {"environment": {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "cpus": 16, "missing": []},
               "seconds": 1.0, "parts": {"profile": {"status": "ok", "figures": figures}}}
    table = gpu_check.summary_table(summary)
    assert "| profile | ok | 219.2 ms of device time | no kernel was linked to a launching operator |" in table


def test_bench_features_times_clean_fid_only_where_its_fid_runs_with_this_scipy(benchmarks, monkeypatch):
    """clean-fid 0.1.35 calls scipy.linalg.sqrtm(disp=False); the GPU image's scipy 1.18.1 refused
    that (TypeError), which failed the whole features part of the H100 check of 2026-11-27."""
    import argparse

    import bench_features
    from scipy import linalg

    args = argparse.Namespace(stand_in=False, workers=0, reference_batch=4)
    assert bench_features.reference_path([], None, "cpu", args)[0] == "clean-fid"
    monkeypatch.setattr(linalg, "sqrtm", lambda a, blocksize=64: a)  # scipy 1.18's signature: no disp
    name, detail, _ = bench_features.reference_path([], None, "cpu", args)
    assert name == "cf-like" and "sqrtm(disp=False)" in detail and "carry scipy<1.18" in detail
