"""The field's losses (T2H, CORAL, CCUA, CM) on small tensors against values computed by hand,
CM's low-rank branch, the batch-resampling data policy, and the model file carrying the extras."""
import math
import re
from dataclasses import asdict

import pytest
import torch

from cbdm.datapolicy import batch_sampler, draw_batch_indices, resample_class_weights
from cbdm.diffusion import NoiseSchedule, q_sample
from cbdm.field_losses import cm_class_coefficients, self_infonce, supervised_contrastive, t2h_posterior, t2h_target
from cbdm.losses import NoisedBatch, get_loss
from cbdm.lowrank import LowRankConv2d, lowrank_disabled, lowrank_modules, lowrank_rank
from cbdm.modelfile import load_model, save_model
from cbdm.networks import build_unet
from cbdm.objective import Objective, network_extras

SCHEDULE = NoiseSchedule.linear(1000, 1e-4, 0.02)
NETWORK = dict(base_channels=8, channel_mult=[1, 2], attention_levels=[], num_res_blocks=1, dropout=0.0,
               norm_groups=4)


def noised(t, y, prior, seed=0, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(len(t), *shape, generator=g)
    noise = torch.randn(len(t), *shape, generator=g)
    t = torch.tensor(t)
    return NoisedBatch(x0, q_sample(SCHEDULE, x0, t, noise), t, torch.tensor(y), noise, SCHEDULE,
                       torch.tensor(prior), null_label=len(prior))


def terms(name, **options):
    return [{"name": name, "weight": 1.0, "options": get_loss(name).options(options)}]


# --- T2H --------------------------------------------------------------------------------------

def test_t2h_target_is_the_true_noise_when_the_gate_keeps_j_equal_i():
    # At t = T the posterior is near uniform, so draws leave i often; sample 0 is the only one of
    # the head class, so the gate sends it back to j = i on every draw: its target is its noise.
    b = noised([999, 999, 999, 999], [0, 1, 1, 1], [0.8, 0.2])
    moved = 0
    for seed in range(10):
        target = t2h_target(b, torch.Generator().manual_seed(seed), gate="t2h")
        assert torch.allclose(target[0], b.noise[0], atol=1e-5)
        moved += int(not torch.allclose(target[1:], b.noise[1:], atol=1e-4))
    assert moved > 0  # the tail samples do move: the check above is not vacuous
    # At t = 0 the posterior is sharp on i, so even the ungated draw keeps j = i.
    sharp = noised([0, 0, 0, 0], [1, 0, 1, 0], [0.5, 0.5])
    assert torch.allclose(t2h_target(sharp, torch.Generator().manual_seed(0), gate="any"), sharp.noise, atol=1e-3)
    assert torch.equal(t2h_target(b, torch.Generator(), gate="none"), b.noise)


def test_t2h_gate_blocks_transfer_to_rarer_classes():
    # A head sample (class 1, pi 0.8) may only move to images of classes at least as frequent.
    b = noised([999] * 6, [1, 1, 1, 0, 0, 0], [0.2, 0.8], seed=3)
    for seed in range(5):
        target = t2h_target(b, torch.Generator().manual_seed(seed), gate="t2h")
        abar = SCHEDULE.alphas_bar[b.t].float()[:, None, None, None]
        x0_used = (b.x_t - (1 - abar).sqrt() * target) / abar.sqrt()
        for i in range(3):  # head samples: the image used is one of the head images
            matches = [torch.allclose(x0_used[i], b.x0[j], atol=1e-3) for j in range(6)]
            assert any(matches[:3]) and not any(matches[3:])


def test_t2h_posterior_equals_a_direct_gaussian_computation():
    b = noised([10, 300, 700, 999], [0, 1, 0, 1], [0.5, 0.5], seed=1)
    weights = t2h_posterior(b)
    abar = SCHEDULE.alphas_bar[b.t]  # float64
    x_t, x0 = b.x_t.double().flatten(1), b.x0.double().flatten(1)
    # log N(x_t,i; sqrt(abar) x0_j, (1 - abar) I), normalised over j.
    log_density = torch.stack([
        torch.distributions.Normal(abar[i].sqrt() * x0, (1 - abar[i]).sqrt()).log_prob(x_t[i]).sum(dim=1)
        for i in range(len(b.t))])
    expected = torch.softmax(log_density, dim=1)
    assert torch.allclose(weights.double(), expected, atol=1e-5)
    assert torch.allclose(weights.sum(dim=1), torch.ones(4))


# --- CORAL --------------------------------------------------------------------------------------

def test_supervised_contrastive_by_hand_and_invariant_to_feature_scale():
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    loss, has_positive = supervised_contrastive(z, y, temperature=1.0)
    # anchor 0: positive 1 (cos 1), other 2 (cos 0): -log(e / (e + 1)); anchor 2 has no positive.
    expected = -math.log(math.e / (math.e + 1))
    assert torch.allclose(loss, torch.tensor([expected, expected, 0.0]))
    assert has_positive.tolist() == [True, True, False]
    z = torch.randn(8, 5)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 3])
    scaled, _ = supervised_contrastive(z * 37.0, y, 0.12)
    assert torch.allclose(supervised_contrastive(z, y, 0.12)[0], scaled, atol=1e-5)


def test_coral_weights_small_t_more_and_averages_over_anchors_with_a_positive():
    b = noised([0, 0, 999], [0, 0, 1], [0.5, 0.5])
    heads = torch.nn.ModuleDict({"coral_projection": torch.nn.Identity()})
    features = {"trained": torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])[:, :, None, None], "alt": None}
    loss = get_loss("coral")
    out = loss(b, None, None, loss.options({"temperature": 1.0, "time_temperature": 1.0}),
               features=features, heads=heads)
    s_bar = (2 * math.exp(1.0) + math.exp(1 - 999 / 1000)) / 3
    per_anchor = -math.log(math.e / (math.e + 1))
    # two valid anchors of three: each value is scaled by 3 / 2 so the batch mean is their mean.
    assert torch.allclose(out, torch.tensor([1.5, 1.5, 0.0]) * s_bar * per_anchor)


# --- CCUA -----------------------------------------------------------------------------------------

def test_ccua_alignment_vanishes_on_label_dropped_batches():
    b = noised([500, 800], [0, 1], [0.5, 0.5])
    eps, eps_u = torch.randn(2, 1, 4, 4), torch.randn(1, 2, 1, 4, 4)
    features = {"trained": None, "alt": torch.randn(1, 2, 3, 2, 2)}
    loss = get_loss("ccua")
    options = loss.options({"alpha": 0.0, "gamma": 1.0})
    dropped = loss(b, eps, eps_u, options, features=features, conditional=torch.zeros(2))
    assert torch.equal(dropped, torch.zeros(2))
    kept = loss(b, eps, eps_u, options, features=features, conditional=torch.ones(2))
    expected = torch.tensor([0.5, 0.8]) * ((eps - eps_u[0]) ** 2).flatten(1).mean(dim=1)
    assert torch.allclose(kept, expected)


def test_ccua_contrast_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits: self 1 / 0.5 = 2, other 0; -log(e^2 / (e^2 + 1))
    assert torch.allclose(self_infonce(h, 0.5), torch.full((2,), -math.log(math.exp(2) / (math.exp(2) + 1))))


# --- CM --------------------------------------------------------------------------------------------

def test_cm_class_coefficients_change_sign_where_the_formula_says():
    prior = torch.tensor([0.6, 0.3, 0.1])
    c = cm_class_coefficients(prior, w_con=1.0, w_div=0.2)
    inverse = torch.tensor([1 / 0.6, 1 / 0.3, 1 / 0.1])
    expected = prior - 0.2 * inverse / inverse.sum()
    assert torch.allclose(c, expected)
    # by hand: 1 / pi = [5/3, 10/3, 10], sum 15, so pi~ = [1/9, 2/9, 6/9]
    assert torch.allclose(c, torch.tensor([0.6 - 0.2 / 9, 0.3 - 0.4 / 9, 0.1 - 1.2 / 9]))
    assert (c > 0).tolist() == [True, True, False]
    # the sign flips at w_div = w_con pi_y / pi~_y: class 1 at 0.3 / (2/9) = 1.35
    assert cm_class_coefficients(prior, 1.0, 1.34)[1] > 0 > cm_class_coefficients(prior, 1.0, 1.36)[1]


def test_cm_loss_by_hand():
    b = noised([100, 100], [0, 2], [0.6, 0.3, 0.1])
    eps, base, target = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    loss = get_loss("cm")
    out = loss(b, eps, None, loss.options({}), target=target, eps_base=base)
    assert torch.allclose(out, 1.0 + 3 * torch.tensor([0.6 - 0.2 / 9, 0.1 - 1.2 / 9]))


def test_lowrank_branch_starts_at_zero_effect_with_gradient_only_into_b():
    torch.manual_seed(0)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=3, num_timesteps=100,
                       lowrank_ratio=0.1)
    branches = lowrank_modules(model)
    # conv1 and conv2 of the 3 up-path residual blocks of 2 levels (2 x 2) plus one up-sampling conv
    assert len(branches) == 2 * 2 * 2 + 1
    assert all(isinstance(getattr(m, "base"), torch.nn.Conv2d) for m in branches)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1, 20, 50, 99]), torch.tensor([0, 1, 2, 3])
    out = model(x, t, y)
    with lowrank_disabled(model):
        base = model(x, t, y)
    assert torch.equal(out, base)
    out.pow(2).sum().backward()
    assert all(float(m.lowrank_a.grad.abs().max()) == 0 for m in branches)
    assert all(float(m.lowrank_b.grad.abs().max()) > 0 for m in branches)


def test_lowrank_rank_rule():
    assert lowrank_rank(0.1, 128, 256) == 12
    assert lowrank_rank(0.1, 8, 16) == 1
    conv = LowRankConv2d(torch.nn.Conv2d(32, 16, 3, padding=1), 0.1)
    assert conv.lowrank_a.shape == (1 * 3, 32 * 3) and conv.lowrank_b.shape == (16 * 3, 1 * 3)


def test_lowrank_branch_adds_b_a_reshaped_to_the_kernel_as_cms_code_does():
    """CM's Conv2d_LoRA (loralib's convolution LoRA): conv with W + (B A).view(W.shape), A of
    Kaiming-normal(a = sqrt 5) scale; off, the conv with W alone."""
    torch.manual_seed(0)
    base = torch.nn.Conv2d(12, 8, 3, padding=1)
    conv = LowRankConv2d(base, 0.25)  # r = 2
    with torch.no_grad():
        conv.lowrank_b.normal_()
    x = torch.randn(2, 12, 5, 5)
    delta = (conv.lowrank_b @ conv.lowrank_a).reshape(8, 12, 3, 3)
    assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, base.weight + delta, base.bias, padding=1), atol=1e-5)
    conv.enabled = False
    assert torch.equal(conv(x), base(x))
    big = LowRankConv2d(torch.nn.Conv2d(512, 256, 3, padding=1), 0.1)  # r 25: A is 75 x 1536
    assert float(big.lowrank_a.detach().std()) == pytest.approx((1 / 3) ** 0.5 / 1536 ** 0.5, rel=0.02)


def test_the_paper_unets_lowrank_branch_has_cms_parameter_count():
    """27 sites on the CIFAR UNet's up path at ratio 0.1: sum of r k^2 (c_in + c_out) = 3,129,984,
    the count of CM's Conv2d_LoRA factors (a rank-r conv pair gave 1,981,056)."""
    from cbdm.networks import UNetConfig

    model = build_unet({k: v for k, v in asdict(UNetConfig(3, 32, 10)).items()
                        if k in ("base_channels", "channel_mult", "attention_levels", "num_res_blocks", "dropout",
                                 "norm_groups")}, image_channels=3, image_size=32, num_classes=10,
                       num_timesteps=1000, lowrank_ratio=0.1)
    branches = lowrank_modules(model)
    assert len(branches) == 27
    assert sum(m.lowrank_a.numel() + m.lowrank_b.numel() for m in branches) == 3_129_984


# --- the objective, the model file, the data policy ------------------------------------------------

@pytest.mark.parametrize("name", ["t2h", "coral", "ccua", "cm"])
def test_objective_runs_each_field_loss_and_gradients_reach_the_extras(name):
    torch.manual_seed(0)
    variant = terms(name, **({"projection_dim": 4} if name == "coral" else {}))
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=3, num_timesteps=100,
                       **network_extras(variant))
    objective = Objective(variant, NoiseSchedule.linear(100, 1e-4, 0.02), torch.tensor([0.6, 0.3, 0.1]),
                          model.null_label, {"policy": "batch", "probability": 0.0}, batched_forward=True)
    x0, y = torch.randn(12, 1, 8, 8), torch.tensor([0, 1, 2] * 4)
    loss, parts = objective(model, x0, y, torch.Generator().manual_seed(1), torch.Generator().manual_seed(1))
    loss.backward()
    assert math.isfinite(float(loss.detach())) and set(parts) == {name}
    if name == "coral":
        assert model.heads["coral_projection"].weight.grad.abs().sum() > 0
    if name == "cm":
        assert all(m.lowrank_b.grad.abs().sum() > 0 for m in lowrank_modules(model))


def test_model_file_round_trips_heads_and_lowrank_weights(tmp_path):
    torch.manual_seed(0)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=3, num_timesteps=100,
                       heads=(("coral_projection", 4),), lowrank_ratio=0.1)
    with torch.no_grad():
        for m in lowrank_modules(model):
            m.lowrank_b.normal_()
    identity = {"variant": "cm", "dataset": "digits", "imbalance_factor": "10", "seed": 0, "training_digest": "t",
                "data_digest": "d"}
    save_model(tmp_path / "model.pt", model, {"num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02}, {},
               identity=identity)
    loaded, _, _ = load_model(tmp_path / "model.pt")
    assert loaded.cfg == model.cfg
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert any("coral_projection" in k for k in loaded.state_dict())
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([5, 50]), torch.tensor([0, 1])
    model.eval()
    assert torch.equal(loaded(x, t, y), model(x, t, y))
    with lowrank_disabled(loaded):
        assert not torch.equal(loaded(x, t, y), model(x, t, y))  # sampling uses the branch


def test_class_resampling_follows_the_exponential_profile_over_class_ranks():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 20)  # ranks: class 0 -> 0, 2 -> 1, 1 -> 2
    weights = resample_class_weights(torch.bincount(labels), 10.0)
    assert torch.allclose(weights, torch.tensor([1.0, 0.1, 10 ** -0.5], dtype=torch.float64))
    idx = draw_batch_indices({"kind": "class_resample", "imbalance_factor": 10.0}, labels, 20000,
                             torch.Generator().manual_seed(0))
    share = torch.bincount(labels[idx], minlength=3).double() / len(idx)
    assert torch.allclose(share, weights / weights.sum(), atol=0.01)
    assert len(set(idx[labels[idx] == 1].tolist())) == 5  # every image of the rare class is reached
    iid = draw_batch_indices({"kind": "iid"}, labels, 7, torch.Generator().manual_seed(0))
    assert torch.equal(iid, torch.randint(75, (7,), generator=torch.Generator().manual_seed(0)))


def test_a_kept_batch_sampler_draws_what_a_fresh_one_draws_each_step():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 20)
    policy = {"kind": "class_resample", "imbalance_factor": 10.0}
    kept, a, b = batch_sampler(policy, labels), torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for _ in range(5):
        assert torch.equal(kept(16, a), draw_batch_indices(policy, labels, 16, b))
    with pytest.raises(ValueError, match="unknown training.data_policy.kind 'balanced'"):
        batch_sampler({"kind": "balanced"}, labels)


def test_the_objective_hooks_the_middle_block_once_and_its_steps_equal_a_fresh_objectives():
    # CORAL needs the middle block's outputs, CM the base pass without the low-rank branches: an
    # objective kept over steps (one hook, branches collected once) gives each step's loss and
    # gradients exactly as a new objective per step does.
    variant = terms("coral", projection_dim=4) + terms("cm")
    torch.manual_seed(0)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=3, num_timesteps=100,
                       **network_extras(variant))
    args = (variant, NoiseSchedule.linear(100, 1e-4, 0.02), torch.tensor([0.6, 0.3, 0.1]), model.null_label,
            {"policy": "sample", "probability": 0.2}, False)
    kept = Objective(*args)
    x0, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2] * 2)
    for step in range(3):
        results = []
        for objective in (kept, Objective(*args)):
            model.zero_grad()
            loss, parts = objective(model, x0, y, torch.Generator().manual_seed(step), torch.Generator().manual_seed(9))
            loss.backward()
            results.append((loss.detach(), parts, [p.grad.clone() for p in model.parameters()]))
        (loss_a, parts_a, grads_a), (loss_b, parts_b, grads_b) = results
        assert torch.equal(loss_a, loss_b) and parts_a.keys() == parts_b.keys() == {"coral", "cm"}
        assert all(torch.equal(g, h) for g, h in zip(grads_a, grads_b))
    del objective, results  # the last fresh objective: its hook goes with it
    assert len(model.middle[-1]._forward_hooks) == 1  # the kept objective's one hook, for all its steps
    del kept
    assert not model.middle[-1]._forward_hooks
    assert all(m.enabled for m in lowrank_modules(model))  # the base pass switched them back on


@pytest.mark.slow
def test_variant_benchmark_times_every_field_variant_and_counts_its_forward_passes(repo, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "variants.json"
    result = subprocess.run([sys.executable, str(repo / "benchmarks/bench_variants.py"), "--size", "small", "--field",
                             "--device", "cpu", "--threads", "1", "--blocks", "2", "--steps", "1", "--warmup", "0",
                             "--batch", "8", "--json", str(out)], capture_output=True, text=True, timeout=600,
                            cwd=repo / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {row["path"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["ddpm", "cbdm", "overlap", "cbdm_overlap", "t2h", "coral", "ccua", "cm"]
    assert rows["ddpm"]["cost_vs_ddpm"] == 1.0 and all(len(r["seconds"]) == 2 for r in rows.values())
    # batched label sets: one call; CM's base path is a second call; images = batch x label sets
    images = {name: (row["forward_calls"], row["forward_images"] // 8) for name, row in rows.items()}
    assert images == {"ddpm": (1, 1), "cbdm": (1, 2), "overlap": (1, 2), "cbdm_overlap": (1, 3), "t2h": (1, 1),
                      "coral": (1, 1), "ccua": (1, 2), "cm": (2, 2)}


@pytest.mark.slow
def test_the_tiny_field_suite_runs_end_to_end_with_every_method_under_both_protocols(tmp_path, repo):
    import pandas as pd

    from helpers import run_workflow

    run_workflow(repo, tmp_path, repo / "tests/data/tiny-field.yaml")
    report = tmp_path / "results/tiny-field/report/digits-IF5"
    table = pd.read_csv(report / "table.csv")
    field = ["ddpm", "t2h", "coral", "ccua", "cm"]
    fid = table[(table["scope"] == "all") & (table["metric"] == "fid")]
    for protocol in ("fair", "published"):
        assert sorted(fid[fid["protocol"] == protocol]["variant"]) == sorted(field), protocol
    # CM sampled under `published` with that protocol's own guidance, in its own sample set.
    assert set(fid[(fid["protocol"] == "published") & (fid["variant"] == "cm")]["guidance"]) == {1.5}
    results = tmp_path / "results/tiny-field"
    assert (results / "samples/digits/IF5/cm/seed0/w1.5-s0/uniform_random-60-published.npz").exists()
    model, _, payload = load_model(results / "models/digits/IF5/coral/seed0/model.pt")
    assert "coral_projection" in model.heads and payload["unet"]["heads"] == [["coral_projection", 8]]
    cm, _, _ = load_model(results / "models/digits/IF5/cm/seed0/model.pt")
    assert lowrank_modules(cm) and any(m.lowrank_b.detach().abs().sum() > 0 for m in lowrank_modules(cm))
    assert re.search(r"^\| cm +\|", (report / "table.md").read_text(), re.M)


# --- config: protocol sampling overrides, the data policy ------------------------------------------

def field_config(**evaluation):
    from helpers import minimal_config
    return minimal_config(
        variants={"cm": {"losses": [{"name": "cm"}], "training": {"data_policy": {"kind": "class_resample"}}}},
        evaluation=evaluation)


def test_a_protocol_overrides_only_the_variants_it_names():
    from cbdm.config import variant_settings

    c = field_config(protocols={"fair": {}, "published": {"sampling": {"cm": {"sampler": "ddim", "steps": 50,
                                                                             "guidance": 1.5}}}})
    cm, ddpm = variant_settings(c, "cm"), variant_settings(c, "ddpm")
    assert cm["protocol_sampling"]["published"]["steps"] == 50 and cm["sampling"]["steps"] == 1000
    assert cm["protocol_sampling"]["published"]["seeds"] == cm["sampling"]["seeds"]  # merged into its own
    assert ddpm["protocol_sampling"] == {}
    assert cm["training"]["data_policy"] == {"kind": "class_resample", "imbalance_factor": 10}


@pytest.mark.parametrize("override, message", [
    ({"cn": {"steps": 50}}, r"evaluation.protocols.published.sampling names unknown variant\(s\) \['cn'\]"),
    ({"cm": {"sampler": "dpm"}}, "evaluation.protocols.published.sampling.cm.sampler: 'dpm' is not one of"),
    ({"cm": {"steps": 50}}, "evaluation.protocols.published.sampling.cm: ancestral sampling takes every one"),
])
def test_bad_protocol_overrides_name_the_key_and_the_fix(override, message):
    from cbdm.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        field_config(protocols={"published": {"sampling": override}})
