"""Where and how the networks run: the device, and the switchable pieces of the fast path,
shared by training, sampling, feature extraction and the benchmarks.

Each is off by default in the schema, so the reference path (fp32, eager, contiguous layout,
plain Adam, a Python-loop EMA) stays one config away; benchmarks/ measures the difference.
"""
from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str) -> torch.device:
    """The config's `device`: 'auto' (a GPU if torch sees one), 'cuda' or 'cpu'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no GPU; set device: auto or cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """bfloat16 autocast for the network's forward pass, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; use 'fp32' or 'bf16'")


def prepare_network(model: torch.nn.Module, *, channels_last: bool = False, compile: bool = False):
    """The callable to run the network through: in channels-last layout and/or compiled. The
    parameters stay those of `model` (state dicts, EMA and checkpoints use `model`)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], decay: float, mode: str) -> None:
    """ema <- decay * ema + (1 - decay) * param."""
    if mode == "foreach":
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    elif mode == "loop":
        for target, source in zip(ema_params, params):
            target.copy_(target * decay + source * (1.0 - decay))
    else:
        raise ValueError(f"unknown EMA update {mode!r}; use 'foreach' or 'loop'")
