"""The reference initialisation and the null-label options of the UNet (network.init, network.null_label)."""
import copy
import math

import pytest
import torch
import yaml
from torch import nn

from cbdm.io import InputError
from cbdm.modelfile import load_model, save_model
from cbdm.networks import ResidualBlock, SelfAttention, build_unet, count_parameters

DIFFUSION = {"num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02}
IDENTITY = {"variant": "v", "dataset": "digits", "imbalance_factor": "10", "seed": 0, "training_digest": "t",
            "data_digest": "d"}

NET = dict(base_channels=16, channel_mult=[1, 2], attention_levels=[1], num_res_blocks=1, dropout=0.0,
           norm_groups=4)


def unet(**options):
    torch.manual_seed(0)
    return build_unet({**NET, **options}, image_channels=3, image_size=8, num_classes=5, num_timesteps=100).eval()


def lifted(model):
    """The model with every weight perturbed, so that the near-zero output layers pass the label on."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def xavier_bound(weight: torch.Tensor) -> float:
    receptive = weight[0, 0].numel() if weight.ndim > 2 else 1
    return math.sqrt(6.0 / ((weight.shape[0] + weight.shape[1]) * receptive))


def layers_by_kind(model):
    """(name, layer, gain, parts): parts = the weight slices the reference treats as separate layers."""
    near_zero = {id(model.head[-1])}
    qkv = set()
    for m in model.modules():
        near_zero |= {id(m.conv2)} if isinstance(m, ResidualBlock) else set()
        if isinstance(m, SelfAttention):
            near_zero.add(id(m.out))
            qkv.add(id(m.qkv))
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parts = m.weight.detach().chunk(3 if id(m) in qkv else 1, dim=0)
            yield name, m, (1e-5 if id(m) in near_zero else 1.0), parts


def test_reference_init_is_xavier_uniform_with_zero_biases_per_layer():
    model = unet(init="reference")
    checked = 0
    for name, layer, gain, parts in layers_by_kind(model):
        assert torch.count_nonzero(layer.bias) == 0, name
        for part in parts:
            bound = gain * xavier_bound(part)
            assert part.abs().max() <= bound * (1 + 1e-6), name
            # A uniform(-b, b) weight has sd b / sqrt(3); the smallest layers hold 48 values.
            assert part.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.25), name
            checked += 1
    assert checked > 20


def test_reference_init_treats_q_k_v_as_three_layers():
    model = unet(init="reference")
    qkv = next(m.qkv for m in model.modules() if isinstance(m, SelfAttention))
    c = qkv.in_channels
    # One xavier fan over the whole 3C x C weight would bound it by sqrt(6 / 4C), not sqrt(6 / 2C).
    assert qkv.weight.abs().max() > math.sqrt(6.0 / (4 * c))
    assert qkv.weight.abs().max() <= math.sqrt(6.0 / (2 * c))


def test_pytorch_init_keeps_the_defaults():
    model = unet(init="pytorch")
    assert torch.count_nonzero(model.stem.bias) > 0
    assert model.stem.weight.abs().max() <= 1 / math.sqrt(3 * 9) + 1e-6  # kaiming-uniform(a=sqrt 5) bound


def test_zero_null_label_adds_no_label_embedding():
    model = lifted(unet(null_label="zero"))
    assert model.label_embedding.num_embeddings == 5
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([3, 10, 50, 99])
    null = torch.full((4,), model.null_label)
    without = copy.deepcopy(model)
    with torch.no_grad():
        without.label_embedding.weight.zero_()  # any label now adds a zero vector
        expected = without(x, t, torch.zeros(4, dtype=torch.long))
        got = model(x, t, null)
        conditional = model(x, t, torch.tensor([0, 1, 2, 4]))
    assert torch.equal(got, expected)
    assert not torch.allclose(conditional, got)


def test_learned_null_label_is_an_extra_row():
    model = lifted(unet(null_label="learned"))
    assert model.label_embedding.num_embeddings == 6
    x, t, null = torch.randn(2, 3, 8, 8), torch.tensor([5, 60]), torch.full((2,), 5)
    with torch.no_grad():
        before = model(x, t, null)
        model.label_embedding.weight[5].add_(1.0)
        assert not torch.allclose(model(x, t, null), before)


def test_paper_unet_parameter_count(repo):
    """35.75 M with a learned null row; the reference's zero null label has one 512-d row less."""
    network = yaml.safe_load((repo / "config/paper/cifar10-lt.yaml").read_text())["network"]
    counts = {}
    for null in ("learned", "zero"):
        model = build_unet({**network, "null_label": null}, image_channels=3, image_size=32, num_classes=10,
                           num_timesteps=1000)
        counts[null] = count_parameters(model)
    assert round(counts["learned"] / 1e6, 2) == 35.75
    assert counts["learned"] - counts["zero"] == 4 * network["base_channels"]


def test_model_file_carries_the_options_and_old_files_load(tmp_path):
    model = unet(init="reference", null_label="zero")
    save_model(tmp_path / "new.pt", model, DIFFUSION, {}, identity=IDENTITY)
    loaded, _, payload = load_model(tmp_path / "new.pt")
    assert payload["unet"]["null_label"] == "zero" and loaded.label_embedding.num_embeddings == 5
    # A file written before the fields existed: learned null row, PyTorch init.
    old = unet(null_label="learned", init="pytorch")
    save_model(tmp_path / "old.pt", old, DIFFUSION, {}, identity=IDENTITY)
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    del payload["unet"]["init"], payload["unet"]["null_label"]
    torch.save(payload, tmp_path / "old.pt")
    loaded, _, _ = load_model(tmp_path / "old.pt")
    x, t, null = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.full((2,), 5)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, null), old(x, t, null))


def test_a_model_file_with_an_unknown_null_label_is_refused_by_name(tmp_path):
    model = unet()
    save_model(tmp_path / "m.pt", model, DIFFUSION, {}, identity=IDENTITY)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["unet"]["null_label"] = "none"
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(InputError, match="null_label='none'"):
        load_model(tmp_path / "m.pt")
