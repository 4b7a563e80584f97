"""The class-conditional UNet of the DDPM family (Ho et al. 2020, as configured by pytorch-ddpm).

The layout follows the published architecture: a sinusoidal time embedding, residual blocks
with GroupNorm and SiLU, self-attention at chosen resolutions, nearest-neighbour upsampling.
The class label enters as a learned embedding added to the time embedding. The "null" label
`num_classes` of classifier-free guidance either skips the embedding (`null_label: zero`, the
reference code's y=None) or is an extra learned row (`learned`). `init: reference` re-initialises
the weights as the reference code does (`reference_init`); `pytorch` keeps PyTorch's defaults.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .lowrank import attach_lowrank


@dataclass(frozen=True)
class UNetConfig:
    """The UNet's architecture: what a model file stores to rebuild the network."""

    image_channels: int
    image_size: int
    num_classes: int
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attention_levels: tuple[int, ...] = (1,)
    num_res_blocks: int = 2
    dropout: float = 0.1
    norm_groups: int = 32
    num_timesteps: int = 1000
    # The defaults are what model files written before these fields existed were trained with,
    # so that such files load unchanged; the config schema's defaults are the reference's.
    init: str = "pytorch"
    null_label: str = "learned"
    # Extras a loss asks for (cbdm.losses.Needs): linear heads on the pooled middle-block output,
    # as (name, output width) pairs, and CM's low-rank branch (rank ratio; 0 = none).
    heads: tuple[tuple[str, int], ...] = ()
    lowrank_ratio: float = 0.0

    def __post_init__(self):
        if self.init not in ("reference", "pytorch") or self.null_label not in ("zero", "learned"):
            raise ValueError(f"init={self.init!r} / null_label={self.null_label!r}: use init "
                             f"'reference' or 'pytorch' and null_label 'zero' or 'learned'")
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "heads", tuple((str(n), int(d)) for n, d in self.heads))
        object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {len(self.channel_mult)} levels")
        widths = {self.base_channels * m for m in self.channel_mult}
        if any(w % self.norm_groups for w in widths):
            raise ValueError(
                f"norm_groups={self.norm_groups} must divide every level width {sorted(widths)}")
        downsamples = len(self.channel_mult) - 1
        if self.image_size % (2 ** downsamples):
            raise ValueError(
                f"image_size={self.image_size} is not divisible by 2**{downsamples}: "
                f"use fewer channel_mult levels")

    def to_dict(self) -> dict:
        """The config as plain JSON-ready types (lists, not tuples)."""
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        d["heads"] = [list(head) for head in self.heads]
        return d


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style position encoding of integer timesteps: [sin | cos] interleaved."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) * 2 / dim)
    angles = timesteps.float()[:, None] * freqs[None, :]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(len(timesteps), dim)


def group_norm_in_layout(x: torch.Tensor, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                         eps: float) -> torch.Tensor:
    """F.group_norm of `x` [B, C, H, W], written in `x`'s memory layout (channels-last in,
    channels-last out). Computed in fp32 at least, like PyTorch's kernels; returned in fp32 under
    a GPU's autocast, which lists GroupNorm among its fp32 operations, else in `x`'s dtype."""
    upcast = x.device.type == "cuda" and torch.is_autocast_enabled("cuda")
    grouped = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(1, (groups, -1))  # a view in either layout
    var, mean = torch.var_mean(grouped, dim=(2, 3, 4), unbiased=False, keepdim=True)
    out = ((grouped - mean) * torch.rsqrt(var + eps)).flatten(1, 2)
    if weight is not None:
        out = out * weight[:, None, None] + bias[:, None, None]
    return out.to(torch.float32 if upcast else x.dtype)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that can keep a channels-last input channels-last (`keep_layout`, set by
    cbdm.acceleration.prepare_network from `training.group_norm`). PyTorch's GPU kernel writes
    its output contiguous whatever its input's layout, so in a channels-last network nearly every
    convolution, which follows a GroupNorm, gets its input in the other layout than its weights,
    and cuDNN converts it, forward and backward. Same parameters and state dict as nn.GroupNorm."""

    keep_layout = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised `x`: in `x`'s layout where `keep_layout` and `x` is channels-last."""
        if (self.keep_layout and x.dim() == 4 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)):
            return group_norm_in_layout(x, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time/label embedding added in between, and optional self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int,
                 attention: bool):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attention = SelfAttention(out_ch, groups) if attention else nn.Identity()
        # A near-zero last conv makes every block start close to the identity.
        nn.init.xavier_uniform_(self.conv2.weight, gain=1e-5)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The block's output for features `x` and embedding `emb`."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.attention(h + self.skip(x))


class SelfAttention(nn.Module):
    """Single-head self-attention over the spatial positions, as a residual update."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.xavier_uniform_(self.out.weight, gain=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x plus the attention update."""
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """A stride-2 3x3 conv halving the resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x, emb):
        """`x` at half resolution (`emb` is unused; the UNet passes it to every layer)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by 2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, emb):
        """`x` at twice the resolution (`emb` is unused; the UNet passes it to every layer)."""
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """eps_theta(x_t, t, y): predicts the noise in x_t; y == num_classes means "no label"."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, groups, emb_dim = cfg.base_channels, cfg.norm_groups, 4 * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        rows = cfg.num_classes + (cfg.null_label == "learned")
        self.label_embedding = nn.Embedding(rows, emb_dim)
        self.stem = nn.Conv2d(cfg.image_channels, ch, 3, padding=1)

        def block(cin, cout, level):
            return ResidualBlock(cin, cout, emb_dim, cfg.dropout, groups,
                                 attention=level in cfg.attention_levels)

        self.down = nn.ModuleList()
        skip_widths, width = [ch], ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(block(width, ch * mult, level))
                width = ch * mult
                skip_widths.append(width)
            if level != len(cfg.channel_mult) - 1:
                self.down.append(Downsample(width))
                skip_widths.append(width)

        self.middle = nn.ModuleList([
            ResidualBlock(width, width, emb_dim, cfg.dropout, groups, attention=True),
            ResidualBlock(width, width, emb_dim, cfg.dropout, groups, attention=False),
        ])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(block(skip_widths.pop() + width, ch * mult, level))
                width = ch * mult
            if level != 0:
                self.up.append(Upsample(width))

        self.head = nn.Sequential(GroupNorm(groups, width), nn.SiLU(),
                                  nn.Conv2d(width, cfg.image_channels, 3, padding=1))
        nn.init.xavier_uniform_(self.head[-1].weight, gain=1e-5)
        nn.init.zeros_(self.head[-1].bias)
        if cfg.init == "reference":
            reference_init(self)
        self._add_loss_extras(cfg, middle_width=ch * cfg.channel_mult[-1])

    def _add_loss_extras(self, cfg: UNetConfig, middle_width: int) -> None:
        """Trainable heads on the pooled middle-block output (sampling never calls them) and CM's
        low-rank branch on the up path's residual convs and up-sampling convs."""
        if cfg.heads:
            self.heads = nn.ModuleDict({name: nn.Linear(middle_width, dim) for name, dim in cfg.heads})
        if cfg.lowrank_ratio > 0:
            sites = [(layer, name) for layer in self.up for name in ("conv1", "conv2", "conv")
                     if isinstance(getattr(layer, name, None), nn.Conv2d)]
            attach_lowrank(sites, cfg.lowrank_ratio)

    @property
    def null_label(self) -> int:
        """The label that means "no label" (classifier-free guidance): num_classes."""
        return self.cfg.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The predicted noise eps_theta(x_t, t, y)."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.cfg.base_channels))
        if self.cfg.null_label == "learned":
            emb = emb + self.label_embedding(y)
        else:  # the null label adds nothing (the reference's y=None)
            keep = (y != self.null_label)[:, None].to(emb.dtype)
            emb = emb + self.label_embedding(y.clamp(max=self.cfg.num_classes - 1)) * keep
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResidualBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, emb)
        return self.head(h)


def reference_init(model: UNet) -> None:
    """The reference code's initialisation: xavier-uniform weights and zero biases on every conv
    and linear layer (q, k and v each as its own layer: our qkv conv holds them as three
    C-channel slices), gain 1e-5 on the last conv of every residual block, the attention output
    projection and the head's last conv. Embeddings and norms keep their defaults."""
    near_zero, qkv = {id(model.head[-1])}, set()
    for module in model.modules():
        if isinstance(module, ResidualBlock):
            near_zero.add(id(module.conv2))
        elif isinstance(module, SelfAttention):
            near_zero.add(id(module.out))
            qkv.add(id(module.qkv))
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        gain = 1e-5 if id(module) in near_zero else 1.0
        slices = 3 if id(module) in qkv else 1
        with torch.no_grad():
            for part in module.weight.chunk(slices, dim=0):
                part.copy_(nn.init.xavier_uniform_(torch.empty_like(part), gain=gain))
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """The number of parameters (trainable or not) of a module."""
    return sum(p.numel() for p in model.parameters())


def build_unet(network: dict, *, image_channels: int, image_size: int, num_classes: int,
               num_timesteps: int, **extras) -> UNet:
    """Build a UNet from the `network` section of a config; `extras` are what the variant's
    losses ask for (heads, lowrank_ratio: cbdm.objective.network_extras)."""
    return UNet(UNetConfig(image_channels=image_channels, image_size=image_size,
                           num_classes=num_classes, num_timesteps=num_timesteps, **network, **extras))
