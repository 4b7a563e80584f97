"""Reverse-process samplers: ancestral (DDPM) and DDIM, with classifier-free guidance.

Every image owns a random stream seeded by its own seed, used for its starting noise and for
every noise draw after it, so an image depends only on its seed and label, never on which
batch it was drawn in.
"""
from __future__ import annotations

import torch

from .diffusion import NoiseSchedule, gather, guided_eps, posterior_mean, predict_x0


class PerImageNoise:
    """Standard normal draws from one generator per image."""

    def __init__(self, seeds, shape: tuple[int, ...], device):
        self.shape = shape
        self.device = device
        self.generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds]

    def draw(self) -> torch.Tensor:
        """One standard-normal draw per image, each from its own seeded generator."""
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device)
                            for g in self.generators])


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """`steps` timesteps from T-1 down to 0, evenly spaced."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_timesteps}, got {steps}")
    return torch.linspace(num_timesteps - 1, 0, steps).round().long().unique_consecutive().tolist()


@torch.no_grad()
def sample_ancestral(model, schedule: NoiseSchedule, labels: torch.Tensor, seeds, *,
                     guidance: float, variance: str = "fixedlarge", batched_guidance: bool = True,
                     progress=None) -> torch.Tensor:
    """DDPM ancestral sampling over all T steps; returns images in [-1, 1]."""
    noise = PerImageNoise(seeds, image_shape(model), labels.device)
    sigma = schedule.reverse_variance(variance).sqrt()
    x = noise.draw()
    for step in reversed(range(schedule.num_timesteps)):
        t = torch.full_like(labels, step)
        eps = guided_eps(model, x, t, labels, model.null_label, guidance, batched_guidance)
        mean = posterior_mean(schedule, predict_x0(schedule, x, t, eps), x, t)
        x = mean + gather(sigma, t, x.ndim) * noise.draw() if step > 0 else mean
        if progress is not None:
            progress.update(1)
    return x.clamp(-1, 1)


@torch.no_grad()
def sample_ddim(model, schedule: NoiseSchedule, labels: torch.Tensor, seeds, *, guidance: float,
                steps: int, eta: float = 0.0, batched_guidance: bool = True,
                progress=None) -> torch.Tensor:
    """DDIM (Song et al. 2021) over `steps` timesteps; eta = 0 is deterministic."""
    noise = PerImageNoise(seeds, image_shape(model), labels.device)
    abar = schedule.alphas_bar
    timesteps = ddim_timesteps(schedule.num_timesteps, steps)
    x = noise.draw()
    for i, step in enumerate(timesteps):
        t = torch.full_like(labels, step)
        eps = guided_eps(model, x, t, labels, model.null_label, guidance, batched_guidance)
        x0 = predict_x0(schedule, x, t, eps)
        abar_t = abar[step].float()
        abar_prev = abar[timesteps[i + 1]].float() if i + 1 < len(timesteps) else abar.new_ones(()).float()
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).sqrt() * eps
        if eta > 0 and i + 1 < len(timesteps):
            x = x + sigma * noise.draw()
        if progress is not None:
            progress.update(1)
    return x.clamp(-1, 1)


def image_shape(model) -> tuple[int, int, int]:
    cfg = model.cfg
    return (cfg.image_channels, cfg.image_size, cfg.image_size)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 [0, 255]."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
