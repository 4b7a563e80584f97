"""How each loss term meets the classifier-free-guidance label drop, at the level of the training
objective (cbdm.objective.Objective, what TrainStep calls each step), against values recomputed
here from the same noised batch and the same network.

What each method's public code does (qym7/CBDM-pytorch; MediaBrain-SJTU/OC_LT for T2H;
SankarLab/coral-lt-diffusion; CCUA's and CM's released code; for the overlap terms, README "The
overlap loss"): CBDM's regulariser and the overlap terms carry nothing on dropped samples; T2H's transferred target
applies to every sample, dropped ones included; CORAL's SupCon is zeroed on dropped samples;
CCUA's InfoNCE is on the unconditional pass's features of every sample, its alignment on the
conditional samples only; CM's two passes see the same x_t and label (what CM does with the class
of a dropped sample is not known, so it is not tested).

Each step is replayed independently: the step generator draws t, then the noise, then (policy
`sample`) the per-sample coin, then each term's labels and targets in term order (the order
Objective documents); policy `batch` draws its one coin from the coin generator. The coin is
forced by the probability (1.0 drops every batch) or by the seeds below (checked in `replay`).
A mixed batch's mean is over all B samples, the dropped ones counting 0.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from cbdm.diffusion import NoiseSchedule, q_sample
from cbdm.field_losses import t2h_target
from cbdm.losses import NoisedBatch, get_loss
from cbdm.lowrank import lowrank_modules
from cbdm.networks import build_unet
from cbdm.objective import Objective, network_extras

from helpers import TINY_NETWORK

T = 1000  # long enough that large t make T2H's batch posterior broad (transfers happen)
SCHEDULE = NoiseSchedule.linear(T, 1e-4, 0.02)
PRIOR = torch.tensor([0.6, 0.3, 0.1])
Y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
X0 = torch.randn(len(Y), 1, 8, 8, generator=torch.Generator().manual_seed(0))
NULL = len(PRIOR)  # the UNet's null label: num_classes
STEP_SEED = 4  # policy `sample` at p 0.5: samples 0, 4, 5, 7 (classes 0, 1, 2, 0) keep their label
COIN_SEED = 1  # its first draw is 0.758: policy `batch` at p 0.5 keeps the batch conditional
# case: (policy, probability, static_shapes, which samples keep their label)
CASES = {"all_dropped": ("batch", 1.0, True, [False] * 8),
         "all_dropped_eager": ("batch", 1.0, False, [False] * 8),
         "none_dropped": ("batch", 0.5, True, [True] * 8),
         "mixed": ("sample", 0.5, False, [True, False, False, False, True, True, False, True])}


def terms(name: str, **options) -> list[dict]:
    """eps_mse plus the term under test, as the objective receives a variant's losses."""
    return [{"name": n, "weight": 1.0, "options": get_loss(n).options(o)}
            for n, o in (("eps_mse", {}), (name, options))]


def network(variant: list[dict], dropout: float = 0.0) -> torch.nn.Module:
    """The tiny UNet with the variant's extras, its weights perturbed so that every output
    (the near-zero head, the zero low-rank B) depends on the label."""
    torch.manual_seed(0)
    model = build_unet({**TINY_NETWORK, "dropout": dropout}, image_channels=1, image_size=8,
                       num_classes=len(PRIOR), num_timesteps=T, **network_extras(variant))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def step(variant: list[dict], case: str, model) -> tuple[torch.Tensor, dict]:
    """One objective step as the trainer takes it: (loss, parts)."""
    policy, probability, static, _ = CASES[case]
    objective = Objective(variant, SCHEDULE, PRIOR, NULL, {"policy": policy, "probability": probability},
                          batched_forward=True, static_shapes=static)
    return objective(model, X0, Y, torch.Generator().manual_seed(STEP_SEED), torch.Generator().manual_seed(COIN_SEED))


def replay(case: str) -> tuple[NoisedBatch, torch.Tensor, torch.Generator]:
    """The step's noised batch, the per-sample keep mask, and the step generator where the terms'
    draws begin, drawn here independently of the objective."""
    policy, probability, _, keep = CASES[case]
    g = torch.Generator().manual_seed(STEP_SEED)
    t = torch.randint(T, (len(Y),), generator=g)
    noise = torch.randn(X0.shape, generator=g)
    if policy == "batch":
        coin = torch.rand((), generator=torch.Generator().manual_seed(COIN_SEED))
        mask = torch.full((len(Y),), bool(coin >= probability))
    else:
        mask = torch.rand(len(Y), generator=g) >= probability
    assert mask.tolist() == keep, "the seeds no longer force this case's coin"
    batch = NoisedBatch(X0, q_sample(SCHEDULE, X0, t, noise), t, Y, noise, SCHEDULE, PRIOR, NULL)
    return batch, mask, g


def predict(model, batch: NoisedBatch, *label_sets: torch.Tensor) -> tuple[tuple, tuple]:
    """eps(x_t, t, labels) and the middle block's output under each label set, from one forward
    on the label sets stacked (as the objective's batched forward runs them)."""
    n, captured = len(label_sets), []
    handle = model.middle[-1].register_forward_hook(lambda module, args, out: captured.append(out))
    try:
        eps = model(batch.x_t.repeat(n, 1, 1, 1), batch.t.repeat(n), torch.cat(label_sets))
    finally:
        handle.remove()
    return eps.chunk(n), captured[0].chunk(n)


def pixel_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over pixels of (a - b)^2."""
    return ((a - b) ** 2).flatten(1).mean(dim=1)


def check(loss, parts, name: str, expected: torch.Tensor, eps: torch.Tensor, batch: NoisedBatch) -> None:
    """The term's part equals `expected`; eps_mse (the replay's sanity check: same t, noise and
    trained labels) equals its own recomputation; the loss is their sum."""
    mse = pixel_mse(eps, batch.noise).mean()
    torch.testing.assert_close(parts["eps_mse"], mse.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(parts[name], expected.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss.detach(), (mse + expected).detach(), rtol=1e-4, atol=1e-6)


def discriminates(per_sample: torch.Tensor, mask: torch.Tensor) -> None:
    """Precondition: the unmasked values of the dropped samples are not 0 (masking is visible)."""
    assert (~mask).sum() == 0 or per_sample[~mask].abs().min() > 1e-4


@pytest.mark.parametrize("case", CASES)
def test_cbdm_regulariser_carries_nothing_on_dropped_samples(case):
    """CBDM's reference adds w(t) [|eps - sg eps'|^2 + 0.25 |sg eps - eps'|^2] only to batches not
    dropped to the null label: y' drawn from the training prior, w = t / T."""
    variant = terms("cbdm")
    model = network(variant)
    loss, parts = step(variant, case, model)
    batch, mask, g = replay(case)
    y_prime = torch.multinomial(PRIOR, len(Y), replacement=True, generator=g)
    (eps, eps_prime), _ = predict(model, batch, torch.where(mask, Y, NULL), y_prime)
    per_sample = batch.t / T * 1.25 * pixel_mse(eps, eps_prime)
    discriminates(per_sample, mask)
    check(loss, parts, "cbdm", (per_sample * mask).mean(), eps, batch)


@pytest.mark.parametrize("name, options", [("overlap_hinge", {"margin": 50.0}), ("overlap_neg_kl", {"ceiling": 50.0}),
                                           ("overlap_infonce", {})])
@pytest.mark.parametrize("case", CASES)
def test_overlap_terms_carry_nothing_on_dropped_samples(case, name, options):
    """overlap_loss.md: batches (or samples) dropped to the null label carry no overlap term; the
    kept ones carry the registered term on eps(x_t, y) against eps(x_t, y_neg)."""
    variant = terms(name, **options)
    loss_term = get_loss(name)
    model = network(variant)
    loss, parts = step(variant, case, model)
    batch, mask, g = replay(case)
    negatives = loss_term.labels(batch, g, variant[1]["options"])
    (eps, *eps_neg), _ = predict(model, batch, torch.where(mask, Y, NULL), *negatives)
    eps_neg = torch.stack(eps_neg)
    per_sample = loss_term(batch, eps, eps_neg, variant[1]["options"])
    discriminates(per_sample, mask)
    check(loss, parts, name, (per_sample * mask).mean(), eps, batch)


@pytest.mark.parametrize("case", CASES)
def test_t2h_transferred_target_applies_to_every_sample(case):
    """T2H's reference regresses every sample, label-dropped batches included, on the transferred
    target eps'_i = (x_t,i - sqrt(abar) x0_j) / sqrt(1 - abar), never on the plain noise."""
    variant = terms("t2h")
    model = network(variant)
    loss, parts = step(variant, case, model)
    batch, mask, g = replay(case)
    target = t2h_target(batch, g, gate="t2h")
    dropped = ~mask if (~mask).any() else mask
    assert not torch.allclose(target[dropped], batch.noise[dropped]), "no transfer: the test cannot tell"
    (eps,), _ = predict(model, batch, torch.where(mask, Y, NULL))
    check(loss, parts, "t2h", pixel_mse(eps, target).mean(), eps, batch)


@pytest.mark.parametrize("case", CASES)
def test_coral_supcon_is_zeroed_on_dropped_samples(case):
    """CORAL's reference skips its SupCon (projection of the pooled middle block of the trained
    pass) on label-dropped batches; per sample, a dropped anchor carries 0."""
    variant = terms("coral", projection_dim=4)
    model = network(variant)
    loss, parts = step(variant, case, model)
    batch, mask, _ = replay(case)
    (eps,), (h,) = predict(model, batch, torch.where(mask, Y, NULL))
    per_sample = get_loss("coral")(batch, eps, None, variant[1]["options"], features={"trained": h, "alt": None},
                                   heads=model.heads)
    discriminates(per_sample, mask)
    check(loss, parts, "coral", (per_sample * mask).mean(), eps, batch)


def self_infonce(h: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with the query as its own positive and the batch as negatives, L2-normalised."""
    z = F.normalize(h.flatten(1), dim=1)
    logits = z @ z.T / temperature
    return torch.logsumexp(logits, dim=1) - logits.diagonal()


@pytest.mark.parametrize("case", CASES)
def test_ccua_contrasts_unconditional_features_and_aligns_only_conditional_samples(case):
    """CCUA's reference: w(t) InfoNCE on the null-label pass's middle block, every sample and
    every batch; w(t) |eps_c - eps_u|^2 only where the sample kept its label (w = t / T)."""
    variant = terms("ccua")
    model = network(variant)
    loss, parts = step(variant, case, model)
    batch, mask, _ = replay(case)
    (eps, eps_u), (h, h_u) = predict(model, batch, torch.where(mask, Y, NULL), torch.full_like(Y, NULL))
    if mask.any():  # the conditional features differ: which pass is contrasted is visible
        assert not torch.allclose(h[mask], h_u[mask])
    per_sample = batch.t / T * (self_infonce(h_u, 0.1) + pixel_mse(eps, eps_u) * mask)
    check(loss, parts, "ccua", per_sample.mean(), eps, batch)


@pytest.mark.parametrize("case", ["all_dropped", "mixed"])
def test_ccua_alignment_carries_nothing_on_dropped_samples_whose_passes_differ(case):
    """Without dropout a dropped sample's two null-label passes are equal, so the alignment's mask
    is invisible; with the reference's dropout (0.1) they differ, and CCUA's reference still
    aligns only conditional samples. The dropout masks are replayed from the global seed, with
    the objective's batched forward (trained labels, then the null labels, in one call)."""
    variant = terms("ccua")
    model = network(variant, dropout=0.1)
    torch.manual_seed(7)
    loss, parts = step(variant, case, model)
    batch, mask, _ = replay(case)
    torch.manual_seed(7)
    (eps, eps_u), (_, h_u) = predict(model, batch, torch.where(mask, Y, NULL), torch.full_like(Y, NULL))
    assert pixel_mse(eps, eps_u)[~mask].min() > 1e-4, "dropout left the passes equal: the test cannot tell"
    per_sample = batch.t / T * (self_infonce(h_u, 0.1) + pixel_mse(eps, eps_u) * mask)
    check(loss, parts, "ccua", per_sample.mean(), eps, batch)


@pytest.mark.parametrize("case", CASES)
def test_cm_base_and_branch_passes_see_each_samples_same_label(case):
    """CM's two passes (h1 with the low-rank branch, h2 without) run on the same x_t and label:
    the null label on a dropped sample, its class otherwise."""
    variant = terms("cm")
    model = network(variant)
    branches, calls = lowrank_modules(model), []
    model.register_forward_pre_hook(lambda m, args: calls.append((args, all(b.enabled for b in branches))))
    step(variant, case, model)
    batch, mask, _ = replay(case)
    trained = torch.where(mask, Y, NULL)
    assert sorted(on for _, on in calls) == [False, True]
    for (x_t, t, labels), _ in calls:
        assert torch.equal(labels, trained)
        assert torch.equal(t, batch.t) and torch.allclose(x_t, batch.x_t)
