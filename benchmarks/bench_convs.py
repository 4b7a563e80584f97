"""The ceiling of the training step's MFU that its convolution kernels set: every convolution one
step of the pipeline's trainer runs (cbdm.train.TrainStep on the paper config's settings, the
shapes recorded by hooks on the network during one step, every label set included), each run
alone through cuDNN, forward and both backward products, back to back, once in the reference
path's precision and layout and once in the fast path's. Nothing else of the step runs.

The step spends at least its convolution kernels' device time, and its FLOPs are nearly all
convolutions, so step FLOPs / (the kernels' device time, from torch.profiler, x peak) bounds the
step's MFU for these kernels (wall time would include Python's launches and lower it): where that
bound is under the 40 % target, no fusion of the rest of the step reaches it, and the target
needs faster convolutions (other algorithms, larger batches) instead.

    python benchmarks/bench_convs.py                       # GPU: paper UNet, CBDM, batch 48
    python benchmarks/bench_convs.py --batch 192
    python benchmarks/bench_convs.py --size ci --device cpu --blocks 2 --calls 1 --threads 1
"""
from __future__ import annotations

import collections

import torch
import torch.nn.functional as F
from bench_train import labelled_step, pool
from profile_train import kernel_times, profile_steps

from cbdm.acceleration import configure_backends

import harness

PATH_KEYS = ("precision", "channels_last", "tf32", "cudnn_benchmark")


def step_convolutions(config: dict, settings: dict, base, data, device) -> tuple[collections.Counter, int]:
    """(input shape, weight shape, stride, padding, bias) -> calls, and the FLOPs, of one eager
    training step with every batch keeping its labels (bench_train.labelled_step, whose FLOPs
    bench_train.step_flops counts)."""
    call, extras = labelled_step(config, settings, base, data, device)
    seen = collections.Counter()

    def record(module, args):
        seen[(tuple(args[0].shape), tuple(module.weight.shape), module.stride, module.padding,
              module.bias is not None)] += 1

    hooks = [m.register_forward_pre_hook(record) for m in extras["state"].model.modules()
             if isinstance(m, torch.nn.Conv2d)]
    flops = harness.count_flops(call)
    for hook in hooks:
        hook.remove()
    return seen, flops


def convolution_work(convolutions: collections.Counter, training: dict, device):
    """A callable running every recorded convolution, forward and backward (input, weight and bias
    gradients), as many times as the step does, in `training`'s precision, layout and switches."""
    dtype = torch.bfloat16 if training["precision"] == "bf16" else torch.float32
    layout = torch.channels_last if training["channels_last"] else torch.contiguous_format
    work = []
    for (x_shape, w_shape, stride, padding, bias), count in convolutions.items():
        x = torch.randn(x_shape, device=device, dtype=dtype).contiguous(memory_format=layout).requires_grad_()
        w = (0.05 * torch.randn(w_shape, device=device, dtype=dtype)).contiguous(memory_format=layout).requires_grad_()
        b = torch.zeros(w_shape[0], device=device, dtype=dtype, requires_grad=True) if bias else None
        grad = torch.randn_like(F.conv2d(x, w, b, stride, padding))
        work.append((x, w, b, stride, padding, grad, count))

    def call():
        configure_backends(tf32=training["tf32"], cudnn_benchmark=training["cudnn_benchmark"])
        for x, w, b, stride, padding, grad, count in work:
            inputs = (x, w) if b is None else (x, w, b)
            for _ in range(count):
                torch.autograd.grad(F.conv2d(x, w, b, stride, padding), inputs, grad)

    return call


def run(args) -> dict:
    """Time the step's convolutions on the reference and the fast path; returns the printed figures."""
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fast, reference = harness.fast_and_reference(args, "training")
    batch = fast["training"]["batch_size"]
    base = harness.build_model(config, args.size, device)
    data = pool(config, args.size, device)
    settings = {"reference": reference, "fast": fast}
    recorded = {name: step_convolutions(config, s, base, data, device) for name, s in settings.items()}
    convolutions = {name: seen for name, (seen, _) in recorded.items()}  # fast: the label sets in one batch
    # The reference's count: the fast path does the same math, but on a CPU in bf16 its attention runs a
    # fused kernel the FLOP counter does not count.
    flops = recorded["reference"][1]
    paths = {name: convolution_work(convolutions[name], s["training"], device) for name, s in settings.items()}
    conv_flops = harness.count_flops(paths["reference"])
    timings = harness.alternate(paths, device, args.blocks, args.calls, args.budget, args.warmup)
    rows = [harness.path_row(name, timings[name], batch, conv_flops, device, harness.describe(s["training"], PATH_KEYS))
            for name, s in settings.items()]
    extra = {"convolution calls per step, reference / fast": " / ".join(str(sum(c.values()))
                                                                        for c in convolutions.values()),
             "GFLOP per step: convolutions / whole step": f"{conv_flops / 1e9:.2f} / {flops / 1e9:.2f}"}
    peak = harness.peak_tflops(device)
    if peak:  # kernel time, not wall time: Python's launches between the kernels would lower the bound
        kernel_s = sum(us for _, us in kernel_times(profile_steps(paths["fast"], 1, device), device)) / 1e6
        extra["fast path's convolution kernels, device time per step"] = f"{1e3 * kernel_s:.2f} ms"
        extra["bound on the whole step's MFU with these kernels (step FLOPs / their device time / peak)"] = \
            f"{100 * flops / kernel_s / (peak * 1e12):.1f} %"
    title = (f"The convolutions of one training step of {args.config} variant {args.variant} (batch {batch}, "
             f"{harness.parameters_line(base)}, size {args.size}), alone, forward and backward")
    return harness.print_table(title, rows, "images/s", device, args, extra)


def parser():
    """The command line of this benchmark."""
    p = harness.arguments(__doc__, variant="cbdm", blocks=5, calls=5)
    p.set_defaults(no_compile=True)  # bare convolutions: nothing to compile
    return p


if __name__ == "__main__":
    run(parser().parse_args())
