"""A variant's training objective: noise a batch, drop labels for guidance, run the network
under every label set the loss terms ask for, and weigh the terms together."""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass

import torch

from . import field_losses  # noqa: F401  (registers the field's losses)
from .diffusion import NoiseSchedule, q_sample
from .losses import LossTerm, NoisedBatch, get_loss
from .lowrank import lowrank_disabled, lowrank_modules


@dataclass(frozen=True)
class WeightedTerm:
    """A registered loss with its weight and resolved options."""

    loss: LossTerm
    weight: float
    options: dict


class Objective:
    """loss, parts = objective(model, x0, y, generator, coin_generator, shard)

    `generator` (on the data's device) draws timesteps, noise and alternative labels;
    `coin_generator` (on the CPU) draws the label-drop coin, so deciding whether a batch is
    conditional never waits for the device. `shard = (rank, world)`: every randomness is drawn
    for the whole batch, then only this process's equal share of it is evaluated, so that
    `world` data-parallel processes, with gradients averaged, take the step one process would
    (bar dropout: each process draws its own masks, cbdm.train.seed_dropout).

    `static_shapes` (for torch.compile) runs every term's passes whatever the label-drop coin
    says; without it (eager), a step whose whole batch is dropped skips the passes of the
    conditional-only terms, which that step multiplies by zero anyway.
    """

    def __init__(self, terms: list[dict], schedule: NoiseSchedule, class_prior: torch.Tensor,
                 null_label: int, label_drop: dict, batched_forward: bool, static_shapes: bool = True):
        self.terms = [WeightedTerm(get_loss(t["name"]), float(t["weight"]), t["options"]) for t in terms]
        self.schedule = schedule
        self.class_prior = class_prior
        self.null_label = null_label
        self.drop_policy = label_drop["policy"]
        self.drop_probability = label_drop["probability"]
        self.batched_forward = batched_forward
        self.static_shapes = static_shapes
        self.wants_features = any(term.loss.needs.features for term in self.terms)
        # Per network, built at its first step and reused: the middle-block hook (registering
        # one every step makes torch.compile guard on, and recompile for, a new hook) and the
        # low-rank branches (walking the modules every step is waste).
        self._captures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._branches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, model, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                 coin_generator: torch.Generator, shard: tuple[int, int] = (0, 1),
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b = len(x0)
        t = torch.randint(self.schedule.num_timesteps, (b,), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        batch = NoisedBatch(x0, q_sample(self.schedule, x0, t, noise), t, y, noise,
                            self.schedule, self.class_prior, self.null_label)

        conditional = self._conditional_mask(b, x0.device, generator, coin_generator)
        if conditional is True:
            trained_labels = y
        elif conditional is False:
            trained_labels = torch.full_like(y, self.null_label)
        else:
            trained_labels = torch.where(conditional, y, self.null_label)

        # Every term draws its labels and targets whatever the coin says (the random streams stay
        # the same); with static shapes every term's passes also run, and the coin masks the
        # conditional-only terms below, so torch.compile sees one shape and compiles once.
        alt_labels = {i: term.loss.labels(batch, generator, term.options)
                      for i, term in enumerate(self.terms) if term.loss.draw_labels is not None}
        targets = {i: term.loss.target(batch, generator, term.options)
                   for i, term in enumerate(self.terms) if term.loss.needs.target is not None}
        skipped = self._skipped_terms(conditional)
        alt_labels = {i: labels for i, labels in alt_labels.items() if i not in skipped}

        rank, world = shard
        mine = slice(rank * b // world, (rank + 1) * b // world)
        batch, trained_labels = batch.select(mine), trained_labels[mine]
        alt_labels = {i: labels[:, mine] for i, labels in alt_labels.items()}
        targets = {i: target[mine] for i, target in targets.items()}
        if not isinstance(conditional, bool):
            conditional = conditional[mine]
        label_sets = [trained_labels] + [labels for ls in alt_labels.values() for labels in ls]
        with self._capture(model) as captured:
            predictions = self._predict(model, batch.x_t, batch.t, label_sets)
        eps, rest = predictions[0], predictions[1:]
        shared = self._extras(model, self.terms, batch, trained_labels, conditional, captured, len(label_sets))

        total = x0.new_zeros(())
        parts = {}
        for i, term in enumerate(self.terms):
            if i in skipped:
                parts[term.loss.name] = x0.new_zeros(())
                continue
            eps_alt = None
            if i in alt_labels:
                k = len(alt_labels[i])
                eps_alt, rest = torch.stack(rest[:k]), rest[k:]
            extras = {**shared, "target": targets.get(i), "features": _term_features(shared, alt_labels, i)}
            per_sample = term.loss(batch, eps, eps_alt, term.options, **extras)
            if term.loss.conditional_only and conditional is not True:
                per_sample = per_sample * conditional
            value = term.weight * per_sample.mean()
            parts[term.loss.name] = value.detach()
            total = total + value
        return total, parts

    def _skipped_terms(self, conditional) -> set[int]:
        """The terms whose passes this step need not run: the conditional-only ones when the whole
        batch is dropped, on the eager path only, and not a term with trainable heads (skipping
        it would leave them without a gradient, which Adam treats unlike a zero one)."""
        if self.static_shapes or conditional is not False:
            return set()
        return {i for i, term in enumerate(self.terms) if term.loss.conditional_only and not term.loss.needs.heads}

    def _extras(self, model, terms, batch, trained_labels, conditional, captured, num_sets) -> dict:
        """What the terms' Needs ask for that all terms share: every pass's middle-block output,
        the heads, the base-path prediction, the per-sample conditional mask."""
        features = torch.cat(captured).chunk(num_sets) if captured else None
        base = None
        if any(term.loss.needs.base_pass for term in terms):
            inner = unwrap(model)
            if inner not in self._branches:
                self._branches[inner] = lowrank_modules(inner)
            with lowrank_disabled(inner, self._branches[inner]):
                base = model(batch.x_t, batch.t, trained_labels).float()
        mask = conditional if isinstance(conditional, torch.Tensor) else \
            torch.full_like(batch.t, float(conditional), dtype=torch.float32)
        return {"all_features": features, "heads": getattr(unwrap(model), "heads", None),
                "eps_base": base, "conditional": mask.float()}

    def _capture(self, model):
        """A block whose yielded list collects the middle block's outputs of the passes run
        within it (stays empty where no term needs features)."""
        if not self.wants_features:
            return contextlib.nullcontext([])
        inner = unwrap(model)
        if inner not in self._captures:
            self._captures[inner] = MiddleCapture(inner)
            weakref.finalize(self, self._captures[inner].handle.remove)  # the hook goes with the objective
        return self._captures[inner].collecting()

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


def _term_features(shared: dict, alt_labels: dict, index: int) -> dict | None:
    """Term `index`'s view of the middle-block outputs: its trained pass and its own alternative
    passes, [K, B, ...] (the label sets are laid out as in `Objective.__call__`)."""
    features = shared["all_features"]
    if features is None:
        return None
    start = 1 + sum(len(labels) for i, labels in alt_labels.items() if i < index)
    own = features[start:start + len(alt_labels[index])] if index in alt_labels else None
    return {"trained": features[0], "alt": torch.stack(own) if own else None}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The UNet inside a DistributedDataParallel and/or torch.compile wrapper."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            return model
        model = inner


class MiddleCapture:
    """A forward hook on the UNet's middle block, registered once and collecting only within
    `collecting()`, so the base pass and any later use of the network are not collected."""

    def __init__(self, model: torch.nn.Module):
        self.captured: list[torch.Tensor] = []
        self.active = False
        self.handle = unwrap(model).middle[-1].register_forward_hook(self._hook)

    def _hook(self, module, args, out) -> None:
        if self.active:
            self.captured.append(out)

    @contextlib.contextmanager
    def collecting(self):
        """Within the block, the list yielded collects the middle block's output at every
        forward call, in call order."""
        # One list, emptied here: compiled code then sees the same object, empty, every step.
        self.captured.clear()
        self.active = True
        try:
            yield self.captured
        finally:
            self.active = False


def network_extras(terms: list[dict]) -> dict:
    """What a variant's losses need the network to carry (build_unet's `extras`): linear heads
    on the pooled middle block, the low-rank branch's rank ratio."""
    heads, ratio = [], 0.0
    for term in terms:
        needs = get_loss(term["name"]).needs
        heads += [(name, int(term["options"][option])) for name, option in (needs.heads or {}).items()]
        if needs.lowrank_ratio:
            ratio = float(term["options"][needs.lowrank_ratio])
    return {"heads": tuple(heads), "lowrank_ratio": ratio}
