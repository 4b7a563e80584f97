"""CM's switchable low-rank branch (capacity manipulation, ICLR 2026): W x + B(A(x)).

A wraps a convolution with a rank-r update of the same kernel: A is a conv with the wrapped
conv's kernel, stride and padding from c_in to r channels, B a 1x1 conv from r to c_out. B
starts at zero, so the branch starts with no effect; r = max(floor(ratio * min(c_in, c_out)), 1).
The branch is on by default (sampling uses it); `lowrank_disabled` switches it off for CM's base
path. The network decides which convs carry it (networks.UNet: the up path's residual convs and
up-sampling convs).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


def lowrank_rank(ratio: float, c_in: int, c_out: int) -> int:
    """The branch's rank r for a conv from c_in to c_out channels."""
    return max(math.floor(ratio * min(c_in, c_out)), 1)


class LowRankConv2d(nn.Module):
    """A conv plus a switchable, zero-initialised low-rank update of its weight."""

    def __init__(self, base: nn.Conv2d, ratio: float):
        super().__init__()
        rank = lowrank_rank(ratio, base.in_channels, base.out_channels)
        self.base = base
        self.lowrank_a = nn.Conv2d(base.in_channels, rank, base.kernel_size, stride=base.stride,
                                   padding=base.padding, bias=False)
        self.lowrank_b = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.zeros_(self.lowrank_b.weight)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x, plus B(A(x)) while the branch is enabled."""
        out = self.base(x)
        if self.enabled:
            out = out + self.lowrank_b(self.lowrank_a(x))
        return out


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
