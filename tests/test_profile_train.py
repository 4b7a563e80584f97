"""benchmarks/profile_train.py files kernels by kind (Triton fusions are not convolutions) and
profiles the pipeline's own training step; the figures that count come from a GPU."""
import json

import pytest
import torch


@pytest.fixture
def profile_train(repo, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import profile_train
    return profile_train


def test_triton_fusions_are_not_filed_as_convolutions(profile_train):
    assert profile_train.kind("triton_poi_fused__to_copy_add_clone_convolution_native_group_norm_silu_3") \
        == "element-wise (fused)"
    assert profile_train.kind("triton_red_fused_native_group_norm_backward_25") == "normalisation"
    assert profile_train.kind("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "matmul/conv"
    assert profile_train.kind("some_unknown_kernel") == "other"


def test_a_fused_softmax_and_a_random_draw_are_not_filed_as_normalisation(profile_train):
    # names from the sampling profile of an H100 (benchmarks/gpu-runs/2026-11-27-h100-lease4)
    assert profile_train.kind("triton_per_fused__safe_softmax_exp_prepare_softmax_online_sub_32") == "attention"
    assert profile_train.kind("void at::native::(anonymous namespace)::distribution_elementwise_grid_stride_kernel"
                              "<float, 4, at::native::templates::cuda::normal_and_transform<float, float>>") \
        == "random numbers"
    assert profile_train.kind("triton_red_fused_native_group_norm_backward_25") == "normalisation"


def test_summary_shares_add_up(profile_train):
    summary = profile_train.summarise([("sm90_xmma_fprop", 60.0), ("triton_poi_fused_add", 30.0), ("x", 10.0)], top=2)
    assert summary["kinds"] == {"matmul/conv": 60.0, "element-wise (fused)": 30.0, "other": 10.0}
    assert [row["kernel"] for row in summary["top"]] == ["sm90_xmma_fprop", "triton_poi_fused_add"]


def test_profiles_the_pipelines_training_step_on_cpu(profile_train, repo, monkeypatch, tmp_path):
    out = tmp_path / "profile.json"
    monkeypatch.chdir(repo / "benchmarks")
    monkeypatch.setattr("sys.argv", ["profile_train.py", "--size", "ci", "--device", "cpu", "--no-compile",
                                     "--batch", "4", "--calls", "1", "--threads", "1", "--json", str(out)])
    import cbdm.train

    called = []
    original = cbdm.train.TrainStep.__call__
    monkeypatch.setattr(cbdm.train.TrainStep, "__call__",
                        lambda self, *a, **k: called.append(1) or original(self, *a, **k))
    profile_train.main()
    summary = json.loads(out.read_text())
    assert len(called) == 2  # one untimed step, then --calls 1 profiled
    assert summary["total_ms"] > 0
    assert sum(summary["kinds"].values()) == pytest.approx(100, abs=0.5)
    assert summary["by launcher"] and all(row["launched by"] for row in summary["by launcher"])


def test_a_layout_copy_inside_a_convolution_is_traced_to_the_convolution(profile_train):
    # A contiguous input meeting channels-last weights: the convolution converts the input itself,
    # the kind of unfused copy the H200 profile showed. On a CPU, operators stand in for kernels.
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 8, 8)
    prof = profile_train.profile_steps(lambda: conv(x).sum().backward(), 1, torch.device("cpu"))
    rows = profile_train.launches(prof, torch.device("cpu"))
    copies = [chain for name, chain, _ in rows if name == "aten::copy_"]
    assert any("aten::contiguous" in chain and "aten::_convolution" in chain for chain in copies), copies
    ranked = profile_train.by_launcher(rows, sum(us for *_, us in rows), top=100)
    assert sum(r["share %"] for r in ranked) == pytest.approx(100, abs=1)


def test_launchers_are_ranked_by_time_and_counted(profile_train):
    rows = [("copy", "aten::copy_ < aten::contiguous", 30.0), ("conv", "aten::cudnn_convolution", 45.0),
            ("copy", "aten::copy_ < aten::contiguous", 20.0), ("copy", "aten::copy_ < aten::_to_copy", 5.0)]
    ranked = profile_train.by_launcher(rows, total_us=100.0, top=2)
    assert [(r["kernel"], r["launched by"], r["launches"], r["share %"]) for r in ranked] == [
        ("copy", "aten::copy_ < aten::contiguous", 2, 50.0), ("conv", "aten::cudnn_convolution", 1, 45.0)]


def test_on_a_gpu_operators_are_recorded_so_that_kernels_have_launchers(profile_train, monkeypatch):
    # The profiler records operators only with its CPU activity (torch's enableProfiler registers its
    # operator callbacks for it alone); with the CUDA activity alone, kernels link to no operator and
    # every kernel's launching chain, which the GPU check's profile parts are for, comes out empty.
    asked = []

    class Recording:
        def __init__(self, activities, record_shapes):
            asked.extend(activities)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(profile_train, "profile", Recording)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    profile_train.profile_steps(lambda: None, 1, torch.device("cuda"))
    assert set(asked) == {profile_train.ProfilerActivity.CPU, profile_train.ProfilerActivity.CUDA}


def test_on_a_gpu_device_time_is_the_kernels_not_also_their_operators(profile_train):
    # With operators recorded, an operator carries its kernels' device time too: counted once, by kernel.
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    events = [SimpleNamespace(key="aten::cudnn_convolution", device_type=DeviceType.CPU, self_device_time_total=40.0,
                              self_cpu_time_total=15.0),
              SimpleNamespace(key="sm90_xmma_fprop", device_type=DeviceType.CUDA, self_device_time_total=40.0,
                              self_cpu_time_total=0.0),
              SimpleNamespace(key="cudaLaunchKernel", device_type=DeviceType.CPU, self_device_time_total=0.0,
                              self_cpu_time_total=5.0)]
    prof = SimpleNamespace(key_averages=lambda: events)
    assert profile_train.kernel_times(prof, torch.device("cuda")) == [("sm90_xmma_fprop", 40.0)]
    assert profile_train.kernel_times(prof, torch.device("cpu")) == [("aten::cudnn_convolution", 15.0),
                                                                     ("cudaLaunchKernel", 5.0)]


def test_device_time_counts_kernels_not_the_annotated_regions_around_them(profile_train):
    # With the CPU activity on, a GPU profile also holds the device-side spans of annotated regions
    # (inductor's "## Call CompiledFxGraph ##", "Optimizer.step#Adam.step"): they cover kernels
    # already counted. The H100 profile of 2026-11-27 counted them, 77 % of its "device time".
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def event(key, device_us, device_type=DeviceType.CUDA, annotation=False):
        return SimpleNamespace(key=key, self_device_time_total=device_us, device_type=device_type,
                               is_user_annotation=annotation)

    prof = SimpleNamespace(key_averages=lambda: [
        event("sm90_xmma_fprop", 30.0), event("triton_poi_fused_add", 10.0),
        event("## Call CompiledFxGraph abc ##", 45.0, annotation=True),
        event("Optimizer.step#Adam.step", 5.0, annotation=True), event("aten::add", 0.0, DeviceType.CPU)])
    assert profile_train.kernel_times(prof, torch.device("cuda")) == [("sm90_xmma_fprop", 30.0),
                                                                     ("triton_poi_fused_add", 10.0)]


def test_profiles_the_pipelines_sampler_on_cpu(profile_train, repo, monkeypatch, tmp_path):
    out = tmp_path / "profile.json"
    monkeypatch.chdir(repo / "benchmarks")
    monkeypatch.setattr("sys.argv", ["profile_sample.py", "--size", "ci", "--device", "cpu", "--no-compile",
                                     "--batch", "4", "--steps", "2", "--calls", "1", "--threads", "1",
                                     "--json", str(out)])
    import bench_sample
    import profile_sample

    called = []
    original = bench_sample.generate
    monkeypatch.setattr(bench_sample, "generate", lambda *a, **k: called.append(a[4]["steps"]) or original(*a, **k))
    profile_sample.main()
    summary = json.loads(out.read_text())
    assert called == [2, 2]  # one untimed call, then --calls 1 profiled, each of --steps 2
    assert summary["total_ms"] > 0
    assert sum(summary["kinds"].values()) == pytest.approx(100, abs=0.5)
    assert any("aten::convolution" in row["launched by"] for row in summary["by launcher"])
