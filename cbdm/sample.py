"""Stage 3: draw a sample set from a trained model.

Labels are exact per-class counts ('exact', every class gets `per_class` images) or drawn
uniformly at random per image ('uniform_random', the reference evaluation). Image i of
sampling seed s has seed s * SEED_STRIDE + i, so any image can be regenerated alone.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from .io import write_npz
from .modelfile import load_model
from .samplers import sample_ancestral, sample_ddim, to_uint8
from .train import resolve_device

SEED_STRIDE = 1_000_000


def sample_labels(num_classes: int, per_class: int, policy: str, seed: int) -> np.ndarray:
    if policy == "exact":
        return np.repeat(np.arange(num_classes), per_class)
    if policy == "uniform_random":
        return np.random.RandomState(seed).randint(num_classes, size=num_classes * per_class)
    raise ValueError(f"unknown label policy {policy!r}; use 'exact' or 'uniform_random'")


def image_seeds(sample_seed: int, count: int) -> np.ndarray:
    if count > SEED_STRIDE:
        raise ValueError(f"{count} images exceed the {SEED_STRIDE} seeds reserved per sampling seed")
    return sample_seed * SEED_STRIDE + np.arange(count)


def generate(model, schedule, labels: np.ndarray, seeds: np.ndarray, sampling: dict, guidance: float,
             device: torch.device, desc: str = "sample") -> np.ndarray:
    """uint8 images [N, C, H, W] for the given labels and per-image seeds."""
    out = []
    batch = sampling["batch_size"]
    steps_per_batch = schedule.num_timesteps if sampling["sampler"] == "ancestral" else sampling["steps"]
    progress = tqdm(total=steps_per_batch * -(-len(labels) // batch), desc=desc, file=sys.stderr,
                    mininterval=10, ncols=100)
    for start in range(0, len(labels), batch):
        y = torch.from_numpy(labels[start:start + batch]).to(device)
        s = seeds[start:start + batch]
        if sampling["sampler"] == "ancestral":
            x = sample_ancestral(model, schedule, y, s, guidance=guidance,
                                 variance=sampling["variance"], progress=progress)
        else:
            x = sample_ddim(model, schedule, y, s, guidance=guidance, steps=sampling["steps"],
                            eta=sampling["eta"], progress=progress)
        out.append(to_uint8(x).cpu().numpy())
    progress.close()
    return np.concatenate(out)


def sample(settings: dict, *, model_path: str, guidance: float, sample_seed: int, device: str,
           out_npz: str) -> None:
    sampling = settings["sampling"]
    dev = resolve_device(device)
    model, schedule, _ = load_model(model_path, dev)
    num_classes = model.cfg.num_classes
    labels = sample_labels(num_classes, sampling["per_class"], sampling["labels"], sample_seed)
    seeds = image_seeds(sample_seed, len(labels))
    started = time.time()
    print(f"sampling {len(labels)} images of variant {settings['name']} ({sampling['sampler']}, "
          f"{sampling['steps']} steps, guidance {guidance}, seed {sample_seed}) on {dev}", flush=True)
    images = generate(model, schedule, labels, seeds, sampling, guidance, dev, f"sample {settings['name']}")
    seconds = time.time() - started
    print(f"done in {seconds:.0f} s ({len(labels) / seconds:.1f} images/s)", flush=True)
    write_npz(out_npz, images=images, labels=labels, seeds=seeds)
