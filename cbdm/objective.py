"""A variant's training objective: noise a batch, drop labels for guidance, run the network
under every label set the loss terms ask for, and weigh the terms together."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .diffusion import NoiseSchedule, q_sample
from .losses import LossTerm, NoisedBatch, get_loss


@dataclass(frozen=True)
class WeightedTerm:
    loss: LossTerm
    weight: float
    options: dict


class Objective:
    """loss, parts = objective(model, x0, y, generator, coin_generator, shard)

    `generator` (on the data's device) draws timesteps, noise and alternative labels;
    `coin_generator` (on the CPU) draws the label-drop coin, so deciding whether a batch is
    conditional never waits for the device. `shard = (rank, world)`: every randomness is drawn
    for the whole batch, then only this process's equal share of it is evaluated, so that
    `world` data-parallel processes, with gradients averaged, take the step one process would.
    """

    def __init__(self, terms: list[dict], schedule: NoiseSchedule, class_prior: torch.Tensor,
                 null_label: int, label_drop: dict, batched_forward: bool):
        self.terms = [WeightedTerm(get_loss(t["name"]), float(t["weight"]), t["options"]) for t in terms]
        self.schedule = schedule
        self.class_prior = class_prior
        self.null_label = null_label
        self.drop_policy = label_drop["policy"]
        self.drop_probability = label_drop["probability"]
        self.batched_forward = batched_forward

    def __call__(self, model, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                 coin_generator: torch.Generator, shard: tuple[int, int] = (0, 1),
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = len(x0)
        t = torch.randint(self.schedule.num_timesteps, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        batch = NoisedBatch(x0, q_sample(self.schedule, x0, t, noise), t, y, noise,
                            self.schedule, self.class_prior)

        conditional = self._conditional_mask(b, x0.device, generator, coin_generator)
        if conditional is True:
            trained_labels = y
        elif conditional is False:
            trained_labels = torch.full_like(y, self.null_label)
        else:
            trained_labels = torch.where(conditional, y, self.null_label)

        # Static shapes: every term's label sets are evaluated whatever the label-drop coin says,
        # and the coin masks the conditional-only terms below, so the network sees the same
        # tensor shapes every step and torch.compile compiles once.
        alt_labels = {i: term.loss.labels(batch, generator, term.options)
                      for i, term in enumerate(self.terms) if term.loss.draw_labels is not None}

        rank, world = shard
        mine = slice(rank * b // world, (rank + 1) * b // world)
        batch, trained_labels = batch.select(mine), trained_labels[mine]
        alt_labels = {i: labels[:, mine] for i, labels in alt_labels.items()}
        if not isinstance(conditional, bool):
            conditional = conditional[mine]
        label_sets = [trained_labels] + [labels for ls in alt_labels.values() for labels in ls]
        predictions = self._predict(model, batch.x_t, batch.t, label_sets)
        eps, rest = predictions[0], predictions[1:]

        total = x0.new_zeros(())
        parts = {}
        for i, term in enumerate(self.terms):
            eps_alt = None
            if i in alt_labels:
                k = len(alt_labels[i])
                eps_alt, rest = torch.stack(rest[:k]), rest[k:]
            per_sample = term.loss(batch, eps, eps_alt, term.options)
            if term.loss.conditional_only and conditional is not True:
                per_sample = per_sample * conditional
            value = term.weight * per_sample.mean()
            parts[term.loss.name] = value.detach()
            total = total + value
        return total, parts

    def _conditional_mask(self, b, device, generator, coin_generator):
        """True (all conditional), False (whole batch dropped), or a bool mask per sample."""
        if self.drop_probability == 0:
            return True
        if self.drop_policy == "batch":
            return bool(torch.rand((), generator=coin_generator) >= self.drop_probability)
        return torch.rand(b, device=device, generator=generator) >= self.drop_probability

    def _predict(self, model, x_t, t, label_sets):
        """Noise predictions under each label set, in fp32 whatever precision the network runs in."""
        if self.batched_forward and len(label_sets) > 1:
            n = len(label_sets)
            out = model(x_t.repeat(n, 1, 1, 1), t.repeat(n), torch.cat(label_sets)).float()
            return list(out.chunk(n))
        return [model(x_t, t, labels).float() for labels in label_sets]
