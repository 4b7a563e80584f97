"""CM's switchable low-rank branch (capacity manipulation, ICLR 2026): W + BA on a conv's weight.

As CM's code builds it (loralib's convolution LoRA): for a k x k conv from c_in to c_out
channels, A is an (r k) x (c_in k) matrix and B a (c_out k) x (r k) one, and B A, reshaped to the
kernel's [c_out, c_in, k, k], is added to the kernel; r = max(floor(ratio * min(c_in, c_out)), 1).
B starts at zero, so the branch starts with no effect; A starts as CM's does (Kaiming normal,
a = sqrt(5)). The branch is on by default (sampling uses it); `lowrank_disabled` switches it off
for CM's base path. The network decides which convs carry it (networks.UNet: the up path's
residual convs and up-sampling convs).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn import functional as F


def lowrank_rank(ratio: float, c_in: int, c_out: int) -> int:
    """The branch's rank r for a conv from c_in to c_out channels."""
    return max(math.floor(ratio * min(c_in, c_out)), 1)


class LowRankConv2d(nn.Module):
    """A conv plus a switchable, zero-initialised low-rank update of its weight."""

    def __init__(self, base: nn.Conv2d, ratio: float):
        super().__init__()
        k = base.kernel_size[0]
        if base.groups != 1 or base.kernel_size != (k, k):
            raise ValueError(f"the low-rank branch takes square, ungrouped convs, not {base}")
        rank = lowrank_rank(ratio, base.in_channels, base.out_channels)
        self.base = base
        self.lowrank_a = nn.Parameter(torch.empty(rank * k, base.in_channels * k))
        self.lowrank_b = nn.Parameter(torch.zeros(base.out_channels * k, rank * k))
        nn.init.kaiming_normal_(self.lowrank_a, a=math.sqrt(5))
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv with kernel W, or W + BA while the branch is enabled."""
        if not self.enabled:
            return self.base(x)
        weight = self.base.weight + (self.lowrank_b @ self.lowrank_a).view(self.base.weight.shape)
        return F.conv2d(x, weight, self.base.bias, self.base.stride, self.base.padding, self.base.dilation)


def attach_lowrank(sites: list[tuple[nn.Module, str]], ratio: float) -> None:
    """Replace `getattr(parent, name)` (a Conv2d) with its low-rank-branched wrapper, in place."""
    for parent, name in sites:
        setattr(parent, name, LowRankConv2d(getattr(parent, name), ratio))


def lowrank_modules(model: nn.Module) -> list[LowRankConv2d]:
    """Every low-rank-branched conv of `model`, in module order."""
    return [m for m in model.modules() if isinstance(m, LowRankConv2d)]


@contextlib.contextmanager
def lowrank_disabled(model: nn.Module, branches: list[LowRankConv2d] | None = None):
    """Within the block, every low-rank branch of `model` is off (the base path). A caller that
    switches them every step passes the `branches` it collected once (walking the modules
    each step is waste)."""
    branches = lowrank_modules(model) if branches is None else branches
    for branch in branches:
        branch.enabled = False
    try:
        yield
    finally:
        for branch in branches:
            branch.enabled = True
