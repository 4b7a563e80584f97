import math

import pytest
import torch

from cbdm.diffusion import NoiseSchedule, posterior_mean, predict_x0, reverse_kl_weight
from cbdm.losses import LOSSES, NoisedBatch, draw_negative_labels, draw_target_labels, get_loss, register_loss

SCHEDULE = NoiseSchedule.linear(1000, 1e-4, 0.02)


def batch(t, y=None, noise=None, prior=None, shape=(1, 1, 2)):
    t = torch.tensor(t)
    b = len(t)
    zeros = torch.zeros(b, *shape)
    return NoisedBatch(x0=zeros, x_t=zeros, t=t, y=torch.tensor(y or [0] * b),
                       noise=zeros if noise is None else noise, schedule=SCHEDULE,
                       class_prior=torch.tensor(prior or [0.5, 0.3, 0.2]))


def pix(rows):
    """[[a, b], ...] -> tensor [B, 1, 1, 2]."""
    return torch.tensor(rows, dtype=torch.float32)[:, None, None, :]


def call(name, b, eps, eps_alt, **options):
    loss = get_loss(name)
    return loss(b, eps, eps_alt, loss.options(options))


def test_eps_mse_by_hand():
    b = batch([3, 7], noise=pix([[0.0, 1.0], [2.0, 2.0]]))
    out = call("eps_mse", b, pix([[1.0, 3.0], [2.0, 2.0]]), None)
    assert torch.allclose(out, torch.tensor([2.5, 0.0]))


def test_cbdm_by_hand():
    b = batch([500, 0])
    eps = pix([[1.0, 1.0], [2.0, 2.0]])
    alt = pix([[0.0, 1.0], [1.0, 1.0]])[None]
    out = call("cbdm", b, eps, alt, tau=1.0, commitment=0.25)
    # w = t / T = [0.5, 0]; d = [0.5, 1]; loss = w * (1 + 0.25) * d
    assert torch.allclose(out, torch.tensor([0.5 * 1.25 * 0.5, 0.0]))
    out_tau = call("cbdm", b, eps, alt, tau=2.0, commitment=0.0)
    assert torch.allclose(out_tau, torch.tensor([1.0 * 0.5, 0.0]))


def test_cbdm_stop_gradients_split_the_two_terms():
    b = batch([500])
    eps = pix([[1.0, 1.0]]).requires_grad_()
    alt = pix([[0.0, 1.0]])[None].requires_grad_()
    call("cbdm", b, eps, alt, tau=1.0, commitment=0.25).sum().backward()
    # regulariser: d/d eps = w * 2 (eps - alt) / P; commitment: d/d alt = w * 0.25 * 2 (alt - eps) / P
    assert torch.allclose(eps.grad.flatten(), torch.tensor([0.5, 0.0]))
    assert torch.allclose(alt.grad.flatten(), torch.tensor([-0.125, 0.0]))


def test_hinge_by_hand_and_zero_when_already_separated():
    b = batch([10, 20])
    eps = pix([[0.0, 0.0], [0.0, 0.0]])
    near = pix([[0.5, 0.5], [0.0, 0.0]])[None]  # d = [0.25, 0]
    far = pix([[1.0, 1.0], [3.0, 3.0]])[None]   # d = [1, 9]
    opts = dict(margin=1.0, time_weight="constant")
    assert torch.allclose(call("overlap_hinge", b, eps, near, **opts), torch.tensor([0.75, 1.0]))
    assert torch.equal(call("overlap_hinge", b, eps, far, **opts), torch.zeros(2))
    assert torch.equal(call("overlap_hinge", b, eps, far * 0.999 + 0.002, margin=0.5,
                            time_weight="kl"), torch.zeros(2))


@pytest.mark.parametrize("name, options", [
    ("overlap_hinge", dict(margin=1.0)),
    ("overlap_neg_kl", dict(ceiling=1.0)),
    ("overlap_infonce", dict(temperature=1.0, num_negatives=1)),
])
def test_overlap_gradient_step_increases_the_distance(name, options):
    torch.manual_seed(0)
    eps = (0.1 * torch.randn(3, 1, 1, 2)).requires_grad_()
    neg = (0.1 * torch.randn(1, 3, 1, 1, 2)).requires_grad_()
    # noise == eps: InfoNCE's positive term has zero gradient, leaving the push from negatives.
    b = batch([100, 400, 800], noise=eps.detach().clone())
    before = ((eps - neg) ** 2).mean(dim=(-1, -2, -3))
    call(name, b, eps, neg, **options).sum().backward()
    with torch.no_grad():
        after = ((eps - 0.01 * eps.grad - (neg - 0.01 * neg.grad)) ** 2).mean(dim=(-1, -2, -3))
    assert (after > before).all()


def test_stop_gradient_negative_leaves_the_negative_branch_alone():
    b = batch([10])
    eps = pix([[0.0, 0.0]]).requires_grad_()
    neg = pix([[0.5, 0.5]])[None].requires_grad_()
    call("overlap_hinge", b, eps, neg, margin=1.0, time_weight="constant",
         stop_gradient="negative").sum().backward()
    assert neg.grad is None
    assert eps.grad.abs().sum() > 0


def test_neg_kl_by_hand_with_ceiling():
    b = batch([10, 20])
    eps = pix([[0.0, 0.0], [0.0, 0.0]])
    neg = pix([[0.5, 0.5], [3.0, 3.0]])[None]  # d = [0.25, 9]
    out = call("overlap_neg_kl", b, eps, neg, ceiling=1.0, time_weight="constant")
    assert torch.allclose(out, torch.tensor([-0.25, -1.0]))


def test_infonce_by_hand():
    b = batch([10], noise=pix([[1.0, 1.0]]))
    eps = pix([[0.0, 0.0]])
    negs = torch.stack([pix([[1.0, 1.0]]), pix([[2.0, 2.0]])])  # d_pos = 1, d_neg = [1, 4]
    out = call("overlap_infonce", b, eps, negs, temperature=1.0, num_negatives=2, time_weight="constant")
    expected = -math.log(math.exp(-1) / (2 * math.exp(-1) + math.exp(-4)))
    assert out.item() == pytest.approx(expected, rel=1e-6)


def test_time_weights():
    b = batch([0, 250, 999])
    eps, neg = pix([[0.0, 0.0]] * 3), pix([[0.0, 0.0]] * 3)[None]  # d = 0: loss = w(t) * margin
    linear = call("overlap_hinge", b, eps, neg, margin=1.0, time_weight="linear")
    assert torch.allclose(linear, torch.tensor([0.0, 0.25, 0.999]))
    kl = call("overlap_hinge", b, eps, neg, margin=1.0, time_weight="kl")
    assert torch.allclose(kl, reverse_kl_weight(SCHEDULE)[[0, 250, 999]].float())
    with pytest.raises(ValueError, match="option time_weight must be one of"):
        call("overlap_hinge", b, eps, neg, time_weight="cosine")


def test_kl_weight_is_the_kl_between_reverse_gaussians():
    """KL[N(mu_i, s2) || N(mu_j, s2)] / ||eps_i - eps_j||^2 must be proportional to w(t)."""
    torch.manual_seed(0)
    x_t = torch.randn(1, 1, 4, 4)
    eps_i, eps_j = torch.randn(2, 1, 1, 4, 4, dtype=torch.float64)
    sigma2 = SCHEDULE.reverse_variance("fixedlarge")
    ratios = []
    for step in [0, 1, 10, 300, 999]:
        t = torch.tensor([step])
        mean_i = posterior_mean(SCHEDULE, predict_x0(SCHEDULE, x_t, t, eps_i.float()), x_t, t).double()
        mean_j = posterior_mean(SCHEDULE, predict_x0(SCHEDULE, x_t, t, eps_j.float()), x_t, t).double()
        kl = ((mean_i - mean_j) ** 2).sum() / (2 * sigma2[step])
        ratios.append(kl / ((eps_i - eps_j) ** 2).sum() / reverse_kl_weight(SCHEDULE)[step])
    ratios = torch.stack(ratios)
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=2e-3)
    assert reverse_kl_weight(SCHEDULE).mean().item() == pytest.approx(1.0)


def test_negative_labels_differ_from_the_true_label_and_follow_the_prior():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (20000,), generator=g)
    b = NoisedBatch(x0=None, x_t=None, t=None, y=y, noise=None, schedule=SCHEDULE,
                    class_prior=torch.tensor([0.7, 0.2, 0.1]))
    uniform = draw_negative_labels(b, g, negatives="uniform", num_negatives=3)
    assert uniform.shape == (3, 20000)
    assert (uniform != y).all()
    head = draw_negative_labels(b, g, negatives="head_weighted", num_negatives=1)[0]
    assert (head != y).all()
    share_0_given_y2 = (head[y == 2] == 0).float().mean().item()
    assert share_0_given_y2 == pytest.approx(0.7 / 0.9, abs=0.02)
    share_0_given_y1 = (uniform[0][y == 1] == 0).float().mean().item()
    assert share_0_given_y1 == pytest.approx(0.5, abs=0.02)


def test_cbdm_targets_follow_the_prior_or_uniform():
    g = torch.Generator().manual_seed(0)
    b = NoisedBatch(x0=None, x_t=None, t=None, y=torch.zeros(30000, dtype=torch.long), noise=None,
                    schedule=SCHEDULE, class_prior=torch.tensor([0.7, 0.2, 0.1]))
    prior = draw_target_labels(b, g, target="train_prior")
    assert torch.bincount(prior, minlength=3).float().div(30000).tolist() == pytest.approx([0.7, 0.2, 0.1], abs=0.01)
    uniform = draw_target_labels(b, g, target="uniform")
    assert torch.bincount(uniform, minlength=3).float().div(30000).tolist() == pytest.approx([1 / 3] * 3, abs=0.01)


def test_registry_errors_name_the_known_choices():
    with pytest.raises(KeyError, match=r"cbdm, (\w+, )*eps_mse"):
        get_loss("focal")
    with pytest.raises(ValueError, match="known options"):
        get_loss("cbdm").options({"tau": 1.0, "temperature": 2.0})
    with pytest.raises(ValueError, match="do not match"):
        register_loss("broken", defaults={"alpha": 1.0})(lambda batch, eps, eps_alt: eps)
    assert "broken" not in LOSSES
