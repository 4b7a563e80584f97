"""Gaussian diffusion math (Ho et al. 2020; DDIM, Song et al. 2021), in one place.

Everything here is a pure function of a `NoiseSchedule` and tensors: the forward process,
the reverse-step Gaussians, the KL weight used by the overlap loss, and classifier-free
guidance. Timesteps `t` are 0-based indices into the schedule (t = 0 is the first noising step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch


@dataclass(frozen=True)
class NoiseSchedule:
    """beta_t and the products derived from it, float64, all on one device."""
    betas: torch.Tensor
    alphas: torch.Tensor = field(init=False)
    alphas_bar: torch.Tensor = field(init=False)
    alphas_bar_prev: torch.Tensor = field(init=False)

    def __post_init__(self):
        alphas = 1.0 - self.betas
        alphas_bar = torch.cumprod(alphas, dim=0)
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alphas_bar", alphas_bar)
        object.__setattr__(self, "alphas_bar_prev", torch.cat([alphas_bar.new_ones(1), alphas_bar[:-1]]))

    @classmethod
    def linear(cls, num_timesteps: int, beta_start: float, beta_end: float) -> "NoiseSchedule":
        """The DDPM schedule: betas evenly spaced from beta_start to beta_end (float64)."""
        return cls(torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64))

    def to(self, device) -> "NoiseSchedule":
        """The same schedule on `device`."""
        return NoiseSchedule(self.betas.to(device))

    @property
    def num_timesteps(self) -> int:
        """The number of diffusion steps T."""
        return len(self.betas)

    @cached_property
    def kl_weight(self) -> torch.Tensor:
        """reverse_kl_weight for the 'fixedlarge' variance, computed once."""
        return reverse_kl_weight(self)

    @cached_property
    def kl_weight_raw(self) -> torch.Tensor:
        """The un-normalised lambda_t ('fixedlarge'), computed once."""
        return reverse_kl_weight(self, normalised=False)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """Variance of q(x_{t-1} | x_t, x_0)."""
        return self.betas * (1.0 - self.alphas_bar_prev) / (1.0 - self.alphas_bar)

    def reverse_variance(self, kind: str) -> torch.Tensor:
        """sigma_t^2 of p(x_{t-1} | x_t): 'fixedlarge' is beta_t with the t=0 entry replaced
        by the posterior variance at t=1 (so the last step is not pure noise); 'fixedsmall' is
        the posterior variance, clipped away from zero at t=0 the same way."""
        post = self.posterior_variance
        if kind == "fixedlarge":
            return torch.cat([post[1:2], self.betas[1:]])
        if kind == "fixedsmall":
            return torch.cat([post[1:2], post[1:]])
        raise ValueError(f"unknown reverse variance {kind!r}; use 'fixedlarge' or 'fixedsmall'")


def gather(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] as float32, shaped to broadcast against a [B, ...] tensor."""
    out = values[t].float()
    return out.reshape(len(t), *([1] * (ndim - 1)))


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    abar = schedule.alphas_bar
    return gather(abar.sqrt(), t, x0.ndim) * x0 + gather((1 - abar).sqrt(), t, x0.ndim) * noise


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor,
               eps: torch.Tensor) -> torch.Tensor:
    """The clean image implied by a noise prediction `eps` at x_t and t."""
    abar = schedule.alphas_bar
    return gather((1 / abar).sqrt(), t, x_t.ndim) * x_t - gather((1 / abar - 1).sqrt(), t, x_t.ndim) * eps


def posterior_mean(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """Mean of q(x_{t-1} | x_t, x_0)."""
    abar, abar_prev = schedule.alphas_bar, schedule.alphas_bar_prev
    coef_x0 = abar_prev.sqrt() * schedule.betas / (1 - abar)
    coef_xt = schedule.alphas.sqrt() * (1 - abar_prev) / (1 - abar)
    return gather(coef_x0, t, x_t.ndim) * x0 + gather(coef_xt, t, x_t.ndim) * x_t


def reverse_kl_weight(schedule: NoiseSchedule, variance: str = "fixedlarge",
                      normalised: bool = True) -> torch.Tensor:
    """lambda_t with KL[p(.|x_t,c_i) || p(.|x_t,c_j)] = lambda_t * ||eps_i - eps_j||^2 (summed
    over pixels), normalised to mean 1 over t unless `normalised` is False.

    Both reverse transitions are Gaussians with variance sigma_t^2 whose means differ by
    beta_t / (sqrt(alpha_t) sqrt(1 - abar_t)) * (eps_i - eps_j), hence
    lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)). The normalisation removes the
    per-pixel vs. summed dimension constant, so only the shape over t matters.
    """
    sigma2 = schedule.reverse_variance(variance)
    lam = schedule.betas ** 2 / (2 * sigma2 * schedule.alphas * (1 - schedule.alphas_bar))
    return lam / lam.mean() if normalised else lam


def guided_eps(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, null_label: int,
               guidance: float, batched: bool = True) -> torch.Tensor:
    """Classifier-free guidance: eps(x,y) + w * (eps(x,y) - eps(x,null)).

    `batched` evaluates both branches in one forward of twice the batch; the result is the
    same as two forwards (up to float reassociation inside the network).
    """
    if guidance == 0:
        return model(x, t, y).float()
    null = torch.full_like(y, null_label)
    if batched:
        eps_cond, eps_null = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null])).float().chunk(2)
    else:
        eps_cond, eps_null = model(x, t, y).float(), model(x, t, null).float()
    return eps_cond + guidance * (eps_cond - eps_null)
