"""Which training images a step's batch holds (config `training.data_policy`).

'iid': indices uniform over the long-tailed training set (every method's default).
'class_resample': CCUA's batch resampling (BRS): each batch slot first draws a class from an
exponential profile over the classes ranked by training count, largest first, with the given
imbalance factor (the CCUA code uses factor 0.1, i.e. 10), then a uniformly random image of that
class; a flatter class profile than the data's own.
"""
from __future__ import annotations

from typing import Callable

import torch


def resample_class_weights(counts: torch.Tensor, imbalance_factor: float) -> torch.Tensor:
    """Unnormalised class weights IF^(-rank / (C' - 1)), rank 0 = the largest class; classes
    without images get 0 (C' = classes with images)."""
    present = counts > 0
    rank = torch.empty_like(counts, dtype=torch.float64)
    order = torch.argsort(-counts.double(), stable=True)
    rank[order] = torch.arange(len(counts), dtype=torch.float64, device=counts.device)
    span = max(int(present.sum()) - 1, 1)
    return torch.where(present, float(imbalance_factor) ** (-rank / span), 0.0)


def batch_sampler(policy: dict, labels: torch.Tensor) -> Callable[[int, torch.Generator], torch.Tensor]:
    """draw(batch_size, generator): indices into the training set of one batch. The class
    tables (counts, weights, the class-grouped order) depend on the labels only, so they are
    computed here once and not at every step."""
    if policy["kind"] == "iid":
        n, device = len(labels), labels.device
        return lambda batch_size, generator: torch.randint(n, (batch_size,), device=device, generator=generator)
    if policy["kind"] != "class_resample":
        raise ValueError(f"unknown training.data_policy.kind {policy['kind']!r}; use 'iid' or 'class_resample'")
    counts = torch.bincount(labels)
    weights = resample_class_weights(counts, policy["imbalance_factor"]).float()
    by_class = torch.argsort(labels, stable=True)  # indices grouped by class, in class order
    offsets = torch.cumsum(counts, 0) - counts

    def draw(batch_size: int, generator: torch.Generator) -> torch.Tensor:
        classes = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        within = (torch.rand(batch_size, device=labels.device, generator=generator) * counts[classes]).long()
        return by_class[offsets[classes] + within.clamp(max=counts[classes] - 1)]

    return draw


def draw_batch_indices(policy: dict, labels: torch.Tensor, batch_size: int,
                       generator: torch.Generator) -> torch.Tensor:
    """Indices into the training set of one batch, drawn with `generator` (one batch; a loop
    keeps its `batch_sampler`)."""
    return batch_sampler(policy, labels)(batch_size, generator)
