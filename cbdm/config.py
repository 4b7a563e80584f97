"""The one place a suite's configuration is validated and resolved.

`validate_config` checks a config against workflow/schemas/config.schema.yaml (filling its
defaults) and then checks what a schema cannot: that losses are registered, that class groups
name real classes, that variant overrides are well-typed. Stages receive resolved pieces
(`variant_settings`, ...) and never read raw config keys of their own.
"""
from __future__ import annotations

import copy
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from . import field_losses  # noqa: F401  (registers the field's losses)
from .losses import LOSSES, get_loss
from .sources import NUM_CLASSES


class ConfigError(ValueError):
    """The config is wrong; the message says where and how to fix it."""


def schema_path() -> Path:
    return Path(str(resources.files("cbdm").joinpath("config.schema.yaml")))


@cache
def _schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    return validate_config(deep_merge(config, overrides or {}))


def validate_config(config: dict) -> dict:
    """Schema-validate `config` in place (filling defaults), then run `check`; returns it."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate  # the Snakefile validates with the same function

    try:
        validate(config, str(schema_path()))
    except WorkflowError as err:
        raise ConfigError(str(err)) from err
    check(config)
    return config


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def factor_label(value: float) -> str:
    """How a numeric factor (imbalance factor, guidance scale) appears in paths: 10, 2.5, 0.8."""
    return f"{value:g}"


def imbalance_factors(dataset: dict) -> list[float]:
    return as_list(dataset["longtail"]["imbalance_factor"])


def check(config: dict) -> None:
    for name, dataset in config["datasets"].items():
        _check_dataset(name, dataset, config["evaluation"]["overlap"])
    _check_protocol_variants(config)
    for name in config["variants"]:
        variant_settings(config, name)  # raises on a bad override or loss
    _check_protocols(config)
    _check_init_chains(config)
    if config["published"] is not None:
        load_published(config["published"])
    for path in config["extensions"]:
        if not Path(path).exists():
            raise ConfigError(f"extensions: rule file {path!r} does not exist (paths are relative "
                              f"to the folder snakemake runs in)")
    external = [v for v, spec in config["variants"].items() if spec["external"]]
    if external and not config["extensions"]:
        raise ConfigError(f"variant(s) {external} are external (built by a user rule) but no "
                          f"`extensions:` rule file is listed to build them; see README, 'Adding a variant'")


def _check_dataset(name: str, dataset: dict, overlap: dict | None) -> None:
    num_classes = NUM_CLASSES[dataset["source"]]
    for group, classes in dataset["groups"].items():
        bad = [c for c in classes if c >= num_classes]
        if bad:
            raise ConfigError(f"datasets.{name}.groups.{group} names class(es) {bad}, but "
                              f"{dataset['source']} has classes 0..{num_classes - 1}")
        if group == "all":
            raise ConfigError(f"datasets.{name}.groups: 'all' is reported anyway; choose another group name")
    missing = [g for g in (overlap or {}).values() if g not in dataset["groups"]]
    if missing:
        raise ConfigError(f"evaluation.overlap names group(s) {missing}, but datasets.{name}.groups "
                          f"declares {sorted(dataset['groups'])}: name two of them, or set overlap: null")
    for factor in imbalance_factors(dataset):
        if factor < 1:
            raise ConfigError(f"datasets.{name}.longtail.imbalance_factor {factor} < 1: it is "
                              f"n_max / n_min (e.g. 100 for the reference code's imb_factor=0.01)")


def _check_protocols(config: dict) -> None:
    protocols = config["evaluation"]["protocols"]
    baseline = config["evaluation"]["baseline"]
    if baseline is not None and baseline not in config["variants"]:
        raise ConfigError(f"evaluation.baseline {baseline!r} is not a declared variant "
                          f"({', '.join(config['variants'])})")
    main = config["evaluation"]["report_protocol"]
    if main is not None and main not in protocols:
        raise ConfigError(f"evaluation.report_protocol {main!r} is not one of the protocols "
                          f"{sorted(protocols)}")
    for name, spec in protocols.items():
        if spec["labels"] != "exact":
            continue
        for dataset, dspec in config["datasets"].items():
            classes = NUM_CLASSES[dspec["source"]]
            if spec["num_samples"] % classes:
                raise ConfigError(f"evaluation.protocols.{name}: num_samples {spec['num_samples']} is not a "
                                  f"multiple of the {classes} classes of {dataset}; 'exact' labels give "
                                  f"every class the same count")


def variant_settings(config: dict, name: str) -> dict:
    """Everything a stage needs to know about one variant: merged training and sampling
    settings, and its loss terms with all options resolved."""
    if name not in config["variants"]:
        raise ConfigError(f"unknown variant {name!r}; declared variants: {', '.join(config['variants'])}")
    spec = config["variants"][name]
    settings = {"name": name, "external": spec["external"], "description": spec["description"]}
    for section in ("training", "sampling"):
        merged = deep_merge(config[section], spec.get(section, {}))
        try:
            jsonschema.validate(merged, {"$ref": f"#/definitions/{section}",
                                         "definitions": _schema()["definitions"]})
        except jsonschema.ValidationError as err:
            raise ConfigError(f"variants.{name}.{section}: {err.message}") from err
        settings[section] = merged
    settings["guidance"] = as_list(settings["sampling"]["guidance"])
    _check_sampler(config, f"variant {name}", settings["sampling"])
    settings["protocol_sampling"] = protocol_sampling(config, name, settings["sampling"])
    if spec["external"]:
        if spec.get("losses"):
            raise ConfigError(f"variant {name} is external (built by a user rule); remove its `losses`")
        settings["losses"] = []
        return settings
    if not spec.get("losses"):
        raise ConfigError(f"variant {name} declares no `losses`; list at least `- name: eps_mse`, "
                          f"or mark it `external: true` if a user rule builds it")
    terms = []
    for term in spec["losses"]:
        options = {k: v for k, v in term.items() if k not in ("name", "weight")}
        try:
            loss = get_loss(term["name"])
            options = loss.options(options)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"variant {name}: {err.args[0]}") from err
        terms.append({"name": term["name"], "weight": term.get("weight", 1.0), "options": options})
    settings["losses"] = terms
    return settings


def _check_sampler(config: dict, where: str, sampling: dict) -> None:
    if sampling["sampler"] == "ancestral" and sampling["steps"] != config["diffusion"]["num_timesteps"]:
        raise ConfigError(f"{where}: ancestral sampling takes every one of the "
                          f"{config['diffusion']['num_timesteps']} timesteps, but sampling.steps is "
                          f"{sampling['steps']}; set sampler: ddim to sample with fewer steps")


def protocol_sampling(config: dict, name: str, sampling: dict) -> dict[str, dict]:
    """{protocol: sampling settings} for the protocols that override variant `name`'s sampling
    (`evaluation.protocols.<p>.sampling.<variant>`, e.g. a method's published sampler); the
    variant's own `sampling` is the base each override is merged into."""
    resolved = {}
    for protocol, spec in config["evaluation"]["protocols"].items():
        if name not in spec.get("sampling", {}):
            continue
        merged = deep_merge(sampling, spec["sampling"][name])
        where = f"evaluation.protocols.{protocol}.sampling.{name}"
        try:
            jsonschema.validate(merged, {"$ref": "#/definitions/sampling", "definitions": _schema()["definitions"]})
        except jsonschema.ValidationError as err:
            raise ConfigError(f"{where}: {err.message}") from err
        _check_sampler(config, where, merged)
        resolved[protocol] = merged
    return resolved


def _check_protocol_variants(config: dict) -> None:
    for protocol, spec in config["evaluation"]["protocols"].items():
        unknown = sorted(set(spec.get("sampling", {})) - set(config["variants"]))
        if unknown:
            raise ConfigError(f"evaluation.protocols.{protocol}.sampling names unknown variant(s) {unknown}; "
                              f"declared: {', '.join(config['variants'])}")


def _check_init_chains(config: dict) -> None:
    for name in config["variants"]:
        seen = [name]
        source = variant_settings(config, name)["training"]["init_from"]
        while source is not None:
            if source not in config["variants"]:
                raise ConfigError(f"variant {seen[-1]}: training.init_from names unknown variant "
                                  f"{source!r}; declared: {', '.join(config['variants'])}")
            if source in seen:
                raise ConfigError(f"variants initialise each other in a cycle: {' -> '.join(seen + [source])}")
            seen.append(source)
            source = variant_settings(config, source)["training"]["init_from"]


PUBLISHED_FIELDS = {"source", "imbalance_factor", "method", "variant", "metric", "value", "protocol", "reference"}


def load_published(path: str) -> list[dict]:
    """The registry of published results (config `published:`), checked entry by entry."""
    if not Path(path).exists():
        raise ConfigError(f"published: registry {path!r} does not exist (paths are relative to the folder "
                          f"snakemake runs in)")
    entries = yaml.safe_load(Path(path).read_text()) or []
    for i, entry in enumerate(entries):
        fields = set(entry) if isinstance(entry, dict) else set()
        if fields != PUBLISHED_FIELDS:
            raise ConfigError(f"{path}, entry {i + 1}: fields must be exactly {sorted(PUBLISHED_FIELDS)}; "
                              f"missing {sorted(PUBLISHED_FIELDS - fields)}, "
                              f"unknown {sorted(fields - PUBLISHED_FIELDS)}")
        if entry["value"] is not None and not isinstance(entry["value"], (int, float)):
            raise ConfigError(f"{path}, entry {i + 1} ({entry['method']}): value must be a number or null "
                              f"(not available), got {entry['value']!r}")
    return entries


def registered_losses() -> dict[str, str]:
    return {name: term.description for name, term in sorted(LOSSES.items())}
