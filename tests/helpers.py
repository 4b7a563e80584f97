"""Shared test helpers."""
from cbdm.config import validate_config, variant_settings

# n_max 100: the default (pool size / classes) exceeds the smallest digits class, which check refuses.
DIGITS = {"source": "sklearn_digits", "longtail": {"n_max": 100},
          "groups": {"head": [0, 1, 2, 3, 4], "tail": [5, 6, 7, 8, 9]}}


def training_settings(losses: list[dict], **training) -> dict:
    """What a training job receives for a variant with these losses (config form, e.g.
    {"name": "cbdm", "tau": 1.0}) and training keys, every other key at its schema default."""
    config = validate_config({"suite": "t", "datasets": {"digits": dict(DIGITS)}, "training": training,
                              "variants": {"v": {"losses": losses}}})
    resolved = variant_settings(config, "v")
    return {"name": "v", "losses": resolved["losses"], "training": resolved["training"]}


def sampling_settings(**sampling) -> dict:
    """A variant's resolved `sampling` section with these keys, every other key at its schema default."""
    config = validate_config({"suite": "t", "datasets": {"digits": dict(DIGITS)}, "sampling": sampling,
                              "variants": {"v": {"losses": [{"name": "eps_mse"}]}}})
    return variant_settings(config, "v")["sampling"]
