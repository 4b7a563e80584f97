"""The fast path computes what the reference path computes."""
import numpy as np
import pytest
import torch

from cbdm.acceleration import autocast, ema_update, prepare_network, to_layout
from cbdm.diffusion import NoiseSchedule
from cbdm.networks import GroupNorm, build_unet, group_norm_in_layout
from cbdm.objective import Objective
from cbdm.sample import generate

NETWORK = dict(base_channels=16, channel_mult=[1, 2], attention_levels=[1], num_res_blocks=1, dropout=0.0,
               norm_groups=4)
TERMS = [{"name": "eps_mse", "weight": 1.0, "options": {}},
         {"name": "cbdm", "weight": 1.0, "options": {"tau": 1.0, "commitment": 0.25, "target": "train_prior"}},
         {"name": "overlap_hinge", "weight": 0.1, "options": {
             "margin": 0.1, "negatives": "uniform", "num_negatives": 1, "stop_gradient": "none", "time_weight": "kl",
             "reduction": "mean"}}]


def model_and_objective(batched=True):
    torch.manual_seed(0)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=10, num_timesteps=100)
    with torch.no_grad():  # leave the near-zero initialisation, so that the outputs matter
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    objective = Objective(TERMS, NoiseSchedule.linear(100, 1e-4, 0.02), torch.full((10,), 0.1),
                          model.null_label, {"policy": "batch", "probability": 0.0}, batched)
    return model, objective


def loss_of(model, objective, network=None, precision="fp32", channels_last=False):
    x0 = to_layout(torch.rand(32, 1, 8, 8) * 2 - 1, channels_last)
    y = torch.arange(32) % 10
    with autocast(torch.device("cpu"), precision):
        loss, _ = objective(network or model, x0, y, torch.Generator().manual_seed(3), torch.Generator().manual_seed(4))
    return loss


def test_bf16_autocast_gives_the_fp32_loss_within_bf16_tolerance():
    model, objective = model_and_objective()
    reference = loss_of(model, objective)
    fast = loss_of(model, objective, precision="bf16")
    assert fast.dtype == torch.float32
    assert fast.item() == pytest.approx(reference.item(), rel=2e-2)


def test_channels_last_and_one_batched_forward_give_the_reference_loss():
    model, objective = model_and_objective(batched=False)
    reference = loss_of(model, objective)
    model_fast, objective_fast = model_and_objective(batched=True)
    network = prepare_network(model_fast, channels_last=True)
    fast = loss_of(model_fast, objective_fast, network=network, channels_last=True)
    assert fast.item() == pytest.approx(reference.item(), rel=1e-5)


def test_the_layout_keeping_group_norm_is_pytorchs_in_value_gradient_and_autocast_dtype():
    torch.manual_seed(0)
    native = torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        native.weight.normal_(), native.bias.normal_()
    ours = GroupNorm(4, 16)
    ours.load_state_dict(native.state_dict())
    ours.keep_layout = True
    x = (torch.randn(3, 16, 8, 8) * 3 + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    a, b = native(x), ours(x2)
    assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
    assert torch.allclose(a, b, atol=1e-5)
    grad = torch.randn_like(a)
    a.backward(grad), b.backward(grad)
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert torch.allclose(native.weight.grad, ours.weight.grad, atol=1e-4)
    assert torch.allclose(native.bias.grad, ours.bias.grad, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a CPU's autocast keeps GroupNorm's input dtype
        a, b = native(x.detach().bfloat16()), ours(x.detach().bfloat16())
    assert a.dtype == b.dtype == torch.bfloat16 and torch.allclose(a.float(), b.float(), atol=2e-2)
    assert ours(x.detach().contiguous()).is_contiguous()  # contiguous input: PyTorch's kernel


def test_channels_last_group_norm_gives_the_reference_loss_through_the_layout_keeping_path(monkeypatch):
    import cbdm.networks

    calls = []
    def counted(x, *args):
        calls.append(x.is_contiguous(memory_format=torch.channels_last))
        return group_norm_in_layout(x, *args)
    monkeypatch.setattr(cbdm.networks, "group_norm_in_layout", counted)
    model, objective = model_and_objective(batched=False)
    reference = loss_of(model, objective)
    assert not calls  # the reference path: PyTorch's GroupNorm
    model_fast, objective_fast = model_and_objective(batched=True)
    network = prepare_network(model_fast, channels_last=True, group_norm="channels_last")
    fast = loss_of(model_fast, objective_fast, network=network, channels_last=True)
    norms = sum(isinstance(m, GroupNorm) for m in model_fast.modules())
    assert calls == [True] * norms  # every GroupNorm of the one batched forward
    assert fast.item() == pytest.approx(reference.item(), rel=1e-5)
    with pytest.raises(ValueError, match="native, channels_last"):
        prepare_network(model_fast, group_norm="nhwc")


def test_the_two_ema_updates_agree():
    params = [torch.randn(5, 3), torch.randn(7)]
    a, b = [p.clone() + 1 for p in params], [p.clone() + 1 for p in params]
    ema_update(a, params, 0.99, "foreach")
    ema_update(b, params, 0.99, "loop")
    assert all(torch.allclose(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="foreach"):
        ema_update(a, params, 0.99, "sometimes")


def test_fused_adam_takes_the_plain_adam_step():
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(10))
    w2 = torch.nn.Parameter(w1.detach().clone())
    plain, fused = torch.optim.Adam([w1], lr=0.1), torch.optim.Adam([w2], lr=0.1, fused=True)
    for _ in range(3):
        for w, opt in ((w1, plain), (w2, fused)):
            opt.zero_grad()
            (w ** 2).sum().backward()
            opt.step()
    assert torch.allclose(w1, w2, atol=1e-6)


SAMPLING = {"sampler": "ddim", "steps": 4, "eta": 0.5, "variance": "fixedlarge", "batch_size": 4,
            "batched_guidance": True, "precision": "fp32", "compile": False, "compile_mode": "default",
            "tf32": False, "cudnn_benchmark": False}


def test_sampling_in_bf16_stays_close_to_fp32():
    model, _ = model_and_objective()
    model.eval()
    schedule = NoiseSchedule.linear(100, 1e-4, 0.02)
    labels, seeds = np.arange(8) % 10, np.arange(8)
    reference = generate(model, schedule, labels, seeds, SAMPLING, 1.0, torch.device("cpu")).astype(int)
    fast = generate(model, schedule, labels, seeds, {**SAMPLING, "precision": "bf16"}, 1.0,
                    torch.device("cpu")).astype(int)
    assert np.abs(reference - fast).mean() < 3  # of 255 grey levels


def test_killed_sampling_redoes_only_the_unfinished_batches(tmp_path):
    model, _ = model_and_objective()
    model.eval()
    schedule = NoiseSchedule.linear(100, 1e-4, 0.02)
    labels, seeds = np.arange(10) % 10, np.arange(10)
    whole = generate(model, schedule, labels, seeds, SAMPLING, 1.0, torch.device("cpu"), shard_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000.npz", "000000004.npz", "000000008.npz"]
    (tmp_path / "000000004.npz").unlink()  # as if the job died during the second batch
    again = generate(model, schedule, labels, seeds, SAMPLING, 1.0, torch.device("cpu"), shard_dir=tmp_path)
    assert np.array_equal(whole, again)
    other = generate(model, schedule, labels, seeds + 100, SAMPLING, 1.0, torch.device("cpu"), shard_dir=tmp_path)
    assert not np.array_equal(whole, other)  # shards of other seeds are not reused


def test_a_model_whose_samples_are_not_finite_is_refused_not_saved_as_black_images(tmp_path):
    """A NaN weight made every pixel NaN, which the uint8 conversion turned into 0: a set of
    black images, featurised and scored without a word."""
    from cbdm.sample import SamplingError

    model, _ = model_and_objective()
    model.eval()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    schedule = NoiseSchedule.linear(100, 1e-4, 0.02)
    with pytest.raises(SamplingError, match=r"4 of 4 images of the batch from seed 0 are not finite at guidance 1"):
        generate(model, schedule, np.arange(8) % 10, np.arange(8), SAMPLING, 1.0, torch.device("cpu"),
                 shard_dir=tmp_path, model_id="m.pt")
    assert not list(tmp_path.iterdir())  # no shard kept for a rerun to reuse
