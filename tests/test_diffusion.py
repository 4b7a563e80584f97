import types

import pytest
import torch

from cbdm.diffusion import NoiseSchedule, guided_eps, posterior_mean, predict_x0, q_sample
from cbdm.networks import build_unet
from cbdm.samplers import ddim_timesteps, sample_ancestral, sample_ddim

TINY_NET = dict(base_channels=8, channel_mult=[1, 2], attention_levels=[1], num_res_blocks=1,
                dropout=0.0, norm_groups=4)


def tiny_unet(num_timesteps=50, seed=0):
    torch.manual_seed(seed)
    model = build_unet(TINY_NET, image_channels=1, image_size=8, num_classes=3, num_timesteps=num_timesteps)
    # Perturb the near-zero output layers so that the network's output depends on its input.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_schedule_values():
    s = NoiseSchedule.linear(1000, 1e-4, 0.02)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert s.alphas_bar[0].item() == pytest.approx(1 - 1e-4)
    assert s.alphas_bar_prev[0].item() == 1.0
    assert torch.allclose(s.alphas_bar_prev[1:], s.alphas_bar[:-1])
    fixedlarge = s.reverse_variance("fixedlarge")
    assert fixedlarge[0] == s.posterior_variance[1] and torch.equal(fixedlarge[1:], s.betas[1:])


def test_q_sample_and_x0_prediction_invert_each_other():
    s = NoiseSchedule.linear(1000, 1e-4, 0.02)
    x0, eps = torch.randn(2, 4, 1, 3, 3)
    t = torch.tensor([0, 10, 500, 999])
    x_t = q_sample(s, x0, t, eps)
    abar = s.alphas_bar[t].float()[:, None, None, None]
    assert torch.allclose(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps, atol=1e-5)
    assert torch.allclose(predict_x0(s, x_t, t, eps), x0, atol=1e-3)


def test_posterior_mean_at_the_last_step_is_x0():
    s = NoiseSchedule.linear(1000, 1e-4, 0.02)
    x0, x1 = torch.randn(2, 3, 1, 2, 2)
    assert torch.allclose(posterior_mean(s, x0, x1, torch.zeros(3, dtype=torch.long)), x0)


def test_guidance_in_one_batched_forward_equals_two_forwards():
    model = tiny_unet()
    x = torch.randn(5, 1, 8, 8)
    t = torch.tensor([0, 3, 10, 20, 49])
    y = torch.tensor([0, 1, 2, 0, 1])
    with torch.no_grad():
        one = guided_eps(model, x, t, y, model.null_label, 1.5, batched=True)
        two = guided_eps(model, x, t, y, model.null_label, 1.5, batched=False)
        manual = model(x, t, y) * 2.5 - 1.5 * model(x, t, torch.full_like(y, model.null_label))
    assert torch.allclose(one, two, atol=1e-5)
    assert torch.allclose(two, manual, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim_eta0", "ddim_eta1", "ancestral"])
def test_images_do_not_depend_on_the_batch_they_were_drawn_in(sampler):
    model = tiny_unet()
    schedule = NoiseSchedule.linear(50, 1e-4, 0.02)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    seeds = [11, 12, 13, 14, 15, 16, 17]

    def draw(lab, sds):
        if sampler == "ancestral":
            return sample_ancestral(model, schedule, lab, sds, guidance=1.0)
        return sample_ddim(model, schedule, lab, sds, guidance=1.0, steps=10,
                           eta=0.0 if sampler == "ddim_eta0" else 1.0)

    whole = draw(labels, seeds)
    pieces = torch.cat([draw(labels[:3], seeds[:3]), draw(labels[3:], seeds[3:])])
    alone = draw(labels[4:5], seeds[4:5])
    assert torch.allclose(whole, pieces, atol=1e-5)
    assert torch.allclose(whole[4:5], alone, atol=1e-5)
    other_seeds = draw(labels, [s + 100 for s in seeds])
    assert not torch.allclose(whole, other_seeds)


class PointOracle(torch.nn.Module):
    """The exact noise predictor for data that is a single image x_star."""

    def __init__(self, x_star, schedule):
        super().__init__()
        self.x_star, self.schedule = x_star, schedule
        self.cfg = types.SimpleNamespace(image_channels=1, image_size=x_star.shape[-1])
        self.null_label = 3

    def forward(self, x, t, y):
        abar = self.schedule.alphas_bar[t].float()[:, None, None, None]
        return (x - abar.sqrt() * self.x_star) / (1 - abar).sqrt()


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_samplers_recover_the_single_training_image_from_the_exact_score(sampler):
    schedule = NoiseSchedule.linear(200, 1e-4, 0.02)
    x_star = torch.linspace(-0.9, 0.9, 16).reshape(1, 1, 4, 4)
    oracle = PointOracle(x_star, schedule)
    labels = torch.zeros(3, dtype=torch.long)
    if sampler == "ddim":
        out = sample_ddim(oracle, schedule, labels, [1, 2, 3], guidance=2.0, steps=7)
    else:
        out = sample_ancestral(oracle, schedule, labels, [1, 2, 3], guidance=2.0)
    assert torch.allclose(out, x_star.expand(3, -1, -1, -1), atol=1e-4)


def test_ddim_timesteps_are_descending_and_cover_both_ends():
    steps = ddim_timesteps(1000, 40)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 40
    assert all(a > b for a, b in zip(steps, steps[1:]))
    with pytest.raises(ValueError, match=r"DDIM steps must be in 1..10, got 11"):
        ddim_timesteps(10, 11)


def test_unet_shapes_and_null_label():
    model = tiny_unet()
    x = torch.randn(2, 1, 8, 8)
    out = model(x, torch.tensor([1, 2]), torch.tensor([0, model.null_label]))
    assert out.shape == x.shape
    assert model.label_embedding.num_embeddings == 4


def test_unet_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="norm_groups"):
        build_unet({**TINY_NET, "norm_groups": 3}, image_channels=1, image_size=8, num_classes=3, num_timesteps=10)
    with pytest.raises(ValueError, match="image_size"):
        build_unet({**TINY_NET, "channel_mult": [1, 2, 2, 2]}, image_channels=1, image_size=4,
                   num_classes=3, num_timesteps=10)


def test_the_cifar_unet_has_the_reference_parameter_count(repo):
    """The pytorch-ddpm UNet at the CIFAR setting has about 35.7 M parameters (conditional)."""
    import yaml

    from cbdm.networks import count_parameters

    network = yaml.safe_load((repo / "config/paper/cifar10-lt.yaml").read_text())["network"]
    model = build_unet(network, image_channels=3, image_size=32, num_classes=10, num_timesteps=1000)
    assert count_parameters(model) == pytest.approx(35.7e6, rel=0.01)
