"""The literal-KL options of the overlap loss (reduction 'sum', time weight 'kl_raw') against the
Gaussian KL of the two reverse transitions computed directly, and the other time weights."""
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cbdm.diffusion import NoiseSchedule, posterior_mean, predict_x0, reverse_kl_weight
from cbdm.losses import NoisedBatch, get_loss

SCHEDULE = NoiseSchedule.linear(1000, 1e-4, 0.02)
STEPS = [0, 1, 10, 300, 999]


def call(name, b, eps, eps_alt, **options):
    loss = get_loss(name)
    return loss(b, eps, eps_alt, loss.options(options))


def noised_batch(t, x_t):
    b = len(t)
    return NoisedBatch(x0=torch.zeros_like(x_t), x_t=x_t, t=torch.tensor(t), y=torch.zeros(b, dtype=torch.long),
                       noise=torch.zeros_like(x_t), schedule=SCHEDULE, class_prior=torch.tensor([0.5, 0.5]))


def direct_kl(x_t, t, eps_i, eps_j):
    """KL[p(x_{t-1} | x_t, c_i) || p(x_{t-1} | x_t, c_j)] per sample, summed over pixels, from the
    two Gaussians' means and the 'fixedlarge' standard deviation."""
    sigma = SCHEDULE.reverse_variance("fixedlarge")[t].sqrt()[:, None, None, None]
    mean_i = posterior_mean(SCHEDULE, predict_x0(SCHEDULE, x_t, t, eps_i), x_t, t)
    mean_j = posterior_mean(SCHEDULE, predict_x0(SCHEDULE, x_t, t, eps_j), x_t, t)
    return kl_divergence(Normal(mean_i, sigma), Normal(mean_j, sigma)).flatten(1).sum(1)


def test_literal_kl_options_equal_the_gaussian_kl():
    torch.manual_seed(0)
    x_t = torch.randn(len(STEPS), 1, 4, 4, dtype=torch.float64)
    eps_i, eps_j = torch.randn(2, len(STEPS), 1, 4, 4, dtype=torch.float64)
    t = torch.tensor(STEPS)
    expected = direct_kl(x_t, t, eps_i, eps_j)
    b = noised_batch(STEPS, x_t)
    got = -call("overlap_neg_kl", b, eps_i, eps_j[None], ceiling=1e30, time_weight="kl_raw", reduction="sum")
    assert torch.allclose(got, expected, rtol=1e-5)
    # The per-pixel mean and the normalised weight differ from it by constants only.
    mean_norm = -call("overlap_neg_kl", b, eps_i, eps_j[None], ceiling=1e30, time_weight="kl", reduction="mean")
    ratio = expected / mean_norm
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5)
    assert ratio[0].item() == pytest.approx(16 * reverse_kl_weight(SCHEDULE, normalised=False).mean().item(),
                                            rel=1e-5)


def test_sum_reduction_scales_the_hinge_distance_by_the_pixel_count():
    x_t = torch.zeros(1, 1, 4, 4)
    b = noised_batch([5], x_t)
    eps, neg = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 1, 4, 4), 0.1)  # mean d = 0.01, sum d = 0.16
    mean = call("overlap_hinge", b, eps, neg, margin=1.0, time_weight="constant", reduction="mean")
    total = call("overlap_hinge", b, eps, neg, margin=1.0, time_weight="constant", reduction="sum")
    assert mean.item() == pytest.approx(0.99) and total.item() == pytest.approx(0.84)
    with pytest.raises(ValueError, match="reduction"):
        call("overlap_hinge", b, eps, neg, reduction="max")


def test_the_normalised_kl_weight_puts_a_fifth_of_its_mass_on_the_first_ten_steps():
    w = reverse_kl_weight(SCHEDULE)
    assert round((w[:10].sum() / w.sum()).item(), 2) == 0.21
    assert round(w[0].item()) == 89


def test_snr_clipped_weight_favours_large_t():
    steps = [0, 100, 300, 999]
    x_t = torch.zeros(len(steps), 1, 1, 2)
    b = noised_batch(steps, x_t)
    eps, neg = torch.zeros_like(x_t), torch.zeros_like(x_t)[None]  # d = 0: loss = w(t) * margin
    w = call("overlap_hinge", b, eps, neg, margin=1.0, time_weight="snr_clipped")
    abar = SCHEDULE.alphas_bar[steps]
    assert torch.allclose(w, torch.clamp((1 - abar) / abar, max=1).float())
    assert w[0].item() == pytest.approx(1e-4, rel=1e-3) and w[-1].item() == 1.0
    assert torch.all(w[1:] >= w[:-1])
