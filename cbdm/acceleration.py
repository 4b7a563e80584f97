"""Where and how the networks run: the device, and the switchable pieces of the fast path,
shared by training, sampling, feature extraction and the benchmarks.

The schema's defaults are the reference path (fp32, eager, contiguous layout, plain Adam); the
paper configs switch the fast path on, and config/overrides/reference-path.yaml switches it off
again (the reference protocol). benchmarks/ measures the difference.
"""
from __future__ import annotations

import contextlib

import torch

from .networks import GroupNorm


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


def bf16_is_native(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 in hardware. An x86 CPU without AVX-512 BF16 or AMX
    emulates it, and there the default network's training step ran ~10x slower under bf16 autocast
    than in fp32 (benchmarks/README.md, 'The default suite's time'). Another CPU (ARM): True, as
    nothing here can tell."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    avx2, *bf16 = [getattr(torch.cpu, name, None) for name in
                   ("_is_avx2_supported", "_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in (avx2, *bf16) or not avx2():  # a torch that cannot tell, or not x86
        return True
    return any(probe() for probe in bf16)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


GROUP_NORMS = ("native", "channels_last")


def prepare_network(model: torch.nn.Module, *, channels_last: bool = False, group_norm: str = "native",
                    compile: bool = False, compile_mode: str = "default"):
    """The callable to run the network through: in channels-last layout and/or compiled. The
    parameters stay those of `model` (state dicts, EMA and checkpoints use `model`). `group_norm`
    'channels_last' has the network's GroupNorms (cbdm.networks.GroupNorm) keep a channels-last
    input's layout instead of PyTorch's kernel, which writes contiguous output on a GPU."""
    if group_norm not in GROUP_NORMS:
        raise ValueError(f"unknown group_norm {group_norm!r}; use one of {', '.join(GROUP_NORMS)}")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for module in model.modules():
        if isinstance(module, GroupNorm):
            module.keep_layout = group_norm == "channels_last"
    return compile_network(model, compile_mode) if compile else model


def compile_network(network, mode: str = "default"):
    """torch.compile in one of COMPILE_MODES: 'reduce-overhead' replays CUDA graphs, which pays
    where a step is a few milliseconds of GPU work and launch-bound (training at batch 48-64);
    'max-autotune' also searches kernel configurations (much longer compile)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile_mode {mode!r}; use one of {', '.join(COMPILE_MODES)}")
    return torch.compile(network, mode=None if mode == "default" else mode)


def configure_backends(*, tf32: bool | str, cudnn_benchmark: bool) -> None:
    """Process-wide GPU math switches: TF32 tensor cores for what stays fp32 under bf16 autocast
    (`tf32`: True for matrix products and convolutions; 'convolutions' for cuDNN's convolutions
    only, which is PyTorch's default and so what the reference code, setting no flag, runs; False
    for neither, bit-for-bit fp32), and cuDNN's per-shape algorithm search. Both trade bit-for-bit
    reproducibility across machines for speed; on a CPU they change nothing. The switches are
    global, so code that runs several settings in one process (the benchmarks' two paths) must set
    them before each call, not once."""
    if not (isinstance(tf32, bool) or tf32 == "convolutions"):
        raise ValueError(f"unknown tf32 setting {tf32!r}; use true, false or 'convolutions'")
    torch.backends.cuda.matmul.allow_tf32 = tf32 is True
    torch.backends.cudnn.allow_tf32 = tf32 in (True, "convolutions")
    torch.backends.cudnn.benchmark = cudnn_benchmark


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`x` in channels-last memory layout where `channels_last`, else unchanged."""
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
