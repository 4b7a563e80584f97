"""Stage 3: draw a sample set from a trained model.

The labels follow a protocol's policy: 'exact' (the same count for every class),
'uniform_random' (an independent uniform label per image, the reference evaluation),
'train_prior' (exact counts in proportion to the training set) or 'fill' (what tops every class
up to a share of the largest class, for the augmentation experiment; the number in its label
set, e.g. 'fill-100', is that share in percent). Image i of sampling seed s has
seed s * SEED_STRIDE + i, so any image can be regenerated alone.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from .acceleration import autocast, configure_backends, prepare_network, resolve_device
from .fingerprint import file_fingerprint, fingerprint, origin_array
from .io import InputError, progress_bar, read_npz, write_npz
from .modelfile import check_identity, load_model
from .samplers import image_shape, sample_ancestral, sample_ddim, to_uint8

SEED_STRIDE = 1_000_000
# The sampling settings an image depends on (threads and batch size do not change any image).
IMAGE_SETTINGS = ("sampler", "steps", "eta", "variance", "precision", "batched_guidance", "compile", "compile_mode",
                  "tf32")


class SamplingError(RuntimeError):
    """Samples that must not be saved (not finite: the uint8 conversion would make them black)."""


def sample_labels(policy: str, num_samples: int, class_counts: list[int], seed: int) -> np.ndarray:
    """Labels of a sample set, sorted by class except for 'uniform_random'."""
    num_classes = len(class_counts)
    if policy == "exact":
        if num_samples % num_classes:
            raise ValueError(f"num_samples={num_samples} is not a multiple of the {num_classes} classes; "
                             f"'exact' labels give every class the same count")
        return np.repeat(np.arange(num_classes), num_samples // num_classes)
    if policy == "uniform_random":
        return np.random.RandomState(seed).randint(num_classes, size=num_samples)
    if policy == "fill":
        return np.repeat(np.arange(num_classes), fill_counts(class_counts, num_samples))
    if policy == "train_prior":
        share = np.asarray(class_counts, dtype=np.float64) * num_samples / np.sum(class_counts)
        counts = np.floor(share).astype(int)
        # Largest remainders take the images left over by rounding down.
        counts[np.argsort(-(share - counts), kind="stable")[:num_samples - counts.sum()]] += 1
        return np.repeat(np.arange(num_classes), counts)
    raise ValueError(f"unknown label policy {policy!r}; use 'exact', 'uniform_random', 'train_prior' or 'fill'")


def fill_counts(class_counts: list[int], percent: int) -> np.ndarray:
    """Generated images per class that fill every class up to `percent` % of the largest class
    (the 'fill' label policy of the augmentation experiment; none where a class is above it)."""
    target = round(percent / 100 * max(class_counts))
    return np.maximum(0, target - np.asarray(class_counts, dtype=np.int64))


def image_seeds(sample_seed: int, count: int) -> np.ndarray:
    """The per-image seeds of `count` images of sampling seed `sample_seed` (a disjoint range per sampling seed)."""
    if count > SEED_STRIDE:
        raise ValueError(f"{count} images exceed the {SEED_STRIDE} seeds reserved per sampling seed")
    return sample_seed * SEED_STRIDE + np.arange(count)


def generate(model, schedule, labels: np.ndarray, seeds: np.ndarray, sampling: dict, guidance: float,
             device: torch.device, desc: str = "sample", shard_dir: Path | None = None,
             model_id: str | None = None) -> np.ndarray:
    """uint8 images [N, C, H, W] for the given labels and per-image seeds, batch by batch. With
    `shard_dir`, every finished batch is kept there, so that a killed job started again redoes
    only the batches it had not finished. A kept batch carries the fingerprint of everything its
    images depend on (`model_id`: the model file's digest; the sampling settings, guidance,
    labels and seeds) and is reused only on an exact match."""
    configure_backends(tf32=sampling["tf32"], cudnn_benchmark=sampling["cudnn_benchmark"])
    network = prepare_network(model, compile=sampling["compile"], compile_mode=sampling["compile_mode"])
    batch = sampling["batch_size"]
    steps_per_batch = schedule.num_timesteps if sampling["sampler"] == "ancestral" else sampling["steps"]
    progress = progress_bar(total=steps_per_batch * -(-len(labels) // batch), desc=desc)
    content_settings = {key: sampling[key] for key in IMAGE_SETTINGS} | {"device": device.type}
    out, reused = [], 0
    for start in range(0, len(labels), batch):
        y_np, s = labels[start:start + batch], seeds[start:start + batch]
        shard = shard_dir / f"{start:09d}.npz" if shard_dir is not None else None
        batch_id = fingerprint(model_id, content_settings, guidance, y_np.tolist(), s.tolist())
        kept = _read_shard(shard, batch_id)
        if kept is not None:
            out.append(kept)
            reused += 1
            progress.update(steps_per_batch)
            continue
        y = torch.from_numpy(y_np).to(device)
        with autocast(device, sampling["precision"]):
            if sampling["sampler"] == "ancestral":
                x = sample_ancestral(network, schedule, y, s, guidance=guidance, variance=sampling["variance"],
                                     batched_guidance=sampling["batched_guidance"], progress=progress)
            else:
                x = sample_ddim(network, schedule, y, s, guidance=guidance, steps=sampling["steps"],
                                eta=sampling["eta"], batched_guidance=sampling["batched_guidance"],
                                progress=progress)
        check_finite(x, guidance, s)
        out.append(to_uint8(x).cpu().numpy())
        if shard is not None:
            write_npz(shard, images=out[-1], labels=y_np, seeds=s, fingerprint=np.array(batch_id))
    progress.close()
    if reused:
        print(f"reused {reused} finished batch(es) from {shard_dir}", flush=True)
    # A fill whose classes all reach the target already draws nothing: an empty set, not an error.
    return np.concatenate(out) if out else np.zeros((0, *image_shape(model)), np.uint8)


def check_finite(x: torch.Tensor, guidance: float, seeds: np.ndarray) -> None:
    """SamplingError where a batch holds non-finite values: NaN becomes 0 in the uint8 conversion,
    so a diverged model's samples would be saved, featurised and scored as black images."""
    bad = int((~torch.isfinite(x.flatten(1))).any(1).sum())
    if bad:
        raise SamplingError(f"{bad} of {len(x)} images of the batch from seed {int(seeds[0])} are not finite at "
                            f"guidance {guidance:g}: the model's weights or this guidance scale make the sampler "
                            f"diverge; check the training log for a non-finite loss and retrain, or lower the guidance")


def _read_shard(path: Path | None, batch_id: str) -> np.ndarray | None:
    """A kept batch, if it was made by exactly this job (same fingerprint)."""
    if path is None or not path.exists():
        return None
    try:
        shard = read_npz(path, {"images": 4, "fingerprint": 0})
    except InputError:
        return None
    return shard["images"] if str(shard["fingerprint"]) == batch_id else None


def sample(settings: dict, *, model_path: str, guidance: float, sample_seed: int, labels: str,
           num_samples: int, class_counts: list[int], device: str, out_npz: str,
           identity: dict | None = None, origin: dict | None = None) -> None:
    """Draw one sample set; with `identity`, refuse a model file trained for anything else. The
    set records `origin`, the cell it is drawn for, which the jobs that read it check."""
    sampling = settings["sampling"]
    dev = resolve_device(device)
    model, schedule, payload = load_model(model_path, dev)
    if identity is not None:
        check_identity(model_path, payload, identity)
    if model.cfg.num_classes != len(class_counts):
        raise ValueError(f"{model_path} has {model.cfg.num_classes} classes but the dataset has "
                         f"{len(class_counts)}: the model file belongs to another dataset; rebuild it")
    y = sample_labels(labels, num_samples, class_counts, sample_seed)
    seeds = image_seeds(sample_seed, len(y))
    started = time.time()
    print(f"sampling {len(y)} images ({labels} labels) of variant {settings['name']} "
          f"({sampling['sampler']}, {sampling['steps']} steps, guidance {guidance}, seed {sample_seed}) "
          f"on {dev}", flush=True)
    shard_dir = Path(f"{out_npz}.shards")
    try:
        images = generate(model, schedule, y, seeds, sampling, guidance, dev, f"sample {settings['name']}",
                          shard_dir, model_id=file_fingerprint(model_path))
    except SamplingError as err:
        raise SamplingError(f"{model_path}: {err}") from None
    seconds = time.time() - started
    print(f"done in {seconds:.0f} s ({len(y) / seconds:.1f} images/s)", flush=True)
    write_npz(out_npz, images=images, labels=y, seeds=seeds, **origin_array(origin))
    shutil.rmtree(shard_dir, ignore_errors=True)
