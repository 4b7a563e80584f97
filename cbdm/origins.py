"""What a suite's model files and sample sets must record they are of, from the resolved config
and a cell's path labels: a model file's identity (cbdm.modelfile.check_identity) and a sample
set's origin (cbdm.fingerprint.check_origin).

The rules (workflow/rules/common.smk) give these to the jobs that write and read the files, and
the readers of a finished suite (cbdm.phenomenon) compute them from the suite's recorded config:
one computation, so that what a job wrote and what a later reader expects cannot drift apart.
Every cell field is the label its path carries (imbalance factor '100', guidance '1.5'), as
the files record them; seeds are numbers.
"""
from __future__ import annotations

from .config import factor_value, imbalance_factors, variant_settings
from .dataset import data_digest
from .fingerprint import fingerprint
from .sample import IMAGE_SETTINGS
from .train import training_digest


def labelset_protocol(labelset: str) -> str | None:
    """The protocol a sample set's name carries ('exact-1000-published' -> 'published'), or None."""
    parts = labelset.split("-", 2)
    return parts[2] if len(parts) == 3 else None


def variant_sampling(settings: dict, protocol: str | None = None) -> dict:
    """The sampling settings a variant (its cbdm.config.variant_settings) is evaluated with under
    `protocol` (None: its own)."""
    return settings["protocol_sampling"].get(protocol, settings["sampling"])


def training_settings(settings: dict) -> dict:
    """What a variant's training depends on (sampling settings are not: changing them must not retrain)."""
    return {key: settings[key] for key in ("name", "losses", "training")}


def trained_by_cbdm(settings: dict | None) -> bool:
    """Whether cbdm's own train rule trains the variant: neither built by a user rule (external)
    nor imported (`samples`); None (an undeclared variant) is not."""
    return settings is not None and not settings["external"] and not settings.get("samples")


def training_origin(cell: dict) -> dict:
    """The data_origin (cbdm.dataset.data_origin) of the training set a cell's model learnt from,
    out of the cell (a sample set's origin, or a model's identity): its dataset, imbalance factor
    label and data digest. The sample and import jobs check the manifest their class counts come
    from against it (cbdm.dataset.read_manifest), needing no expectation of their own."""
    return {key: cell[key] for key in ("dataset", "imbalance_factor", "data_digest")}


def imbalance_factor(config: dict, dataset: str, imb: str) -> float:
    """The imbalance factor (the config's number, as a float) that an {imb} label names."""
    factors = imbalance_factors(config["datasets"][dataset])
    return float(factor_value(imb, factors, f"datasets.{dataset}.longtail.imbalance_factor"))


def _settings(config: dict, variant: str, variants: dict | None) -> dict | None:
    # The caller's resolved settings where it has them (the workflow resolves each variant once).
    if variants is not None:
        return variants.get(variant)
    return variant_settings(config, variant) if variant in config["variants"] else None


def model_identity(config: dict, *, dataset: str, imb: str, variant: str, seed: int | str, digest: bool = True,
                   variants: dict | None = None) -> dict:
    """What a model file must say it was trained for: its cell, the digest of the settings that
    define its training data (cbdm.dataset.data_digest, for every variant: an external variant's
    builder writes it as given) and, for a variant cbdm trains, the digest of its training
    settings, so that a model trained otherwise (copied from another suite) is refused even where
    Snakemake would not rerun its training (`digest=False` for the training job, which computes it
    itself). `variants`: {name: variant_settings} where the caller resolved them."""
    identity = dict(variant=variant, dataset=dataset, imbalance_factor=imb, seed=int(seed),
                    data_digest=data_digest(config["datasets"][dataset], imbalance_factor(config, dataset, imb)))
    settings = _settings(config, variant, variants) if digest else None
    if trained_by_cbdm(settings):
        identity["training_digest"] = training_digest(training_settings(settings), config["network"],
                                                      config["diffusion"])
    return identity


def sample_origin(config: dict, *, dataset: str, imb: str, variant: str, seed: int | str, guidance: str,
                  sample_seed: int | str, labelset: str, variants: dict | None = None) -> dict:
    """What a sample set is of: its cell (labelset e.g. 'exact-1000', or 'exact-1000-<protocol>'
    for a protocol's own sampling), the training and data digests of its model and a digest of the
    settings its images depend on. Its sample or import job writes it into the set and its
    features file, and every reader compares it with its own (cbdm.fingerprint.check_origin), so
    that a set copied over another cell's, or an older run's kept with touched mtimes, is refused
    instead of scored as this cell's. `variants`: as for model_identity."""
    settings = variants[variant] if variants is not None else variant_settings(config, variant)
    sampling = variant_sampling(settings, labelset_protocol(labelset))
    model = model_identity(config, dataset=dataset, imb=imb, variant=variant, seed=seed,
                           variants={variant: settings})
    return dict(dataset=dataset, imbalance_factor=imb, variant=variant, seed=int(seed), guidance=guidance,
                sample_seed=int(sample_seed), labelset=labelset, training_digest=model.get("training_digest"),
                data_digest=model["data_digest"], sampling=fingerprint({key: sampling[key] for key in IMAGE_SETTINGS}))
