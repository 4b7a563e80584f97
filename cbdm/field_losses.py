"""The field's long-tailed diffusion losses, re-implemented from their papers and public code:

- t2h:   T2H / oriented calibration (Zhang et al., ICLR 2024; MediaBrain-SJTU/OC_LT): the
         regression target is transferred to another batch image drawn from the batch posterior,
         gated by class frequency.
- coral: CORAL (NeurIPS 2025; SankarLab/coral-lt-diffusion): a supervised contrastive loss on a
         projection head over the pooled middle-block output.
- ccua:  contrastive + conditional-unconditional alignment losses (Chen et al., arXiv 2507.09052;
         C-Fun/Contrastive-Conditional-Unconditional-Alignment-for-Long-tailed-Diffusion-Model).
- cm:    capacity manipulation (ICLR 2026; Feng-Hong/ImbDiff-CM): a low-rank branch kept close to
         the base path for head classes and pushed away from it for tail classes, on T2H's target.

Each is one registered term that declares what it needs (cbdm.losses.Needs); README, "Methods",
says what each changes, what it costs and which values are ours.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .losses import Needs, NoisedBatch, Option, pixel_mean, register_loss

T2H_GATES = ("t2h", "any", "none")


# --- T2H: the batch-posterior target transfer -----------------------------------------------

def t2h_posterior(batch: NoisedBatch) -> torch.Tensor:
    """w_ij = softmax_j(-||c_i - x0_j||^2 / (2 sigma_t^2)), [B, B]: the posterior that batch image
    j produced x_t,i (i included), with c_i = x_t,i / sqrt(abar_t), sigma_t^2 = 1 / abar_t - 1."""
    abar = batch.schedule.alphas_bar[batch.t].to(batch.x_t.dtype)
    c = batch.x_t.flatten(1) / abar.sqrt()[:, None]
    sigma2 = 1.0 / abar - 1.0
    # The pairwise kernel without the B x B x D difference tensor, and without the |a|^2 + |b|^2 -
    # 2ab shortcut, which cancels badly at small t where the softmax is sharpest.
    distance2 = torch.cdist(c[None], batch.x0.flatten(1)[None],
                            compute_mode="donot_use_mm_for_euclid_dist")[0] ** 2
    return torch.softmax(-distance2 / (2 * sigma2[:, None]), dim=1)


def t2h_target(batch: NoisedBatch, generator: torch.Generator, *, gate: str) -> torch.Tensor:
    """eps'_i = (x_t,i - sqrt(abar_t) x0_j) / sqrt(1 - abar_t), j drawn from the batch posterior;
    gate 't2h' keeps j only if pi(y_j) >= pi(y_i) (else j = i), 'any' keeps every j, 'none'
    keeps j = i (the plain DDPM target)."""
    if gate not in T2H_GATES:
        raise ValueError(f"unknown T2H gate {gate!r}; use one of {', '.join(T2H_GATES)}")
    rows = torch.arange(len(batch.t), device=batch.t.device)
    if gate == "none":
        return batch.noise
    j = torch.multinomial(t2h_posterior(batch), 1, generator=generator)[:, 0]
    if gate == "t2h":
        prior = batch.class_prior
        j = torch.where(prior[batch.y[j]] >= prior[batch.y], j, rows)
    abar = batch.schedule.alphas_bar[batch.t].to(batch.x_t.dtype)[:, None, None, None]
    return (batch.x_t - abar.sqrt() * batch.x0[j]) / (1 - abar).sqrt()


@register_loss("t2h", defaults={"gate": "t2h"}, options={"gate": Option(str, choices=T2H_GATES)},
               conditional_only=False, needs=Needs(target=t2h_target))
def t2h_mse(batch: NoisedBatch, eps: torch.Tensor, eps_alt: None, *, target: torch.Tensor) -> torch.Tensor:
    """T2H (Zhang et al. 2024): the DDPM error against the batch-posterior transferred target."""
    return pixel_mean((eps - target) ** 2)


# --- CORAL: supervised contrast on a projection of the middle block -------------------------

def supervised_contrastive(z: torch.Tensor, y: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor SupCon loss on cosine similarities of `z` [B, D], positives = the other members
    with the same label; (loss [B], has_positive [B]). Anchors without a positive get 0."""
    z = F.normalize(z.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (y[:, None] == y[None, :]) & ~self_mask
    count = positive.sum(dim=1)
    mean_log_prob = torch.where(positive, log_prob, 0.0).sum(dim=1) / count.clamp(min=1)
    return -mean_log_prob * (count > 0), count > 0


@register_loss("coral", defaults={"temperature": 0.12, "time_temperature": 0.8, "projection_dim": 128},
               # Temperatures divide logits and exponents: 0 gives inf, a negative one inverts them.
               options={"temperature": Option(float, above=0), "time_temperature": Option(float, above=0),
                        "projection_dim": Option(int, minimum=1)},
               needs=Needs(features=True, heads={"coral_projection": "projection_dim"}),
               weight=0.01, regularizer=True)  # weight: the paper's lambda on both CIFAR-LT sets (methods: "Methods")
def coral_supcon(batch: NoisedBatch, eps: torch.Tensor, eps_alt: None, *, features: dict, heads,
                 temperature: float, time_temperature: float) -> torch.Tensor:
    """CORAL: s_bar * SupCon on the projected, pooled middle block; s_bar = mean exp((1 - t/T) / tau_r).

    The mean is over anchors with a positive (each sample's value is scaled by B / their count)."""
    pooled = features["trained"].float().mean(dim=(-2, -1))
    loss, has_positive = supervised_contrastive(heads["coral_projection"](pooled), batch.y, temperature)
    s_bar = torch.exp((1 - batch.t.float() / batch.schedule.num_timesteps) / time_temperature).mean()
    return s_bar * loss * len(loss) / has_positive.sum().clamp(min=1)


# --- CCUA: unconditional contrast and conditional-unconditional alignment -------------------

def draw_null_labels(batch: NoisedBatch, generator: torch.Generator) -> torch.Tensor:
    """The null label for every sample: the unconditional branch."""
    return torch.full_like(batch.y, batch.null_label)


def self_infonce(h: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample InfoNCE with the query itself as positive and the other members as negatives,
    on L2-normalised flattened features: a repulsion among the batch's features, [B]."""
    z = F.normalize(h.flatten(1).float(), dim=1)
    return -torch.log_softmax(z @ z.T / temperature, dim=1).diagonal()


@register_loss("ccua", defaults={"alpha": 1.0, "gamma": 1.0, "temperature": 0.1},
               options={"alpha": Option(float, minimum=0), "gamma": Option(float, minimum=0),
                        "temperature": Option(float, above=0)},
               draw_labels=draw_null_labels, conditional_only=False, needs=Needs(features=True), regularizer=True)
def ccua(batch: NoisedBatch, eps: torch.Tensor, eps_alt: torch.Tensor, *, features: dict,
         conditional: torch.Tensor, alpha: float, gamma: float, temperature: float) -> torch.Tensor:
    """CCUA: w(t) [alpha InfoNCE(h_u) + gamma |eps_c - eps_u|^2], w = t / T; alignment only on
    samples trained with their label."""
    weight = batch.t.float() / batch.schedule.num_timesteps
    contrast = self_infonce(features["alt"][0], temperature)
    alignment = pixel_mean((eps - eps_alt[0]) ** 2) * conditional
    return weight * (alpha * contrast + gamma * alignment)


# --- CM: capacity manipulation with a low-rank branch ---------------------------------------

def cm_class_coefficients(class_prior: torch.Tensor, w_con: float, w_div: float) -> torch.Tensor:
    """c_y = w_con pi_y - w_div pi~_y, pi~ proportional to 1 / pi (normalised): positive (pull
    the two paths together) for head classes, negative (push them apart) for tail classes."""
    inverse = 1.0 / class_prior
    return w_con * class_prior - w_div * inverse / inverse.sum()


@register_loss("cm", defaults={"w_con": 1.0, "w_div": 0.2, "rank_ratio": 0.1, "gate": "t2h"},
               # rank_ratio 0 would build no branch: CM would silently train as T2H.
               options={"gate": Option(str, choices=T2H_GATES), "rank_ratio": Option(float, above=0, maximum=1),
                        "w_con": Option(float, minimum=0), "w_div": Option(float, minimum=0)},
               conditional_only=False,
               needs=Needs(target=t2h_target, base_pass=True, lowrank_ratio="rank_ratio"))
def capacity_manipulation(batch: NoisedBatch, eps: torch.Tensor, eps_alt: None, *, target: torch.Tensor,
                          eps_base: torch.Tensor, w_con: float, w_div: float) -> torch.Tensor:
    """CM: |h1 - eps'|^2 + K c_y |h2 - h1|^2, h1 with the low-rank branch, h2 without, eps' the
    T2H target ('gate': 'none' gives the plain target)."""
    coefficient = cm_class_coefficients(batch.class_prior, w_con, w_div)[batch.y]
    return pixel_mean((eps - target) ** 2) + batch.num_classes * coefficient * pixel_mean((eps_base - eps) ** 2)
