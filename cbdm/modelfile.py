"""The trained-model file every sampler reads, and the training checkpoint.

Model file (`model.pt`, format "cbdm.model/1"): a `torch.save`d dict of plain types and tensors,
loadable with `weights_only=True`:

    format:      "cbdm.model/1"
    unet:        UNetConfig as a dict (image_channels, image_size, num_classes, base_channels, ...)
    diffusion:   {num_timesteps, beta_start, beta_end}
    state_dict:  the UNet weights to sample with (the EMA weights for cbdm's trainer)
    meta:        free-form provenance (variant, seed, steps, parameter count, ...)

A user rule that builds an external variant writes exactly this (see `save_model`).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .diffusion import NoiseSchedule
from .io import InputError, atomic_path
from .networks import UNet, UNetConfig

MODEL_FORMAT = "cbdm.model/1"
CHECKPOINT_FORMAT = "cbdm.checkpoint/1"


def save_model(path, model: UNet, diffusion: dict, meta: dict, state_dict: dict | None = None) -> None:
    payload = {"format": MODEL_FORMAT, "unet": model.cfg.to_dict(), "diffusion": dict(diffusion),
               "state_dict": state_dict if state_dict is not None else model.state_dict(),
               "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_payload(path, expected_format: str, fix: str) -> dict:
    """The dict saved in a cbdm file of `expected_format`; InputError naming `fix` otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist: {fix}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, pickle.UnpicklingError) as err:
        raise InputError(f"{path} is corrupt or truncated ({str(err).splitlines()[0]}): {fix}") from err
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path} is not a {expected_format} file (format: {found!r}): {fix}")
    return payload


def load_model(path, device="cpu") -> tuple[UNet, NoiseSchedule, dict]:
    """(network in eval mode, noise schedule, the whole payload) of a model file."""
    fix = ("delete it and re-run the rule that builds it; a user rule must write the format "
           "documented in cbdm/modelfile.py")
    payload = load_payload(path, MODEL_FORMAT, fix)
    try:
        model = UNet(UNetConfig(**payload["unet"]))
        model.load_state_dict(payload["state_dict"])
        d = payload["diffusion"]
        schedule = NoiseSchedule.linear(d["num_timesteps"], d["beta_start"], d["beta_end"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path} does not hold a consistent model ({err}): {fix}") from err
    return model.to(device).eval(), schedule.to(device), payload


def save_checkpoint(path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path) -> dict:
    return load_payload(path, CHECKPOINT_FORMAT,
                 "delete the checkpoint to restart this training run from step 0")
