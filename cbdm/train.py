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
import sys
import time

import torch
from tqdm import tqdm

from .acceleration import (
    autocast,
    compile_network,
    configure_backends,
    ema_update,
    prepare_network,
    resolve_device,
    to_layout,
)
from .datapolicy import draw_batch_indices
from .dataset import images_to_model_range, read_image_set
from .diffusion import NoiseSchedule
from .fingerprint import file_fingerprint, fingerprint
from .io import atomic_path
from .modelfile import load_checkpoint, load_model, require_identity_keys, save_checkpoint, save_model
from .networks import build_unet, count_parameters
from .objective import Objective, network_extras


def train(settings: dict, *, network: dict, diffusion: dict, train_npz: str, num_classes: int,
          seed: int, device: str, out_model: str, out_log: str, checkpoint_path: str,
          init_model: str | None = None, identity: dict | None = None) -> None:
    """Train one variant; with `training.processes` > 1, in that many data-parallel processes
    (one per GPU, or gloo processes on a CPU) that together take the steps one process would.
    `identity` ({variant, dataset, imbalance_factor, seed}) is what the model file says it was
    trained for; the sampling job checks it."""
    identity = {"variant": settings["name"], "dataset": None, "imbalance_factor": None, "seed": seed,
                **(identity or {}), "training_digest": fingerprint(settings, network, diffusion)}
    require_identity_keys(identity)  # before the training, not after it
    run = dict(settings=settings, network=network, diffusion=diffusion, train_npz=train_npz,
               num_classes=num_classes, seed=seed, device=device, out_model=out_model, out_log=out_log,
               checkpoint_path=checkpoint_path, init_model=init_model, identity=identity)
    processes = settings["training"]["processes"]
    if processes == 1:
        _train_process(0, 1, **run)
        return
    if settings["training"]["batch_size"] % processes:
        raise ValueError(f"training.batch_size {settings['training']['batch_size']} is not a multiple of "
                         f"training.processes {processes}: every process takes an equal share")
    if resolve_device(device).type == "cuda" and torch.cuda.device_count() < processes:
        raise RuntimeError(f"training.processes {processes} needs one GPU per process but this job sees "
                           f"{torch.cuda.device_count()}: run snakemake with --resources gpu=N (N = the "
                           f"machine's GPUs; the default profile allows 1) or lower training.processes")
    import torch.multiprocessing as mp

    threads = max(1, torch.get_num_threads() // processes)
    mp.spawn(_distributed_worker, args=(processes, _free_port(), threads, run), nprocs=processes, join=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, threads: int, run: dict) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    backend = "nccl" if resolve_device(run["device"]).type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        _train_process(rank, world, **run)
    finally:
        dist.destroy_process_group()


def _train_process(rank: int, world: int, *, settings: dict, network: dict, diffusion: dict,
                   train_npz: str, num_classes: int, seed: int, device: str, out_model: str,
                   out_log: str, checkpoint_path: str, init_model: str | None, identity: dict) -> None:
    cfg = settings["training"]
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", rank)
    lead = rank == 0  # the process that writes files and progress
    data = read_image_set(train_npz, "", num_classes)
    images = images_to_model_range(torch.from_numpy(data.images)).to(dev)
    labels = torch.from_numpy(data.labels).to(dev)
    counts = torch.bincount(labels, minlength=num_classes)
    class_prior = counts.double() / counts.sum()

    torch.manual_seed(seed)
    model = build_unet(network, image_channels=images.shape[1], image_size=images.shape[-1],
                       num_classes=num_classes, num_timesteps=diffusion["num_timesteps"],
                       **network_extras(settings["losses"])).to(dev)
    if init_model is not None:
        source, _, _ = load_model(init_model, dev)
        model.load_state_dict(source.state_dict())
        print(f"initialised from {init_model}")
    ema = copy.deepcopy(model).requires_grad_(False)
    n_params = count_parameters(model)
    if lead:
        print(f"variant {settings['name']} seed {seed}: {n_params:,} parameters, {len(labels)} training "
              f"images, class counts {counts.tolist()}, device {dev}, {world} process(es)", flush=True)

    schedule = NoiseSchedule.linear(diffusion["num_timesteps"], diffusion["beta_start"],
                                    diffusion["beta_end"]).to(dev)
    objective = Objective(settings["losses"], schedule, class_prior.float(), model.null_label,
                          cfg["label_drop"], cfg["batched_forward"])
    train_step = TrainStep(model, ema, objective, cfg, dev, (rank, world))
    optimizer = train_step.optimizer
    images = to_layout(images, cfg["channels_last"])
    generator = torch.Generator(dev).manual_seed(seed)
    coin_generator = torch.Generator().manual_seed(seed)

    # A checkpoint is resumed only by the run that wrote it: same settings, data and start.
    run_id = fingerprint(settings, network, diffusion, seed, file_fingerprint(train_npz),
                         file_fingerprint(init_model))
    step, log_rows, saved_step = 0, [], None
    if os.path.exists(checkpoint_path):
        state = load_checkpoint(checkpoint_path)
        if state["fingerprint"] == run_id:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            coin_generator.set_state(state["coin_generator"])
            torch.set_rng_state(state["torch_rng"])
            step, log_rows = state["step"], state["log"]
            saved_step = step
            if lead:
                print(f"resumed from {checkpoint_path} at step {step}", flush=True)
        elif lead:
            print(f"{checkpoint_path} belongs to other settings; starting from step 0", flush=True)

    def checkpoint():
        nonlocal saved_step
        saved_step = step
        save_checkpoint(checkpoint_path, {
            "fingerprint": run_id, "step": step, "model": model.state_dict(),
            "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "coin_generator": coin_generator.get_state(),
            "torch_rng": torch.get_rng_state(), "log": log_rows})

    running = {}
    started = time.time()
    model.train()
    progress = tqdm(total=cfg["steps"], initial=step, desc=f"train {settings['name']}", file=sys.stderr,
                    mininterval=10, dynamic_ncols=False, ncols=100, disable=not lead)
    while step < cfg["steps"]:
        lr, loss, parts = train_step(step, images, labels, generator, coin_generator)
        step += 1
        for name, value in {"loss": loss, **parts}.items():
            running[name] = running.get(name, 0.0) + value
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            n = cfg["log_every"] if step % cfg["log_every"] == 0 else step % cfg["log_every"]
            row = {"step": step, "lr": lr, **{k: v / n for k, v in _mean_over_processes(running, world).items()}}
            if not all(map(math.isfinite, row.values())):
                raise FloatingPointError(f"non-finite loss at step {step}: {row}. Lower training.lr or check "
                                         f"the data; {restart_point(saved_step, checkpoint_path)}")
            log_rows.append(row)
            running = {}
            progress.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if lead and step % cfg["checkpoint_every"] == 0 and step < cfg["steps"]:
            checkpoint()
        _killed_here_for_tests(step)
        progress.update(1)
    progress.close()
    if not lead:
        return
    save_model(out_model, ema, diffusion, identity=identity, state_dict=ema.state_dict(), meta={
        "variant": settings["name"], "seed": seed, "steps": step, "parameters": n_params,
        "losses": settings["losses"], "class_counts": counts.tolist(), "device": str(dev),
        "processes": world, "torch": str(torch.__version__),
        "seconds_this_session": round(time.time() - started, 1)})
    write_log_csv(out_log, log_rows)
    if os.path.exists(checkpoint_path):
        os.unlink(checkpoint_path)
    print(f"done: {step} steps, final loss {log_rows[-1]['loss']:.4f}, "
          f"{time.time() - started:.0f} s this session", flush=True)


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
        configure_backends(tf32=cfg["tf32"], cudnn_benchmark=cfg["cudnn_benchmark"])
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], fused=cfg["fused_adam"] or None)
        self.network = training_network(model, cfg, device, shard[1])
        self.params, self.ema_params = list(model.parameters()), list(ema.parameters())
        # CUDA graphs reuse their output buffers: each step must say where the previous one ended.
        self.marks_steps = cfg["compile"] and cfg["compile_mode"] == "reduce-overhead"

    def learning_rate(self, step: int) -> float:
        cfg = self.cfg
        return cfg["lr"] * min(1.0, (step + 1) / cfg["warmup_steps"]) if cfg["warmup_steps"] else cfg["lr"]

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                 coin_generator: torch.Generator) -> tuple[float, torch.Tensor, dict[str, torch.Tensor]]:
        """Take step number `step` (0-based); returns (learning rate, loss, loss parts), detached."""
        cfg, lr = self.cfg, self.learning_rate(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = draw_batch_indices(cfg["data_policy"], labels, cfg["batch_size"], generator)
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
    network = prepare_network(model, channels_last=cfg["channels_last"], compile=False)
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
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
