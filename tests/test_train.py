import json
import re

import numpy as np
import pytest
import torch

from cbdm.dataset import build_longtail, data_digest, data_origin, prepare_source
from cbdm.diffusion import NoiseSchedule, q_sample
from cbdm.fingerprint import ORIGIN
from cbdm.io import InputError, read_npz
from cbdm.losses import NoisedBatch, register_loss
from cbdm.modelfile import load_model, save_checkpoint, save_model
from cbdm.networks import build_unet
from cbdm.objective import Objective, network_extras
from cbdm.train import (
    build_model,
    load_training_images,
    process_rng_state,
    restore_process_rng_state,
    setup_training,
    train,
)

from helpers import training_settings

NETWORK = {"base_channels": 8, "channel_mult": [1, 2], "attention_levels": [], "num_res_blocks": 1,
           "dropout": 0.0, "norm_groups": 4}
DIFFUSION = {"num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02}
LOSSES = [{"name": "eps_mse"}, {"name": "cbdm"},
          {"name": "overlap_hinge", "weight": 0.1, "margin": 0.1, "num_negatives": 2}]
TERMS = training_settings(LOSSES)["losses"]


def nan_loss(batch, eps, eps_alt):
    """Always NaN: for the non-finite-loss test (registered only inside it)."""
    return eps.flatten(1).mean(1) * float("nan")


def infinite_gradient(batch, eps, eps_alt):
    """A loss that is always finite (0, NaN weights included) but whose first gradient is infinite:
    the weights turn NaN while every logged loss stays 0 (registered only inside its test)."""
    x = eps.flatten(1).mean(1)
    return torch.sqrt(x - x.detach()).nan_to_num(0.0)


def settings(steps=40, losses=LOSSES, **training):
    defaults = dict(batch_size=16, lr=2e-3, warmup_steps=5, ema_decay=0.9, hflip=False,
                    label_drop={"policy": "sample", "probability": 0.2}, checkpoint_every=10, log_every=5)
    return training_settings(losses, steps=steps, **{**defaults, **training})


@pytest.fixture(scope="module")
def digits_lt(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    prepare_source({"source": "sklearn_digits", "heldout_per_class": 20, "split_seed": 0},
                   d / "source.npz", d / "source.json")
    build_longtail({"profile": "exponential", "n_max": 40, "seed": 0}, 5.0, d / "source.npz",
                   d / "source.json", d / "train.npz", d / "manifest.json")
    return d / "train.npz"


def run(tmp, train_npz, s, tag):
    train(s, network=NETWORK, diffusion=DIFFUSION, train_npz=str(train_npz), num_classes=10, seed=3,
          device="cpu", out_model=str(tmp / f"{tag}.pt"), out_log=str(tmp / f"{tag}.csv"),
          checkpoint_path=str(tmp / f"{tag}.ckpt"))
    return load_model(tmp / f"{tag}.pt")[0].state_dict()


def test_training_writes_the_model_and_the_loss_log(tmp_path, digits_lt):
    state = run(tmp_path, digits_lt, settings(steps=10), "a")
    assert len(state) > 0 and not (tmp_path / "a.ckpt").exists()  # a model with weights; no leftover checkpoint
    log = (tmp_path / "a.csv").read_text().splitlines()
    assert log[0] == "step,lr,loss,eps_mse,cbdm,overlap_hinge" and len(log) == 3


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path, digits_lt, capsys):
    save_checkpoint(tmp_path / "b.ckpt", {"fingerprint": "someone else", "step": 5})
    run(tmp_path, digits_lt, settings(steps=5), "b")
    assert "belongs to other settings; starting from step 0" in capsys.readouterr().out


def test_a_corrupt_checkpoint_names_the_fix(tmp_path, digits_lt):
    (tmp_path / "c.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="delete the checkpoint"):
        run(tmp_path, digits_lt, settings(steps=5), "c")


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path, digits_lt, loss_registry):
    register_loss("test_nan", conditional_only=False)(nan_loss)
    with pytest.raises(FloatingPointError, match="non-finite loss at step 5.*no checkpoint exists yet, so "
                                                 "running it again starts over from step 0"):
        run(tmp_path, digits_lt, settings(steps=10, losses=[{"name": "test_nan"}]), "d")
    assert not (tmp_path / "d.pt").exists()


def test_weights_spoilt_at_a_finite_loss_stop_training_before_a_checkpoint_holds_them(tmp_path, digits_lt,
                                                                                        loss_registry):
    register_loss("test_inf_gradient", conditional_only=False)(infinite_gradient)
    with pytest.raises(FloatingPointError, match="non-finite weights after step 10, so the run did not write a "
                                                 "checkpoint.*no checkpoint exists yet"):
        run(tmp_path, digits_lt, settings(steps=20, losses=[{"name": "test_inf_gradient"}]), "w")
    assert not (tmp_path / "w.ckpt").exists() and not (tmp_path / "w.pt").exists()


def test_model_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_model(tmp_path / "bad.pt")
    torch.save({"format": "something/else"}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a cbdm.model/1 file"):
        load_model(tmp_path / "other.pt")


@pytest.mark.parametrize("policy", ["batch", "sample"])
def test_one_batched_forward_gives_the_loss_of_separate_forwards(policy):
    torch.manual_seed(0)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=10, num_timesteps=100)
    schedule = NoiseSchedule.linear(100, 1e-4, 0.02)
    prior = torch.full((10,), 0.1)
    x0, y = torch.randn(12, 1, 8, 8), torch.randint(0, 10, (12,))
    losses = []
    for batched in (True, False):
        objective = Objective(TERMS, schedule, prior, model.null_label,
                              {"policy": policy, "probability": 0.3}, batched)
        loss, parts = objective(model, x0, y, torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))
        losses.append((loss, parts))
    assert torch.allclose(losses[0][0], losses[1][0], rtol=1e-5)
    assert losses[0][1].keys() == losses[1][1].keys() == {"eps_mse", "cbdm", "overlap_hinge"}


def coin_seed(drop: bool, probability: float) -> int:
    """A seed of the CPU coin generator whose first draw drops (or keeps) the batch's labels."""
    return next(s for s in range(1000)
                if bool(torch.rand((), generator=torch.Generator().manual_seed(s)) < probability) == drop)


def drop_objective(batched: bool, static_shapes: bool = True, terms=TERMS):
    torch.manual_seed(0)
    model = build_unet(NETWORK, image_channels=1, image_size=8, num_classes=10, num_timesteps=100,
                       **network_extras(terms))
    with torch.no_grad():  # move off the near-zero initialisation, so that the predictions matter
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    objective = Objective(terms, NoiseSchedule.linear(100, 1e-4, 0.02), torch.full((10,), 0.1),
                          model.null_label, {"policy": "batch", "probability": 0.1}, batched, static_shapes)
    return model, objective


def noised(objective, x0, y, generator):
    """The batch the objective draws first (timesteps, then noise), from the same generator."""
    t = torch.randint(100, (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return NoisedBatch(x0, q_sample(objective.schedule, x0, t, noise), t, y, noise, objective.schedule,
                       objective.class_prior)


def test_a_dropped_batch_masks_the_conditional_terms_at_the_same_shapes():
    model, objective = drop_objective(batched=True)
    shapes = []

    def network(x, t, labels):
        shapes.append((tuple(x.shape), tuple(t.shape), tuple(labels.shape)))
        return model(x, t, labels)

    x0, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    for drop in (False, True):
        loss, parts = objective(network, x0, y, torch.Generator().manual_seed(1),
                                torch.Generator().manual_seed(coin_seed(drop, 0.1)))
    assert shapes[0] == shapes[1] == ((24, 1, 8, 8), (24,), (24,))  # y, y' (cbdm), two negatives
    assert parts.keys() == {"eps_mse", "cbdm", "overlap_hinge"}
    assert parts["cbdm"] == 0 and parts["overlap_hinge"] == 0 and torch.equal(loss, parts["eps_mse"])


def shape_recorder(model, shapes):
    def network(x, t, labels):
        shapes.append(tuple(x.shape))
        return model(x, t, labels)
    return network


@pytest.mark.parametrize("drop", [True, False])
def test_the_eager_objective_skips_only_the_passes_a_dropped_batch_multiplies_by_zero(drop):
    """Without static shapes a dropped batch runs the trained pass alone, with the loss, the
    gradients and the random draws of the static objective; a kept batch runs every pass."""
    x0, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    runs = {}
    for static in (True, False):
        model, objective = drop_objective(batched=True, static_shapes=static)
        shapes, generator = [], torch.Generator().manual_seed(1)
        loss, parts = objective(shape_recorder(model, shapes), x0, y, generator,
                                torch.Generator().manual_seed(coin_seed(drop, 0.1)))
        loss.backward()
        runs[static] = (shapes, loss, parts, [p.grad for p in model.parameters()], generator.get_state())
    (static_shapes, *static_run), (eager_shapes, *eager_run) = runs[True], runs[False]
    assert static_shapes == [(24, 1, 8, 8)]
    assert eager_shapes == ([(6, 1, 8, 8)] if drop else [(24, 1, 8, 8)])
    assert eager_run[1].keys() == static_run[1].keys()
    for name, value in eager_run[1].items():  # the skipped terms are 0, as the masked ones
        static_value = static_run[1][name]
        assert (value == 0) == (static_value == 0) and value.item() == pytest.approx(static_value.item(), rel=1e-6)
    assert eager_run[0].item() == pytest.approx(static_run[0].item(), rel=1e-6)
    for eager_grad, static_grad in zip(eager_run[2], static_run[2]):
        assert torch.allclose(eager_grad, static_grad, rtol=1e-4, atol=1e-7)
    assert torch.equal(eager_run[3], static_run[3])  # the next step draws what it would have drawn


def test_a_dropped_batch_still_runs_a_term_whose_heads_would_lose_their_gradient():
    terms = training_settings([{"name": "eps_mse"}, {"name": "coral"}])["losses"]
    model, objective = drop_objective(batched=True, static_shapes=False, terms=terms)
    loss, _ = objective(model, torch.randn(6, 1, 8, 8), torch.arange(6), torch.Generator().manual_seed(1),
                        torch.Generator().manual_seed(coin_seed(True, 0.1)))
    loss.backward()
    assert objective.terms[1].loss.conditional_only and objective._skipped_terms(False) == set()
    heads = [p for name, p in model.named_parameters() if name.startswith("heads.")]
    assert heads and all(p.grad is not None for p in heads)  # zero, as Adam expects, not missing


def test_the_conditional_step_is_the_objective_assembled_by_hand_bit_for_bit():
    model, objective = drop_objective(batched=True)
    x0, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    loss, _ = objective(model, x0, y, torch.Generator().manual_seed(1),
                        torch.Generator().manual_seed(coin_seed(False, 0.1)))
    generator = torch.Generator().manual_seed(1)
    batch = noised(objective, x0, y, generator)
    alt = [term.loss.labels(batch, generator, term.options) for term in objective.terms[1:]]
    eps, eps_target, *eps_negatives = model(batch.x_t.repeat(4, 1, 1, 1), batch.t.repeat(4),
                                            torch.cat([y, alt[0][0], *alt[1]])).chunk(4)
    eps_alts = [None, eps_target[None], torch.stack(eps_negatives)]
    expected = sum(term.weight * term.loss(batch, eps, eps_alt, term.options).mean()
                   for term, eps_alt in zip(objective.terms, eps_alts))
    assert torch.equal(loss, expected)


@pytest.mark.parametrize("batched", [False, True])
def test_a_dropped_step_has_the_loss_of_the_null_label_prediction_alone(batched):
    """What the objective computed before every label set was evaluated on every step: the noise
    loss of the prediction under the null label, nothing else."""
    model, objective = drop_objective(batched)
    x0, y = torch.randn(6, 1, 8, 8), torch.arange(6)
    loss, _ = objective(model, x0, y, torch.Generator().manual_seed(1),
                        torch.Generator().manual_seed(coin_seed(True, 0.1)))
    batch = noised(objective, x0, y, torch.Generator().manual_seed(1))
    eps = model(batch.x_t, batch.t, torch.full_like(y, model.null_label))
    expected = objective.terms[0].weight * objective.terms[0].loss(batch, eps, None, {}).mean()
    if batched:  # the null-label rows ran in a batch four times larger: same values up to rounding
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    else:
        assert torch.equal(loss, expected)


def test_two_data_parallel_processes_take_the_steps_of_one(tmp_path, digits_lt):
    """DDP with gloo on the CPU: the same seed and global batch give the same weights."""
    one = run(tmp_path, digits_lt, settings(steps=20), "one")
    two = run(tmp_path, digits_lt, settings(steps=20, processes=2), "two")
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-6), name
    assert (tmp_path / "two.csv").read_text().splitlines()[0] == "step,lr,loss,eps_mse,cbdm,overlap_hinge"
    logged_one = np.loadtxt(tmp_path / "one.csv", delimiter=",", skiprows=1)
    logged_two = np.loadtxt(tmp_path / "two.csv", delimiter=",", skiprows=1)
    assert np.allclose(logged_one, logged_two, rtol=1e-4)  # the logged loss is the global one


def test_an_uneven_split_is_refused(tmp_path, digits_lt):
    with pytest.raises(ValueError, match="batch_size 16 is not a multiple of processes 3"):  # the config's check
        run(tmp_path, digits_lt, settings(steps=2, processes=3), "uneven")


def test_more_processes_than_visible_gpus_names_the_fix(tmp_path, digits_lt, monkeypatch):
    # Snakemake caps a job's `gpu` to the global limit (1 in the default profile), so a 2-process
    # job can start seeing one GPU; it must say how to give it more rather than fail in NCCL.
    monkeypatch.setattr("cbdm.train.resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="--resources gpu=N"):
        run(tmp_path, digits_lt, settings(steps=2, processes=2), "short")


def fresh_state(s: dict, train_npz):
    """A CPU training state of settings `s` at step 0, seed 3."""
    images, labels = load_training_images(str(train_npz), 10, torch.device("cpu"))
    model = build_model(s, NETWORK, DIFFUSION, images, 10, 3, torch.device("cpu"))
    return setup_training(s, model, DIFFUSION, images, labels, 10, torch.device("cpu"), seed=3)


def test_a_state_resumed_from_its_checkpoint_takes_the_steps_of_the_one_that_wrote_it(tmp_path, digits_lt):
    s = settings(steps=10, label_drop={"policy": "sample", "probability": 0.2}, hflip=True)

    def fresh():
        return fresh_state(s, digits_lt)

    writer = fresh()
    for _ in range(4):
        writer.advance()
    writer.save(tmp_path / "ck.pt", "run")
    resumed = fresh()
    assert resumed.resume(tmp_path / "other.pt", "run") is None  # no checkpoint: nothing restored
    assert resumed.resume(tmp_path / "ck.pt", "another run") == f"{tmp_path / 'ck.pt'} belongs to other settings; " \
                                                                "starting from step 0"
    assert resumed.step == 0
    assert resumed.resume(tmp_path / "ck.pt", "run") == f"resumed from {tmp_path / 'ck.pt'} at step 4"
    losses = [(writer.advance()[1], resumed.advance()[1]) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in losses) and resumed.step == writer.step == 7
    for name, value in writer.ema.state_dict().items():
        assert torch.equal(resumed.ema.state_dict()[name], value), name


def test_a_checkpoint_written_on_another_device_type_names_the_device_and_the_fix(tmp_path, digits_lt):
    s, path = settings(steps=10), tmp_path / "ck.pt"
    writer = fresh_state(s, digits_lt)
    writer.advance()
    writer.save(path, "run")
    written = torch.load(path, weights_only=True)
    # What a GPU run writes: its device type and a CUDA generator's 16-byte state, which a CPU one refuses.
    save_checkpoint(path, {**{k: v for k, v in written.items() if k != "format"}, "device": "cuda",
                           "generator": torch.zeros(16, dtype=torch.uint8)})
    with pytest.raises(InputError, match=f"^{re.escape(str(path))} was written by a run on cuda, but this run is "
                                         f"on cpu: resume it with device: cuda, or delete the checkpoint") as caught:
        fresh_state(s, digits_lt).resume(path, "run")
    assert "\n" not in str(caught.value)


def test_a_checkpoint_of_the_format_before_the_gpu_streams_names_the_fix(tmp_path, digits_lt):
    # A /1 checkpoint holds no device type and one CPU generator state for all processes.
    torch.save({"format": "cbdm.checkpoint/1", "fingerprint": "run", "step": 5,
                "torch_rng": torch.get_rng_state()}, tmp_path / "old.pt")
    with pytest.raises(InputError, match=r"is not a cbdm.checkpoint/2 file \(format: 'cbdm.checkpoint/1'\): "
                                         r"delete the checkpoint to restart"):
        fresh_state(settings(steps=10), digits_lt).resume(tmp_path / "old.pt", "run")


def test_on_a_gpu_the_global_states_include_that_gpu_generator(monkeypatch):
    # Dropout on a GPU draws from the GPU's generator, not the CPU's: a checkpoint must hold it.
    gpu, restored = torch.device("cuda", 1), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, device.index], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state.tolist(), device)))
    saved = process_rng_state(gpu)
    assert saved["cuda"].tolist() == [7, 1] and torch.equal(saved["cpu"], torch.get_rng_state())
    restore_process_rng_state(saved, gpu)
    assert restored == [([7, 1], gpu)]
    cpu = process_rng_state(torch.device("cpu"))
    restore_process_rng_state(cpu, torch.device("cpu"))
    assert list(cpu) == ["cpu"] and len(restored) == 1  # a CPU run touches no GPU generator


def test_a_variant_initialised_from_a_model_of_another_architecture_names_it_the_file_and_the_fix(tmp_path,
                                                                                                  digits_lt):
    images, _ = load_training_images(str(digits_lt), 10, torch.device("cpu"))
    ddpm = build_model(settings(losses=[{"name": "eps_mse"}]), NETWORK, DIFFUSION, images, 10, 3, torch.device("cpu"))
    identity = {"variant": "ddpm", "dataset": "digits", "imbalance_factor": "5", "seed": 3, "training_digest": "t",
                "data_digest": "d"}
    save_model(tmp_path / "ddpm.pt", ddpm, DIFFUSION, {}, identity=identity)
    same = build_model(settings(losses=LOSSES), NETWORK, DIFFUSION, images, 10, 4, torch.device("cpu"),
                       str(tmp_path / "ddpm.pt"))  # other losses, the same parameters: the weights are copied
    assert all(torch.equal(same.state_dict()[k], v) for k, v in ddpm.state_dict().items())
    coral = settings(losses=[{"name": "eps_mse"}, {"name": "coral"}])
    with pytest.raises(InputError, match=rf"^variant v: training.init_from model {re.escape(str(tmp_path))}/ddpm.pt "
                                         r"has another architecture \(parameters heads.coral_projection.bias, "
                                         r"heads.coral_projection.weight differ\): initialise v from a variant "
                                         r"whose losses add the same heads") as caught:
        build_model(coral, NETWORK, DIFFUSION, images, 10, 3, torch.device("cpu"), str(tmp_path / "ddpm.pt"))
    assert "\n" not in str(caught.value)


@pytest.fixture
def backend_flags():
    """Restores the process-wide GPU math switches a test changes."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_steps_of_other_settings_in_one_process_each_run_under_their_own_backend_switches(digits_lt, backend_flags):
    # The benchmarks build the reference path's step and then the fast path's in one process; the
    # switches are global, so set once at construction the last step built would govern both.
    images, labels = load_training_images(str(digits_lt), 10, torch.device("cpu"))
    steps, seen = {}, []
    for name, tf32, benchmark in (("reference", "convolutions", False), ("fast", True, True)):
        s = settings(steps=4, tf32=tf32, cudnn_benchmark=benchmark)
        model = build_model(s, NETWORK, DIFFUSION, images, 10, 3, torch.device("cpu"))
        model.register_forward_pre_hook(lambda *_, name=name: seen.append(
            (name, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)))
        steps[name] = setup_training(s, model, DIFFUSION, images, labels, 10, torch.device("cpu"), seed=3)
    for name in ("reference", "fast", "reference"):
        steps[name].advance()
    assert {entry[1:] for entry in seen if entry[0] == "reference"} == {(False, True, False)}
    assert {entry[1:] for entry in seen if entry[0] == "fast"} == {(True, True, True)}


def test_a_tf32_setting_other_than_the_three_is_refused():
    from cbdm.acceleration import configure_backends

    with pytest.raises(ValueError, match="unknown tf32 setting 1"):
        configure_backends(tf32=1, cudnn_benchmark=False)


def test_the_ema_weights_share_the_layout_of_the_weights_they_follow(digits_lt):
    """The EMA copy was made before the model went channels-last, so its 4-d weights stayed
    contiguous: the foreach EMA update, whose fused kernels need tensors of one layout, falls
    back to one kernel per tensor on a GPU (the H200 profile's per-tensor lerp_ row)."""
    state = fresh_state(settings(steps=2, channels_last=True), digits_lt)
    pairs = list(zip(state.model.parameters(), state.ema.parameters()))
    assert any(p.dim() == 4 for p, _ in pairs)
    assert all(p.stride() == e.stride() for p, e in pairs)
    state.advance()
    assert all(p.stride() == e.stride() for p, e in zip(state.model.parameters(), state.ema.parameters()))


def paper_variant_losses() -> dict[str, list[dict]]:
    import pathlib

    import yaml

    config = yaml.safe_load((pathlib.Path(__file__).parents[1] / "config/paper/cifar10-lt.yaml").read_text())
    return {name: spec["losses"] for name, spec in config["variants"].items()}


@pytest.mark.parametrize("variant, losses", paper_variant_losses().items())
def test_every_paper_variant_runs_the_network_at_one_shape_whatever_the_coin(variant, losses):
    """Compiled training (CUDA graphs in the paper configs) records one graph per input shape:
    every step of every variant must call the network at the same shapes, dropped batch or not."""
    model, objective = drop_objective(batched=True, static_shapes=True, terms=training_settings(losses)["losses"])
    shapes = []
    model.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    steps, generator = [], torch.Generator().manual_seed(1)
    for drop in (True, False, False, True):
        shapes.clear()
        loss, _ = objective(model, torch.randn(6, 1, 8, 8), torch.arange(6), generator,
                            torch.Generator().manual_seed(coin_seed(drop, 0.1)))
        loss.backward()
        steps.append(list(shapes))
    assert steps[0] and all(step == steps[0] for step in steps), (variant, steps)


def test_the_model_file_records_the_data_digest_its_training_set_records(tmp_path):
    """The model file took its data digest from the config (the job's identity), whatever train.npz
    the job read. The job now refuses a training set that does not record the config's origin,
    before the first step, and the model file names the data digest the set records."""
    spec = {"source": "sklearn_digits", "heldout_per_class": 20, "split_seed": 0,
            "longtail": {"profile": "exponential", "n_max": 40, "seed": 0}}
    origin = data_origin("digits", spec, 5.0)
    prepare_source(spec, tmp_path / "source.npz", tmp_path / "source.json", origin=data_origin("digits", spec))
    build_longtail(spec["longtail"], 5.0, tmp_path / "source.npz", tmp_path / "source.json", tmp_path / "train.npz",
                   tmp_path / "manifest.json", source_origin=data_origin("digits", spec), origin=origin)
    run = dict(network=NETWORK, diffusion=DIFFUSION, train_npz=str(tmp_path / "train.npz"), num_classes=10, seed=0,
               device="cpu", identity={"dataset": "digits", "imbalance_factor": "5"})
    other = data_origin("digits", {**spec, "longtail": {**spec["longtail"], "n_max": 30}}, 5.0)
    with pytest.raises(InputError, match=r"train.npz was made for data_digest [0-9a-f]{16}, but this job needs "
                                         r"data_digest [0-9a-f]{16}: .*--forcerun"):
        train(settings(steps=2), **run, out_model=str(tmp_path / "other.pt"), out_log=str(tmp_path / "other.csv"),
              checkpoint_path=str(tmp_path / "other.ckpt"), train_origin=other)
    assert not any((tmp_path / name).exists() for name in ("other.pt", "other.csv", "other.ckpt"))
    train(settings(steps=2), **run, out_model=str(tmp_path / "model.pt"), out_log=str(tmp_path / "loss.csv"),
          checkpoint_path=str(tmp_path / "model.ckpt"), train_origin=origin)
    recorded = json.loads(str(read_npz(tmp_path / "train.npz")[ORIGIN]))
    assert recorded == origin and origin["data_digest"] == data_digest(spec, 5.0)
    assert load_model(tmp_path / "model.pt")[2]["meta"]["identity"]["data_digest"] == recorded["data_digest"]
