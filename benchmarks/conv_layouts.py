"""On a GPU, which convolutions of the channels-last network get their input in another memory
layout than their channels-last weights, which cuDNN then converts (an unfused copy kernel per
convolution, forward and again in the backward pass, which gets the same saved inputs): with
PyTorch's GroupNorm, whose GPU kernel writes contiguous output, and with the layout-keeping one
(training.group_norm: channels_last, cbdm.networks.GroupNorm).

No GPU needed: a fake CUDA device (torch's FakeTensorMode) gives the output layouts of PyTorch's
GPU kernels, under a GPU's bf16 autocast, with cuDNN forced as the convolution backend (a real
GPU picks it for these convolutions; a fake device that sees no GPU would not). This is the eager
graph, which AOT autograd hands to inductor: whether the compiled step still copies is for
profile_train.py to show on a GPU.

    python benchmarks/conv_layouts.py              # the paper UNet
    python benchmarks/conv_layouts.py --size ci
"""
from __future__ import annotations

import argparse
import contextlib

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from cbdm.acceleration import GROUP_NORMS, prepare_network
from cbdm.networks import GroupNorm

import harness


@contextlib.contextmanager
def cudnn_on_fake_gpu():
    """cuDNN as the convolution backend of (fake) CUDA tensors, as on a real GPU."""
    select = torch._C._select_conv_backend

    def cudnn(x, weight, *args, **kwargs):
        if x.device.type == "cuda" and x.dim() == 4:
            return torch._C._ConvBackend.Cudnn
        return select(x, weight, *args, **kwargs)
    torch._C._select_conv_backend = cudnn
    try:
        yield
    finally:
        torch._C._select_conv_backend = select


@contextlib.contextmanager
def gpu_autocast():
    """A GPU's bf16 autocast (torch.autocast refuses "cuda" where torch sees no GPU; these are the
    switches it sets)."""
    dtype, enabled = torch.get_autocast_dtype("cuda"), torch.is_autocast_enabled("cuda")
    torch.set_autocast_dtype("cuda", torch.bfloat16)
    torch.set_autocast_enabled("cuda", True)
    try:
        yield
    finally:
        torch.set_autocast_enabled("cuda", enabled)
        torch.set_autocast_dtype("cuda", dtype)


class ConvolutionInputs(TorchDispatchMode):
    """Records, per convolution call, whether its input is channels-last."""

    def __init__(self):
        super().__init__()
        self.channels_last: list[bool] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten.convolution:
            self.channels_last.append(args[0].is_contiguous(memory_format=torch.channels_last))
        return func(*args, **(kwargs or {}))


def forward_on_fake_gpu(model: torch.nn.Module, group_norm: str, batch: int = 2) -> tuple[list[bool], set]:
    """One forward pass of `model` (on the CPU; moved to a fake GPU here) in channels-last under
    bf16 autocast: whether each convolution's input is channels-last, and the dtypes the
    GroupNorms return."""
    channels, side = model.cfg.image_channels, model.cfg.image_size
    network = prepare_network(model, channels_last=True, group_norm=group_norm)
    dtypes = set()
    hooks = [m.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
             for m in model.modules() if isinstance(m, GroupNorm)]
    with cudnn_on_fake_gpu(), FakeTensorMode(allow_non_fake_inputs=True):
        network.to("cuda")
        x = torch.randn(batch, channels, side, side, device="cuda").contiguous(memory_format=torch.channels_last)
        t = torch.zeros(batch, dtype=torch.long, device="cuda")
        y = torch.zeros(batch, dtype=torch.long, device="cuda")
        with gpu_autocast(), ConvolutionInputs() as log:
            network(x, t, y)
    for hook in hooks:
        hook.remove()
    return log.channels_last, dtypes


def run(args) -> dict:
    """Count, for each group_norm setting, the convolutions whose input is not channels-last."""
    config, _ = harness.variant_settings(args.config, args.variant, reference=False)
    figures = {}
    print(f"Convolution inputs in one forward pass of {args.config}'s UNet (size {args.size}) in channels-last "
          f"under bf16 autocast, on a fake CUDA device with cuDNN")
    print(f"  {'group_norm':<14} {'convolutions':>12} {'input not channels-last':>24}  GroupNorm output")
    for group_norm in GROUP_NORMS:
        seen, dtypes = forward_on_fake_gpu(harness.build_model(config, args.size, "cpu"), group_norm)
        figures[group_norm] = {"convolutions": len(seen), "not_channels_last": seen.count(False),
                               "group_norm_dtypes": sorted(str(d) for d in dtypes)}
        print(f"  {group_norm:<14} {len(seen):>12} {seen.count(False):>24}  "
              f"{', '.join(figures[group_norm]['group_norm_dtypes'])}")
    return figures


def parser():
    """The command line of this script."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(harness.PAPER_CONFIG))
    p.add_argument("--variant", default="cbdm")
    p.add_argument("--size", choices=["paper", "ci"], default="paper")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
