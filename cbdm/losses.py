"""Training losses, registered by name so that a variant is a config entry.

A loss term is a pure function of the noised batch and of noise predictions:

    compute(batch, eps, eps_alt, **options) -> per-sample loss, shape [B]

`eps` is the prediction under the labels the model was trained with this step; `eps_alt`
is the prediction under the alternative labels the term drew with its `draw_labels`
function (shape [K, B, ...] for K alternative labels per sample), or None if it draws none.
The trainer gathers every term's alternative labels, evaluates the network (one batched
forward or one per term) and sums `weight * mean(compute(...))` over the variant's terms.

Terms marked `conditional_only` carry no value for samples trained without a label
(classifier-free guidance drop): the trainer masks them out.

To add a loss: write the two functions and call `register_loss`; README has an example.

A term may ask for more than eps and eps_alt by declaring `Needs` (cbdm/field_losses.py has the
terms that do): a rewritten regression target drawn from the batch without gradient (T2H), the
network's middle-block features of every pass, extra trainable heads that the model file
carries, a second prediction with the low-rank branch switched off, the low-rank branch itself.
What it asks for reaches `compute` as the keyword arguments named in `EXTRA_ARGUMENTS`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from .diffusion import NoiseSchedule


@dataclass(frozen=True)
class NoisedBatch:
    """What a loss term may look at, besides the network's predictions."""
    x0: torch.Tensor
    x_t: torch.Tensor
    t: torch.Tensor          # 0-based timesteps, [B]
    y: torch.Tensor          # true class labels, [B]
    noise: torch.Tensor      # the eps that produced x_t
    schedule: NoiseSchedule
    class_prior: torch.Tensor  # training-set class frequencies, [C], sums to 1
    null_label: int | None = None  # the label of an unconditional prediction

    @property
    def num_classes(self) -> int:
        """The number of classes (the length of the class prior)."""
        return len(self.class_prior)

    def select(self, rows: slice) -> "NoisedBatch":
        """The same batch restricted to `rows` (one data-parallel process's share)."""
        return NoisedBatch(self.x0[rows], self.x_t[rows], self.t[rows], self.y[rows], self.noise[rows],
                           self.schedule, self.class_prior, self.null_label)


# Keyword arguments of `compute` that are not options: what `Needs` delivers.
#   target:      [B, ...] the rewritten regression target (Needs.target)
#   features:    {"trained": [B, C, h, w], "alt": [K, B, C, h, w] or None}: middle-block output
#   heads:       the network's nn.ModuleDict of heads (Needs.heads)
#   eps_base:    the prediction under the trained labels with the low-rank branch off
#   conditional: [B] float, 1 where the sample was trained with its label
EXTRA_ARGUMENTS = ("target", "features", "heads", "eps_base", "conditional")


@dataclass(frozen=True)
class Needs:
    """What a term asks of the objective and the network beyond eps and eps_alt.

    target:        fn(batch, generator, **options) -> the regression target, [B, ...]; drawn on
                   the whole batch, without gradient, before a data-parallel process takes its share
    features:      the middle-block output of every forward pass
    heads:         {head name: the option holding its output width}: trainable linear heads on
                   the pooled middle-block output, carried by the network and the model file
    base_pass:     a second prediction, with gradient, with the low-rank branch switched off
    lowrank_ratio: the option holding the rank ratio of the low-rank branch the network carries
    """
    target: Callable[..., torch.Tensor] | None = None
    features: bool = False
    heads: Mapping[str, str] | None = None
    base_pass: bool = False
    lowrank_ratio: str | None = None

    def option_names(self) -> set[str]:
        """The loss options these needs read (head sizes, the low-rank ratio, the target's keywords)."""
        names = set(self.heads.values()) if self.heads else set()
        if self.lowrank_ratio:
            names.add(self.lowrank_ratio)
        return names | (_keyword_names(self.target) if self.target else set())


@dataclass(frozen=True)
class Option:
    """What values a loss option takes: its type (float accepts integers too), the allowed
    values, and a range. Declared in `register_loss(..., options=)`; an option declared only by
    its default gets the default's type."""
    type: type
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive minimum

    def problem(self, value) -> str | None:
        """Why `value` is not allowed, or None."""
        numeric = self.type in (int, float)
        allowed = (int, float) if self.type is float else (self.type,)
        if not isinstance(value, allowed) or (numeric and isinstance(value, bool)):
            return f"must be of type {self.type.__name__}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"must be >= {self.minimum}, got {value!r}"
        if self.above is not None and value <= self.above:
            return f"must be > {self.above}, got {value!r}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum}, got {value!r}"
        return None


@dataclass(frozen=True)
class LossTerm:
    """A registered loss: its per-sample function, label drawing, option defaults, the weight a
    term declared without one gets, and needs."""

    name: str
    compute: Callable[..., torch.Tensor]
    draw_labels: Callable[..., torch.Tensor] | None
    defaults: Mapping[str, object]
    conditional_only: bool
    description: str
    specs: Mapping[str, Option] = field(default_factory=dict)
    needs: Needs = Needs()
    weight: float = 1.0
    regularizer: bool = False

    def options(self, overrides: Mapping[str, object]) -> dict:
        """The term's options: defaults updated by `overrides`, each checked against its spec."""
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(f"loss {self.name!r} has no option(s) {unknown}; "
                             f"known options: {sorted(self.defaults) or 'none'}")
        for key, value in overrides.items():
            problem = self.specs[key].problem(value)
            if problem:
                raise ValueError(f"loss {self.name!r}: option {key} {problem}")
        return {**self.defaults, **overrides}

    def labels(self, batch: NoisedBatch, generator: torch.Generator, options: Mapping) -> torch.Tensor:
        """Alternative labels as [K, B]."""
        labels = self.draw_labels(batch, generator, **_keywords_of(self.draw_labels, options))
        return labels if labels.ndim == 2 else labels[None]

    def target(self, batch: NoisedBatch, generator: torch.Generator, options: Mapping) -> torch.Tensor:
        """The rewritten regression target (Needs.target), without gradient."""
        with torch.no_grad():
            return self.needs.target(batch, generator, **_keywords_of(self.needs.target, options))

    def __call__(self, batch: NoisedBatch, eps: torch.Tensor, eps_alt: torch.Tensor | None,
                 options: Mapping, **extras) -> torch.Tensor:
        return self.compute(batch, eps, eps_alt, **_keywords_of(self.compute, {**options, **extras}))


LOSSES: dict[str, LossTerm] = {}


def _keyword_names(fn: Callable) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


def _keywords_of(fn: Callable, options: Mapping) -> dict:
    names = _keyword_names(fn)
    return {k: v for k, v in options.items() if k in names}


def register_loss(name: str, *, defaults: Mapping[str, object] | None = None,
                  draw_labels: Callable | None = None, conditional_only: bool = True,
                  options: Mapping[str, Option] | None = None, needs: Needs | None = None,
                  weight: float = 1.0, regularizer: bool = False):
    """Decorator: register `compute` under `name`. Every option in `defaults` must be a
    keyword-only argument of `compute`, `draw_labels` or `needs.target`, or an option `needs`
    names, and vice versa (`compute`'s EXTRA_ARGUMENTS are not options). `options` declares an
    option's type, choices and range (`Option`); one not declared takes its default's type.
    `weight` is the term's weight where a variant does not set one: a regularizer whose useful
    weight is far from 1 registers the vetted one, so that declaring it by name is safe.
    `regularizer`: the term does not teach the network to predict the noise (it shapes a
    prediction a denoising term trains), so a variant made of such terms alone is refused."""
    defaults = dict(defaults or {})
    specs = {key: Option(type(value)) for key, value in defaults.items()} | dict(options or {})
    if set(specs) != set(defaults):
        raise ValueError(f"loss {name!r}: options {sorted(set(specs) - set(defaults))} have no default")
    needs = needs or Needs()

    def decorate(compute):
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        accepted = (_keyword_names(compute) - set(EXTRA_ARGUMENTS)) | needs.option_names() | \
            (_keyword_names(draw_labels) if draw_labels else set())
        if accepted != set(defaults):
            raise ValueError(f"loss {name!r}: options {sorted(defaults)} do not match the keyword "
                             f"arguments {sorted(accepted)} of its functions")
        doc = inspect.getdoc(compute) or ""
        LOSSES[name] = LossTerm(name, compute, draw_labels, defaults, conditional_only,
                                doc.splitlines()[0] if doc else "", specs, needs, weight, regularizer)
        return compute

    return decorate


def get_loss(name: str) -> LossTerm:
    """The registered loss `name`; KeyError listing the registered ones otherwise."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; registered losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def pixel_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the batch axis (the last of the leading ones)."""
    return x.flatten(start_dim=x.ndim - 3).mean(dim=-1)


def pixel_reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-pixel 'mean', or 'sum' over pixels (the literal KL's scale), of the last three axes."""
    if reduction == "mean":
        return pixel_mean(x)
    if reduction == "sum":
        return x.flatten(start_dim=x.ndim - 3).sum(dim=-1)
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'sum'")


# --- label samplers -----------------------------------------------------------------------

def draw_target_labels(batch: NoisedBatch, generator: torch.Generator, *, target: str) -> torch.Tensor:
    """CBDM's y': from the training-set class frequencies ('train_prior', what the reference
    code does when training from scratch) or uniformly ('uniform', its fine-tuning mode and
    the balanced target of the paper)."""
    if target == "train_prior":
        weights = batch.class_prior
    elif target == "uniform":
        weights = torch.ones_like(batch.class_prior)
    else:
        raise ValueError(f"unknown CBDM target {target!r}; use 'train_prior' or 'uniform'")
    return torch.multinomial(weights, len(batch.y), replacement=True, generator=generator)


def draw_negative_labels(batch: NoisedBatch, generator: torch.Generator, *, negatives: str,
                         num_negatives: int) -> torch.Tensor:
    """Labels different from the true one, [K, B]: uniform over the other classes, or in
    proportion to their training frequency ('head_weighted': the tail -> head overlap)."""
    if negatives == "uniform":
        weights = torch.ones_like(batch.class_prior)
    elif negatives == "head_weighted":
        weights = batch.class_prior
    else:
        raise ValueError(f"unknown negative sampling {negatives!r}; use 'uniform' or 'head_weighted'")
    weights = weights.expand(len(batch.y), -1).clone()
    weights[torch.arange(len(batch.y)), batch.y] = 0
    return torch.multinomial(weights, num_negatives, replacement=True, generator=generator).T


def weight_over_time(batch: NoisedBatch, kind: str) -> torch.Tensor:
    """w(t) of the overlap loss: 'kl' (the KL factor lambda_t, mean 1 over t; 21 % of its mass
    lies on t < 10 of T = 1000), 'kl_raw' (lambda_t itself: with reduction 'sum', w(t) * d is
    the KL), 'snr_clipped' (min(1, 1 / SNR_t): near 0 at small t, 1 once noise dominates),
    'linear' (t / T, as CBDM) or 'constant'."""
    if kind == "kl":
        return batch.schedule.kl_weight[batch.t].float()
    if kind == "kl_raw":
        return batch.schedule.kl_weight_raw[batch.t].float()
    if kind == "snr_clipped":
        abar = batch.schedule.alphas_bar[batch.t]  # float64: 1 - abar cancels at small t
        return torch.clamp((1 - abar) / abar, max=1.0).float()
    if kind == "linear":
        return batch.t.float() / batch.schedule.num_timesteps
    if kind == "constant":
        return torch.ones_like(batch.t, dtype=torch.float32)
    raise ValueError(f"unknown time weight {kind!r}; use 'kl', 'kl_raw', 'snr_clipped', 'linear' or 'constant'")


def _negative_distance(eps: torch.Tensor, eps_neg: torch.Tensor, stop_gradient: str,
                       reduction: str) -> torch.Tensor:
    """d = per-pixel mean (or sum) of (eps(x_t, y) - eps(x_t, y_neg))^2, [K, B]."""
    if stop_gradient == "negative":
        eps_neg = eps_neg.detach()
    elif stop_gradient != "none":
        raise ValueError(f"unknown stop_gradient {stop_gradient!r}; use 'none' or 'negative'")
    return pixel_reduce((eps[None] - eps_neg) ** 2, reduction)


# --- the terms ------------------------------------------------------------------------------

@register_loss("eps_mse", conditional_only=False)
def eps_mse(batch: NoisedBatch, eps: torch.Tensor, eps_alt: None) -> torch.Tensor:
    """The DDPM objective: per-pixel mean squared error of the predicted noise."""
    return pixel_mean((eps - batch.noise) ** 2)


@register_loss("cbdm", defaults={"tau": 1.0, "commitment": 0.25, "target": "train_prior"},
               draw_labels=draw_target_labels,
               options={"tau": Option(float, minimum=0), "commitment": Option(float, minimum=0),
                        "target": Option(str, choices=("train_prior", "uniform"))}, regularizer=True)
def cbdm_regularizer(batch: NoisedBatch, eps: torch.Tensor, eps_alt: torch.Tensor, *,
                     tau: float, commitment: float) -> torch.Tensor:
    """CBDM (Qin et al. 2023): pull eps(x_t, y) toward eps(x_t, y'), y' from the target."""
    eps_target = eps_alt[0]
    weight = tau * batch.t.float() / batch.schedule.num_timesteps
    regularizer = pixel_mean((eps - eps_target.detach()) ** 2)
    commit = pixel_mean((eps.detach() - eps_target) ** 2)
    return weight * (regularizer + commitment * commit)


_OVERLAP_DEFAULTS = {"negatives": "uniform", "num_negatives": 1, "stop_gradient": "none",
                     "time_weight": "kl", "reduction": "mean"}
_OVERLAP_OPTIONS = {"negatives": Option(str, choices=("uniform", "head_weighted")),
                    "num_negatives": Option(int, minimum=1),
                    "stop_gradient": Option(str, choices=("none", "negative")),
                    "time_weight": Option(str, choices=("kl", "kl_raw", "snr_clipped", "linear", "constant")),
                    "reduction": Option(str, choices=("mean", "sum"))}


# The hinge's weight and time weight are the sweep's choice (README, "The overlap loss"): at 0.1
# training was unstable across seeds, and `kl` puts 21 % of its weight on t < 10.
@register_loss("overlap_hinge", defaults={**_OVERLAP_DEFAULTS, "margin": 0.1, "time_weight": "snr_clipped"},
               draw_labels=draw_negative_labels, options={**_OVERLAP_OPTIONS, "margin": Option(float, minimum=0)},
               weight=0.01, regularizer=True)
def overlap_hinge(batch: NoisedBatch, eps: torch.Tensor, eps_alt: torch.Tensor, *,
                  margin: float, stop_gradient: str, time_weight: str, reduction: str) -> torch.Tensor:
    """Overlap (DiffROP re-implementation): w(t) * max(0, m - d), mean over K negatives."""
    distance = _negative_distance(eps, eps_alt, stop_gradient, reduction)
    return weight_over_time(batch, time_weight) * torch.relu(margin - distance).mean(dim=0)


@register_loss("overlap_neg_kl", defaults={**_OVERLAP_DEFAULTS, "ceiling": 0.1},
               draw_labels=draw_negative_labels, options={**_OVERLAP_OPTIONS, "ceiling": Option(float, minimum=0)},
               regularizer=True)
def overlap_neg_kl(batch: NoisedBatch, eps: torch.Tensor, eps_alt: torch.Tensor, *,
                   ceiling: float, stop_gradient: str, time_weight: str, reduction: str) -> torch.Tensor:
    """Overlap (DiffROP re-implementation): -w(t) * min(d, ceiling), mean over K negatives."""
    distance = _negative_distance(eps, eps_alt, stop_gradient, reduction)
    return -weight_over_time(batch, time_weight) * distance.clamp(max=ceiling).mean(dim=0)


@register_loss("overlap_infonce", defaults={**_OVERLAP_DEFAULTS, "num_negatives": 4,
                                            "temperature": 0.1},
               draw_labels=draw_negative_labels,
               options={**_OVERLAP_OPTIONS, "temperature": Option(float, above=0)}, regularizer=True)
def overlap_infonce(batch: NoisedBatch, eps: torch.Tensor, eps_alt: torch.Tensor, *,
                    temperature: float, stop_gradient: str, time_weight: str,
                    reduction: str) -> torch.Tensor:
    """Overlap (DiffROP re-implementation): InfoNCE over -d / temperature, K negatives.

    The positive is the true noise, the negatives are eps(x_t, y_neg)."""
    positive = pixel_reduce((eps - batch.noise) ** 2, reduction)[None]
    negative = _negative_distance(eps, eps_alt, stop_gradient, reduction)
    logits = -torch.cat([positive, negative]) / temperature
    return weight_over_time(batch, time_weight) * -torch.log_softmax(logits, dim=0)[0]

