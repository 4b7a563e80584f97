"""Stage 2: train one variant on one long-tailed dataset with one seed.

Adam with linear warm-up, gradient clipping and an EMA of the weights (the model file holds
the EMA weights). The run checkpoints atomically every `checkpoint_every` steps and, started
again after a kill, resumes from the last checkpoint with every random state restored, so the
result equals an uninterrupted run.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import signal
import time
from dataclasses import dataclass

import torch

from .acceleration import (
    autocast,
    compile_network,
    configure_backends,
    ema_update,
    prepare_network,
    resolve_device,
    to_layout,
)
from .datapolicy import batch_sampler
from .dataset import images_to_model_range, read_image_set
from .diffusion import NoiseSchedule
from .fingerprint import file_fingerprint, fingerprint
from .io import InputError, atomic_path, progress_bar
from .modelfile import load_checkpoint, load_model, require_identity_keys, save_checkpoint, save_model
from .networks import build_unet, count_parameters
from .objective import Objective, network_extras


def train(settings: dict, *, network: dict, diffusion: dict, train_npz: str, num_classes: int,
          seed: int, device: str, out_model: str, out_log: str, checkpoint_path: str,
          init_model: str | None = None, identity: dict | None = None, train_origin: dict | None = None) -> None:
    """Train one variant; with `training.processes` > 1, in that many data-parallel processes
    (one per GPU, or gloo processes on a CPU) that together draw the batches, timesteps, noise and
    labels one process would. Each process draws its own dropout masks (one shared stream would
    give every share of the batch the same masks), so with dropout > 0 the steps are not those of
    one process bit for bit; without dropout they are, up to the order of floating-point sums.
    `identity` ({variant, dataset, imbalance_factor, seed, data_digest}) is what the model file
    says it was trained for; the sampling job checks it. `train_origin` (cbdm.dataset.data_origin)
    is what the training set must record: one drawn with other settings is refused before the
    first step, so its data digest, the model file's, is that of the data the model saw."""
    identity = {"variant": settings["name"], "dataset": None, "imbalance_factor": None, "seed": seed,
                "data_digest": None, **(identity or {}),
                "training_digest": training_digest(settings, network, diffusion)}
    if train_origin is not None:
        if identity["data_digest"] not in (None, train_origin["data_digest"]):
            raise ValueError(f"identity's data_digest {identity['data_digest']} is not train_origin's "
                             f"{train_origin['data_digest']}: give one")
        identity["data_digest"] = train_origin["data_digest"]
    require_identity_keys(identity)  # before the training, not after it
    job = TrainingJob(settings=settings, network=network, diffusion=diffusion, train_npz=train_npz,
                      num_classes=num_classes, seed=seed, device=device, out_model=out_model, out_log=out_log,
                      checkpoint_path=checkpoint_path, init_model=init_model, identity=identity,
                      train_origin=train_origin)
    processes = settings["training"]["processes"]
    if processes == 1:
        _train_process(0, 1, job)
    else:
        _spawn_processes(job, processes)


def training_digest(settings: dict, network: dict, diffusion: dict) -> str:
    """The digest of what a model was trained with, written into its model file; the sampling
    job computes it from its own config and refuses a file that differs."""
    return fingerprint(settings, network, diffusion)


@dataclass(frozen=True)
class TrainingJob:
    """One training job's inputs, as `train` received them (with the identity completed)."""

    settings: dict
    network: dict
    diffusion: dict
    train_npz: str
    num_classes: int
    seed: int
    device: str
    out_model: str
    out_log: str
    checkpoint_path: str
    init_model: str | None
    identity: dict
    train_origin: dict | None

    def run_id(self) -> str:
        """What a checkpoint must carry to be resumed: the same settings, data and start."""
        return fingerprint(self.settings, self.network, self.diffusion, self.seed,
                           file_fingerprint(self.train_npz), file_fingerprint(self.init_model))


# --- data-parallel processes --------------------------------------------------------------------

def _spawn_processes(job: TrainingJob, processes: int) -> None:
    """Run the job in `processes` data-parallel processes, after checking they can split it."""
    batch_size = job.settings["training"]["batch_size"]
    if batch_size % processes:
        raise ValueError(f"training.batch_size {batch_size} is not a multiple of "
                         f"training.processes {processes}: every process takes an equal share")
    if resolve_device(job.device).type == "cuda" and torch.cuda.device_count() < processes:
        raise RuntimeError(f"training.processes {processes} needs one GPU per process but this job sees "
                           f"{torch.cuda.device_count()}: run snakemake with --resources gpu=N (N = the "
                           f"machine's GPUs; the default profile allows 1) or lower training.processes")
    import torch.multiprocessing as mp

    threads = max(1, torch.get_num_threads() // processes)
    mp.spawn(_distributed_worker, args=(processes, _free_port(), threads, job), nprocs=processes, join=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, threads: int, job: TrainingJob) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    backend = "nccl" if resolve_device(job.device).type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        _train_process(rank, world, job)
    finally:
        dist.destroy_process_group()


def _process_device(device: str, rank: int, world: int) -> torch.device:
    """This process's device: with several processes on CUDA, GPU number `rank`."""
    dev = resolve_device(device)
    return torch.device("cuda", rank) if dev.type == "cuda" and world > 1 else dev


# --- one process ----------------------------------------------------------------------------------

def _train_process(rank: int, world: int, job: TrainingJob) -> None:
    """One process's share of a job: set up, resume from a checkpoint of the same run, take
    the steps, and (the lead process) write the model file and the loss log."""
    dev = _process_device(job.device, rank, world)
    lead = rank == 0  # the process that writes files and progress
    images, labels = load_training_images(job.train_npz, job.num_classes, dev, job.train_origin)
    model = build_model(job.settings, job.network, job.diffusion, images, job.num_classes, job.seed, dev,
                        job.init_model)
    seed_dropout(job.seed, rank)
    state = setup_training(job.settings, model, job.diffusion, images, labels, job.num_classes, dev, job.seed,
                           (rank, world))
    counts = torch.bincount(labels, minlength=job.num_classes).tolist()
    if lead:
        print(f"variant {job.settings['name']} seed {job.seed}: {count_parameters(model):,} parameters, "
              f"{len(labels)} training images, class counts {counts}, device {dev}, {world} process(es)",
              flush=True)
    run_id = job.run_id()
    note = state.resume(job.checkpoint_path, run_id)
    if lead and note:
        print(note, flush=True)
    started = time.time()
    run_steps(state, job.settings, world, lead, job.checkpoint_path, run_id)
    if lead:
        _write_outputs(job, state, counts, dev, world, started)


def load_training_images(train_npz: str, num_classes: int, device: torch.device,
                         origin: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in model range, labels) of a training set, on `device`; one that does not record
    `origin` is refused."""
    data = read_image_set(train_npz, "", num_classes, origin=origin)
    return (images_to_model_range(torch.from_numpy(data.images)).to(device),
            torch.from_numpy(data.labels).to(device))


def build_model(settings: dict, network: dict, diffusion: dict, images: torch.Tensor, num_classes: int,
                seed: int, device: torch.device, init_model: str | None = None) -> torch.nn.Module:
    """The variant's UNet for these images, initialised from `seed` (or from `init_model`'s weights)."""
    torch.manual_seed(seed)
    model = build_unet(network, image_channels=images.shape[1], image_size=images.shape[-1],
                       num_classes=num_classes, num_timesteps=diffusion["num_timesteps"],
                       **network_extras(settings["losses"])).to(device)
    if init_model is not None:
        load_init_weights(model, init_model, settings["name"], device)
        print(f"initialised from {init_model}")
    return model


def load_init_weights(model: torch.nn.Module, init_model: str, variant: str, device: torch.device) -> None:
    """Copy `init_model`'s weights into `model`; a model file of another architecture (losses that
    add heads or a low-rank branch differ) is a one-line InputError, not torch's list of keys."""
    source = load_model(init_model, device)[0].state_dict()
    target = model.state_dict()
    differ = sorted(set(source) ^ set(target)) + [k for k in target if k in source and
                                                   source[k].shape != target[k].shape]
    if differ:
        shown = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
        raise InputError(f"variant {variant}: training.init_from model {init_model} has another architecture "
                         f"(parameters {shown} differ): initialise {variant} from a variant whose losses add the "
                         f"same heads and low-rank branch, or remove its training.init_from")
    model.load_state_dict(source)


def seed_dropout(seed: int, rank: int) -> None:
    """Give data-parallel process `rank` its own stream of the global generators (dropout's):
    seeded alike, every share of the batch would get the same masks. Rank 0 keeps the stream a
    single process has, so one-process runs are unchanged."""
    if rank:
        torch.manual_seed(int(fingerprint("dropout", seed, rank), 16))


def setup_training(settings: dict, model: torch.nn.Module, diffusion: dict, images: torch.Tensor,
                   labels: torch.Tensor, num_classes: int, device: torch.device, seed: int,
                   shard: tuple[int, int] = (0, 1)) -> "TrainingState":
    """The trainer's setup around a built model: its EMA copy, the noise schedule, the objective
    with the data's class prior, the step (optimizer, configured network) and the seeded
    generators. benchmarks/bench_train.py times what this returns, so it times the trainer."""
    cfg = settings["training"]
    if cfg["channels_last"]:  # before the copy: the foreach EMA update fuses tensors of one layout only
        model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    counts = torch.bincount(labels, minlength=num_classes)
    schedule = NoiseSchedule.linear(diffusion["num_timesteps"], diffusion["beta_start"],
                                    diffusion["beta_end"]).to(device)
    objective = Objective(settings["losses"], schedule, (counts.double() / counts.sum()).float(), model.null_label,
                          cfg["label_drop"], cfg["batched_forward"], static_shapes=cfg["compile"])
    train_step = TrainStep(model, ema, objective, cfg, device, shard)
    return TrainingState(model, ema, train_step, to_layout(images, cfg["channels_last"]), labels, seed, device)


class TrainingState:
    """What a step reads and a checkpoint holds: the model, its EMA, the step (optimizer and
    configured network), the training images, the step count, the random generators and the
    loss log so far."""

    def __init__(self, model: torch.nn.Module, ema: torch.nn.Module, train_step: "TrainStep",
                 images: torch.Tensor, labels: torch.Tensor, seed: int, device: torch.device):
        self.model, self.ema, self.train_step = model, ema, train_step
        self.optimizer = train_step.optimizer
        self.device, (self.rank, self.world) = device, train_step.shard
        self.images, self.labels = images, labels
        self.generator = torch.Generator(device).manual_seed(seed)
        self.coin_generator = torch.Generator().manual_seed(seed)
        self.step, self.log_rows, self.saved_step = 0, [], None

    def advance(self) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
        """Take the next step; returns (learning rate, loss, loss parts), detached."""
        out = self.train_step(self.step, self.images, self.labels, self.generator, self.coin_generator)
        self.step += 1
        return out

    def save(self, path: str, run_id: str) -> None:
        """Write a checkpoint of the run `run_id` at the current step (atomically). Every process
        calls it, since the checkpoint holds each one's dropout stream; the lead process writes.
        Weights that are no longer finite stop the run instead: a checkpoint of them could only
        be resumed into the same failure."""
        require_finite_weights(self, path, "write a checkpoint")
        streams = all_processes_rng_states(self.device, self.world)
        self.saved_step = self.step
        if self.rank:
            return
        save_checkpoint(path, {
            "fingerprint": run_id, "step": self.step, "device": self.device.type, "model": self.model.state_dict(),
            "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "coin_generator": self.coin_generator.get_state(),
            "process_rng": streams, "log": self.log_rows})

    def resume(self, path: str, run_id: str) -> str | None:
        """Restore every state from `path` where the run `run_id` wrote it; what happened, for
        the log (None where there is no checkpoint)."""
        if not os.path.exists(path):
            return None
        state = load_checkpoint(path)
        if state["fingerprint"] != run_id:
            return f"{path} belongs to other settings; starting from step 0"
        if state["device"] != self.device.type:  # generator states of one device type fit no other
            raise InputError(f"{path} was written by a run on {state['device']}, but this run is on "
                             f"{self.device.type}: resume it with device: {state['device']}, or delete the "
                             f"checkpoint to start over from step 0")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.coin_generator.set_state(state["coin_generator"])
        restore_process_rng_state(state["process_rng"][self.rank], self.device)
        self.step, self.log_rows = state["step"], state["log"]
        self.saved_step = self.step
        return f"resumed from {path} at step {self.step}"


def process_rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's global generator states: the CPU's and, training on a GPU, that GPU's, which
    dropout on the GPU draws from."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_process_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Set the global generators to what `process_rng_state` returned on a device of this type."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def all_processes_rng_states(device: torch.device, world: int) -> list[dict[str, torch.Tensor]]:
    """Every data-parallel process's `process_rng_state`, by rank (a collective: every process
    calls it). The states travel as one byte tensor on the process's device, which gloo and
    NCCL both gather."""
    own = process_rng_state(device)
    if world == 1:
        return [own]
    import torch.distributed as dist

    names, sizes = list(own), [len(v) for v in own.values()]
    flat = torch.cat(list(own.values())).to(device)
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    return [dict(zip(names, (part.clone() for part in g.cpu().split(sizes)))) for g in gathered]


def run_steps(state: TrainingState, settings: dict, world: int, lead: bool, checkpoint_path: str,
              run_id: str) -> None:
    """Take the steps left: every `log_every` steps a loss-log row (means over the steps and the
    processes), where a non-finite loss stops the run; every `checkpoint_every` steps a checkpoint
    (the config makes that a multiple of `log_every`, so the loss is checked first and a resumed
    run starts a row afresh)."""
    cfg = settings["training"]
    running = {}
    state.model.train()
    progress = progress_bar(total=cfg["steps"], initial=state.step, desc=f"train {settings['name']}",
                            disable=not lead)
    while state.step < cfg["steps"]:
        lr, loss, parts = state.advance()
        step = state.step
        for name, value in {"loss": loss, **parts}.items():
            running[name] = running.get(name, 0.0) + value
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            row = _log_row(step, lr, running, cfg, world)
            if not all(map(math.isfinite, row.values())):
                raise FloatingPointError(f"non-finite loss at step {step}: {row}. Lower training.lr or check "
                                         f"the data; {restart_point(state.saved_step, checkpoint_path)}")
            state.log_rows.append(row)
            running = {}
            progress.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if step % cfg["checkpoint_every"] == 0 and step < cfg["steps"]:
            state.save(checkpoint_path, run_id)
        _killed_here_for_tests(step)
        progress.update(1)
    progress.close()


def _log_row(step: int, lr: float, running: dict, cfg: dict, world: int) -> dict:
    """The loss-log row at `step`: the sums since the last row as means per step and process."""
    n = cfg["log_every"] if step % cfg["log_every"] == 0 else step % cfg["log_every"]
    return {"step": step, "lr": lr, **{k: v / n for k, v in _mean_over_processes(running, world).items()}}


def _write_outputs(job: TrainingJob, state: TrainingState, counts: list[int], device: torch.device,
                   world: int, started: float) -> None:
    """The model file (EMA weights), the loss log; the checkpoint is no longer needed."""
    settings = job.settings
    require_finite_weights(state, job.checkpoint_path, "write the model file")
    save_model(job.out_model, state.ema, job.diffusion, identity=job.identity, state_dict=state.ema.state_dict(),
               meta={"variant": settings["name"], "seed": job.seed, "steps": state.step,
                     "parameters": count_parameters(state.model), "losses": settings["losses"],
                     "class_counts": counts, "device": str(device), "processes": world,
                     "torch": str(torch.__version__), "seconds_this_session": round(time.time() - started, 1)})
    write_log_csv(job.out_log, state.log_rows)
    if os.path.exists(job.checkpoint_path):
        os.unlink(job.checkpoint_path)
    print(f"done: {state.step} steps, final loss {state.log_rows[-1]['loss']:.4f}, "
          f"{time.time() - started:.0f} s this session", flush=True)


def require_finite_weights(state: TrainingState, checkpoint_path: str, then: str) -> None:
    """FloatingPointError unless the weights and their EMA are finite: an overflowing gradient can
    spoil them at a step whose loss was still finite, which the loss-log check cannot see."""
    tensors = [*state.model.parameters(), *state.ema.parameters()]
    if not torch.stack([t.isfinite().all() for t in tensors]).all():
        raise FloatingPointError(f"non-finite weights after step {state.step}, so the run did not {then}. "
                                 f"Lower training.lr or training.grad_clip, or check the data; "
                                 f"{restart_point(state.saved_step, checkpoint_path)}")


def _killed_here_for_tests(step: int) -> None:
    """With CBDM_KILL_AT_STEP=N in the environment, kill -9 this run's process group (the trainer and
    the snakemake that started it) after step N: the resume tests crash at a fixed step, not a timed one."""
    if os.environ.get("CBDM_KILL_AT_STEP") == str(step):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def restart_point(saved_step: int | None, checkpoint_path: str) -> str:
    """What running the job again does after a failure."""
    if saved_step is None:
        return "no checkpoint exists yet, so running it again starts over from step 0"
    return (f"run again with the same settings it resumes from step {saved_step} ({checkpoint_path}); "
            f"with changed settings it starts over from step 0")


class TrainStep:
    """One optimizer step of the trainer: learning-rate warm-up, a batch drawn from the training
    images (with flips), the objective under the configured precision, backward, gradient
    clipping, Adam and the EMA. `train` runs it in its loop and benchmarks/bench_train.py times
    it, so the benchmark measures the pipeline's own step."""

    def __init__(self, model: torch.nn.Module, ema: torch.nn.Module, objective: Objective, cfg: dict,
                 device: torch.device, shard: tuple[int, int] = (0, 1)):
        self.cfg, self.device, self.shard, self.objective = cfg, device, shard, objective
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], fused=cfg["fused_adam"] or None)
        self.network = training_network(model, cfg, device, shard[1])
        self.params, self.ema_params = list(model.parameters()), list(ema.parameters())
        # CUDA graphs reuse their output buffers: each step must say where the previous one ended.
        self.marks_steps = cfg["compile"] and cfg["compile_mode"] == "reduce-overhead"
        self._sampled_labels, self._draw = None, None  # the batch sampler of the labels last seen

    def _batch_indices(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One batch's indices; the data policy's class tables are built once per label tensor."""
        if labels is not self._sampled_labels:
            self._sampled_labels, self._draw = labels, batch_sampler(self.cfg["data_policy"], labels)
        return self._draw(self.cfg["batch_size"], generator)

    def learning_rate(self, step: int) -> float:
        """The learning rate of step `step` (0-based): linear warm-up to `lr`."""
        cfg = self.cfg
        return cfg["lr"] * min(1.0, (step + 1) / cfg["warmup_steps"]) if cfg["warmup_steps"] else cfg["lr"]

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                 coin_generator: torch.Generator) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
        """Take step number `step` (0-based); returns (learning rate, loss, loss parts), detached."""
        cfg, lr = self.cfg, self.learning_rate(step)
        # The switches are process-wide: set at each step, so that a process holding steps of other
        # settings (the benchmarks' reference and fast paths) runs each under its own.
        configure_backends(tf32=cfg["tf32"], cudnn_benchmark=cfg["cudnn_benchmark"])
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = self._batch_indices(labels, generator)
        x0 = images[idx]
        if cfg["hflip"]:
            flip = torch.rand(len(idx), device=self.device, generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        if self.marks_steps:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, cfg["precision"]):
            loss, parts = self.objective(self.network, x0, labels[idx], generator, coin_generator, self.shard)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg["grad_clip"])
        self.optimizer.step()
        ema_update(self.ema_params, self.params, cfg["ema_decay"], cfg["ema_update"])
        return lr, loss.detach(), parts


def training_network(model: torch.nn.Module, cfg: dict, device: torch.device, world: int):
    """What the objective calls: the model in its configured layout, wrapped for data-parallel
    training where `world` > 1, compiled in the configured mode."""
    network = prepare_network(model, channels_last=cfg["channels_last"], group_norm=cfg["group_norm"], compile=False)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return compile_network(network, cfg["compile_mode"]) if cfg["compile"] else network


def _mean_over_processes(sums: dict, world: int) -> dict[str, float]:
    """Logged values averaged over data-parallel processes (each saw its share of the batch)."""
    if world == 1:
        return {k: float(v) for k, v in sums.items()}
    import torch.distributed as dist

    names = list(sums)
    values = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64) for k in names])
    dist.all_reduce(values)
    return {k: float(v) / world for k, v in zip(names, values)}


def write_log_csv(path, rows: list[dict]) -> None:
    """The loss log as CSV (atomically), one column per key any row has."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
