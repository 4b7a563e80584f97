"""What a CPU run cannot show of the CUDA paths: a tensor made on the CPU meeting one on the GPU.
On a fake CUDA device (torch's FakeTensorMode: shapes, dtypes and devices, no values), under a
GPU's bf16 autocast (benchmarks/conv_layouts.py's helpers), an operation mixing devices fails as
it would on a GPU. A fake device has no values, so the few places that read one (the label-drop
coin, drawn on the CPU; a class count's size) run on real values or are left out, and the
autograd engine, which needs a real GPU for CUDA tensors, is stood in for by zero gradients."""
import contextlib
import copy
import dataclasses
import functools

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

import cbdm.samplers
import cbdm.train
from cbdm.acceleration import to_layout
from cbdm.dataset import images_to_model_range
from cbdm.diffusion import NoiseSchedule
from cbdm.objective import Objective, network_extras

# Deep-copying the fake model (the EMA copy) looks at its parameters' data pointers, which fake ones lack.
pytestmark = pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")
CUDA = torch.device("cuda")
CONFIG = "config/paper/cifar100-lt.yaml"  # the paper config with every variant
VARIANTS = ["ddpm", "cbdm", "overlap", "cbdm_overlap", "t2h", "coral", "ccua", "cm"]


@pytest.fixture
def gpu(repo, monkeypatch):
    """(harness, conv_layouts) with the trainer's autocast switched to a GPU's and values read for real."""
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    monkeypatch.chdir(repo)
    import conv_layouts

    import harness

    monkeypatch.setattr(cbdm.train, "autocast", lambda device, precision: conv_layouts.gpu_autocast()
                        if precision == "bf16" else contextlib.nullcontext())
    coin = Objective._conditional_mask

    def real_coin(self, *args):
        with unset_fake_temporarily() if self.drop_policy == "batch" else contextlib.nullcontext():
            return coin(self, *args)

    monkeypatch.setattr(Objective, "_conditional_mask", real_coin)
    return harness, conv_layouts


def gpu_training_step(harness, conv_layouts, monkeypatch, variant: str, reference: bool, label_drop: dict | None):
    """Two steps of cbdm.train.TrainStep on the fake GPU (`label_drop` None: the config's); the
    loss and its parts of the second."""
    config, settings = harness.variant_settings(CONFIG, variant, reference=reference)
    cfg = settings["training"]
    # Eager, with the compiled path's static shapes where it compiles (the compiled graph is inductor's);
    # 'iid' batches (class_resample sizes its tables by class counts).
    static_shapes = cfg["compile"]
    cfg.update(compile=False, batch_size=8, label_drop=label_drop or cfg["label_drop"], data_policy={"kind": "iid"})
    model = harness.build_model(config, "ci", "cpu", **network_extras(settings["losses"]))
    if cfg["channels_last"]:  # a fake parameter cannot be swapped for another layout: the real one takes it
        model.to(memory_format=torch.channels_last)
    prepare = cbdm.train.prepare_network
    monkeypatch.setattr(cbdm.train, "prepare_network", lambda m, **kw: prepare(m, **{**kw, "channels_last": False}))
    channels, side, classes = harness.image_shape(config, "ci")
    images, labels = harness.class_structured_images(4 * classes, channels, side, classes)
    prior = (torch.bincount(labels, minlength=classes).double() / len(labels)).float()
    with conv_layouts.cudnn_on_fake_gpu(), FakeTensorMode(allow_non_fake_inputs=True):
        model.to(CUDA)
        d = config["diffusion"]
        schedule = NoiseSchedule.linear(d["num_timesteps"], d["beta_start"], d["beta_end"]).to(CUDA)
        objective = Objective(settings["losses"], schedule, prior.to(CUDA), model.null_label, cfg["label_drop"],
                              cfg["batched_forward"], static_shapes=static_shapes)
        step = cbdm.train.TrainStep(model, copy.deepcopy(model).requires_grad_(False), objective, cfg, CUDA)

        def zero_gradients(loss, *args, **kwargs):
            assert (loss.device.type, loss.dtype) == ("cuda", torch.float32)
            for p in step.params:
                p.grad = torch.zeros_like(p)

        monkeypatch.setattr(torch.Tensor, "backward", zero_gradients)
        x, y = to_layout(images_to_model_range(images).to(CUDA), cfg["channels_last"]), labels.to(CUDA)
        for i in range(2):  # the second step finds the optimizer's state (fused Adam's on the device)
            _, loss, parts = step(i, x, y, torch.Generator().manual_seed(i), torch.Generator().manual_seed(i))
    return loss, parts


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("reference", [False, True], ids=["fast", "reference"])
def test_every_variants_training_step_keeps_to_the_gpu(gpu, monkeypatch, variant, reference):
    # the fast path with a coin per image, drawn on the device; the reference with the config's coin per batch
    drop = None if reference else {"policy": "sample", "probability": 0.5}
    loss, parts = gpu_training_step(*gpu, monkeypatch, variant, reference, drop)
    assert {(v.device.type, v.dtype) for v in [loss, *parts.values()]} == {("cuda", torch.float32)}


def test_an_eager_step_whose_batch_loses_its_labels_keeps_to_the_gpu(gpu, monkeypatch):
    # the eager path skips the conditional-only terms' passes and puts zeros in their place
    loss, parts = gpu_training_step(*gpu, monkeypatch, "cbdm_overlap", True, {"policy": "batch", "probability": 1.0})
    assert {(v.device.type, v.dtype) for v in [loss, *parts.values()]} == {("cuda", torch.float32)}


def test_a_cpu_tensor_in_the_step_is_caught(gpu, monkeypatch, loss_registry):
    # The check can fail: CBDM's target labels moved to the CPU meet the GPU's batch.
    term = loss_registry["cbdm"]
    moved = functools.wraps(term.draw_labels)(lambda *a, **k: term.draw_labels(*a, **k).cpu())
    loss_registry["cbdm"] = dataclasses.replace(term, draw_labels=moved)
    with pytest.raises(RuntimeError, match="same device"):
        gpu_training_step(*gpu, monkeypatch, "cbdm", False, {"policy": "batch", "probability": 0.0})


@pytest.mark.parametrize("variant", ["cbdm", "cm"])
def test_the_samplers_keep_to_the_gpu(gpu, monkeypatch, variant):
    harness, conv_layouts = gpu
    config, settings = harness.variant_settings(CONFIG, variant, reference=False)
    model = harness.build_model(config, "ci", "cpu", **network_extras(settings["losses"])).eval()
    cpu_generator, timesteps = torch.Generator, cbdm.samplers.ddim_timesteps
    monkeypatch.setattr(torch, "Generator", lambda device=None: cpu_generator())  # a CUDA one needs a GPU

    def real_timesteps(*args):  # a list of ints made on the CPU from its arguments' values
        with unset_fake_temporarily():
            return timesteps(*args)

    monkeypatch.setattr(cbdm.samplers, "ddim_timesteps", real_timesteps)
    with conv_layouts.cudnn_on_fake_gpu(), FakeTensorMode(allow_non_fake_inputs=True):
        model.to(CUDA)
        schedule, labels = NoiseSchedule.linear(5, 1e-4, 0.02).to(CUDA), torch.arange(4, device=CUDA)
        for batched in (True, False):
            with conv_layouts.gpu_autocast():
                images = [cbdm.samplers.sample_ancestral(model, schedule, labels, range(4), guidance=1.5,
                                                         batched_guidance=batched),
                          cbdm.samplers.sample_ddim(model, schedule, labels, range(4), guidance=1.5, steps=3,
                                                    eta=0.5, batched_guidance=batched)]
            assert {(x.device.type, x.dtype, x.shape) for x in images} == {("cuda", torch.float32, (4, 3, 8, 8))}
            assert cbdm.samplers.to_uint8(images[0]).device.type == "cuda"
