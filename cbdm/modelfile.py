"""The trained-model file every sampler reads, and the training checkpoint.

Model file (`model.pt`, format "cbdm.model/1"): a `torch.save`d dict of plain types and tensors,
loadable with `weights_only=True`:

    format:      "cbdm.model/1"
    unet:        UNetConfig as a dict (image_channels, image_size, num_classes, base_channels, ...)
    diffusion:   {num_timesteps, beta_start, beta_end}
    state_dict:  the UNet weights to sample with (the EMA weights for cbdm's trainer)
    meta:        provenance (steps, parameter count, ...) and `identity`: what the model was
                 trained for, {variant, dataset, imbalance_factor (its path label), seed,
                 training_digest (fingerprint of the resolved training settings),
                 data_digest (cbdm.dataset.data_digest: the settings that define its training data)}

A user rule that builds an external variant writes exactly this with `save_model`. A sampling
job refuses a model file whose identity is not the one it expects (a copied or moved file).
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .diffusion import NoiseSchedule
from .fingerprint import check_recorded
from .io import InputError, rebuild, save_torch
from .networks import UNet, UNetConfig

MODEL_FORMAT = "cbdm.model/1"
# /2: the device type and every data-parallel process's global generators (dropout's, the GPU's
# included); a /1 checkpoint lacks them, so it cannot resume a run exactly and is refused.
CHECKPOINT_FORMAT = "cbdm.checkpoint/2"


IDENTITY_KEYS = ("variant", "dataset", "imbalance_factor", "seed", "training_digest", "data_digest")
# What a sampling job always checks; the digests too where the job knows them (the training
# digest for a variant cbdm trains, an external variant's builder writing its own; the data
# digest for every variant, the workflow's model_identity giving it to the builders too).
CHECKED_IDENTITY = IDENTITY_KEYS[:4]
# The digests, and what each covers.
DIGESTS = {"training_digest": "settings", "data_digest": "training data"}


def require_identity_keys(identity: dict) -> None:
    """Refuse an identity without exactly IDENTITY_KEYS (checked before training, not after)."""
    if set(identity) != set(IDENTITY_KEYS):
        raise ValueError(f"a model file's identity needs exactly {list(IDENTITY_KEYS)}, got {sorted(identity)}")


def save_model(path, model: UNet, diffusion: dict, meta: dict, *, identity: dict,
               state_dict: dict | None = None) -> None:
    """Write a model file; `identity` holds exactly IDENTITY_KEYS."""
    require_identity_keys(identity)
    payload = {"format": MODEL_FORMAT, "unet": model.cfg.to_dict(), "diffusion": dict(diffusion),
               "state_dict": state_dict if state_dict is not None else model.state_dict(),
               "meta": {**meta, "identity": dict(identity)}}
    save_torch(payload, path)


def check_identity(path, payload: dict, expected: dict) -> None:
    """InputError unless the model file at `path` was trained for `expected` (variant, dataset,
    imbalance factor label, seed, and each digest that `expected` holds)."""
    found = payload.get("meta", {}).get("identity")
    if not isinstance(found, dict):
        raise InputError(f"{path} records no identity (variant, dataset, imbalance factor, seed): it was "
                         f"not written by cbdm.modelfile.save_model; {rebuild(path)}")
    check_recorded(path, {k: str(found.get(k)) for k in CHECKED_IDENTITY},
                   {k: str(expected[k]) for k in CHECKED_IDENTITY},
                   holds="was trained for", needs="this job needs", cause="the file was copied or moved")
    for key, what in DIGESTS.items():
        if expected.get(key) is None:
            continue
        name = key.replace("_", " ")
        if key not in found:  # written before model files recorded it: nothing proves what it was trained on
            raise InputError(f"{path} records no {name} (it predates model files recording their "
                             f"{what}), so nothing proves what it was trained on: retrain it; {rebuild(path)}")
        check_recorded(path, {name: found[key]}, {name: expected[key]}, holds=f"was trained with the {what} of",
                       needs=f"this config's {what} are of",
                       cause="it was copied from another suite, or the settings changed while Snakemake did not "
                             "rerun the training (--rerun-triggers mtime)")


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
    fix = f"{rebuild(path)}; a user rule must write the format documented in cbdm/modelfile.py"
    payload = load_payload(path, MODEL_FORMAT, fix)
    try:
        model = UNet(UNetConfig(**payload["unet"]))
        model.load_state_dict(payload["state_dict"])
        d = payload["diffusion"]
        schedule = NoiseSchedule.linear(d["num_timesteps"], d["beta_start"], d["beta_end"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        detail = " ".join(str(err).split())  # torch's state_dict errors span several lines
        raise InputError(f"{path} does not hold a consistent model ({detail[:300]}): {fix}") from err
    return model.to(device).eval(), schedule.to(device), payload


def save_checkpoint(path, state: dict) -> None:
    """Write a training checkpoint, atomically."""
    save_torch({"format": CHECKPOINT_FORMAT, **state}, path)


def load_checkpoint(path) -> dict:
    """A training checkpoint's state; InputError naming the fix for a damaged file."""
    return load_payload(path, CHECKPOINT_FORMAT,
                 "delete the checkpoint to restart this training run from step 0")
