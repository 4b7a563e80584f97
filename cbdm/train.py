"""Stage 2: train one variant on one long-tailed dataset with one seed.

Adam with linear warm-up, gradient clipping and an EMA of the weights (the model file holds
the EMA weights). The run checkpoints atomically every `checkpoint_every` steps and, started
again after a kill, resumes from the last checkpoint with every random state restored, so the
result equals an uninterrupted run.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .dataset import read_image_set
from .diffusion import NoiseSchedule
from .io import atomic_path
from .modelfile import load_checkpoint, load_model, save_checkpoint, save_model
from .networks import build_unet, count_parameters
from .objective import Objective
from .sources import file_digest


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no GPU; set device: auto or cpu")
    return torch.device(name)


def images_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float() / 127.5 - 1.0


def run_fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train(settings: dict, *, network: dict, diffusion: dict, train_npz: str, num_classes: int,
          seed: int, device: str, out_model: str, out_log: str, checkpoint_path: str,
          init_model: str | None = None) -> None:
    cfg = settings["training"]
    dev = resolve_device(device)
    data = read_image_set(train_npz)
    images = images_to_model_range(torch.from_numpy(data.images)).to(dev)
    labels = torch.from_numpy(data.labels).to(dev)
    counts = torch.bincount(labels, minlength=num_classes)
    class_prior = counts.double() / counts.sum()

    torch.manual_seed(seed)
    model = build_unet(network, image_channels=images.shape[1], image_size=images.shape[-1],
                       num_classes=num_classes, num_timesteps=diffusion["num_timesteps"]).to(dev)
    if init_model is not None:
        source, _, _ = load_model(init_model, dev)
        model.load_state_dict(source.state_dict())
        print(f"initialised from {init_model}")
    ema = copy.deepcopy(model).requires_grad_(False)
    n_params = count_parameters(model)
    print(f"variant {settings['name']} seed {seed}: {n_params:,} parameters, {len(labels)} training "
          f"images, class counts {counts.tolist()}, device {dev}", flush=True)

    schedule = NoiseSchedule.linear(diffusion["num_timesteps"], diffusion["beta_start"],
                                    diffusion["beta_end"]).to(dev)
    objective = Objective(settings["losses"], schedule, class_prior.float(), model.null_label,
                          cfg["label_drop"], cfg["batched_forward"])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    generator = torch.Generator(dev).manual_seed(seed)
    coin_generator = torch.Generator().manual_seed(seed)

    # A checkpoint is resumed only by the run that wrote it: same settings, data and start.
    fingerprint = run_fingerprint(settings, network, diffusion, seed, file_digest(Path(train_npz)),
                                  init_model and file_digest(Path(init_model)))
    step, log_rows = 0, []
    if os.path.exists(checkpoint_path):
        state = load_checkpoint(checkpoint_path)
        if state["fingerprint"] == fingerprint:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            coin_generator.set_state(state["coin_generator"])
            torch.set_rng_state(state["torch_rng"])
            step, log_rows = state["step"], state["log"]
            print(f"resumed from {checkpoint_path} at step {step}", flush=True)
        else:
            print(f"{checkpoint_path} belongs to other settings; starting from step 0", flush=True)

    def checkpoint():
        save_checkpoint(checkpoint_path, {
            "fingerprint": fingerprint, "step": step, "model": model.state_dict(),
            "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "coin_generator": coin_generator.get_state(),
            "torch_rng": torch.get_rng_state(), "log": log_rows})

    params, ema_params = list(model.parameters()), list(ema.parameters())
    running = {}
    started = time.time()
    model.train()
    progress = tqdm(total=cfg["steps"], initial=step, desc=f"train {settings['name']}", file=sys.stderr,
                    mininterval=10, dynamic_ncols=False, ncols=100)
    while step < cfg["steps"]:
        lr = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup_steps"]) if cfg["warmup_steps"] else cfg["lr"]
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(labels), (cfg["batch_size"],), device=dev, generator=generator)
        x0 = images[idx]
        if cfg["hflip"]:
            flip = torch.rand(len(idx), device=dev, generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        loss, parts = objective(model, x0, labels[idx], generator, coin_generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - cfg["ema_decay"])
        step += 1
        for name, value in {"loss": loss.detach(), **parts}.items():
            running[name] = running.get(name, 0.0) + value
        if step % cfg["log_every"] == 0 or step == cfg["steps"]:
            n = cfg["log_every"] if step % cfg["log_every"] == 0 else step % cfg["log_every"]
            row = {"step": step, "lr": lr, **{k: float(v) / n for k, v in running.items()}}
            if not all(map(_finite, row.values())):
                raise FloatingPointError(
                    f"non-finite loss at step {step}: {row}. Lower training.lr or check the data; "
                    f"the last checkpoint ({checkpoint_path}) is from before this point")
            log_rows.append(row)
            running = {}
            progress.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        if step % cfg["checkpoint_every"] == 0 and step < cfg["steps"]:
            checkpoint()
        progress.update(1)
    progress.close()

    save_model(out_model, ema, diffusion, state_dict=ema.state_dict(), meta={
        "variant": settings["name"], "seed": seed, "steps": step, "parameters": n_params,
        "losses": settings["losses"], "class_counts": counts.tolist(), "device": str(dev),
        "torch": str(torch.__version__), "seconds_this_session": round(time.time() - started, 1)})
    write_log_csv(out_log, log_rows)
    if os.path.exists(checkpoint_path):
        os.unlink(checkpoint_path)
    print(f"done: {step} steps, final loss {log_rows[-1]['loss']:.4f}, "
          f"{time.time() - started:.0f} s this session", flush=True)


def _finite(value) -> bool:
    return value == value and abs(value) != float("inf")


def write_log_csv(path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
