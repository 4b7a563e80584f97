"""The one place a suite's configuration is validated and resolved.

`validate_config` checks a config against cbdm/config.schema.yaml (filling its
defaults) and then checks what a schema cannot: that losses are registered, that class groups
name real classes, that variant overrides are well-typed. Stages receive resolved pieces
(`variant_settings`, ...) and never read raw config keys of their own.
"""
from __future__ import annotations

import copy
import difflib
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from . import field_losses  # noqa: F401  (registers the field's losses)
from .dataset import longtail_plan
from .fingerprint import fingerprint
from .labels import factor_label  # noqa: F401 (the rules call cbdm.config.factor_label)
from .losses import LOSSES, get_loss
from .metrics import most_inception_splits
from .objective import network_extras
from .sources import IMAGE_SHAPES, NUM_CLASSES, SOURCES_WITHOUT_TEST_SPLIT, TRAIN_CLASS_SIZES


class ConfigError(ValueError):
    """The config is wrong; the message says where and how to fix it."""


# The suite `snakemake` runs without --configfile, and `cbdm assets` reads without --config.
DEFAULT_CONFIG = "config/config.yaml"


def schema_path() -> Path:
    """The config schema shipped inside the package (cbdm/config.schema.yaml)."""
    return Path(str(resources.files("cbdm").joinpath("config.schema.yaml")))


@cache
def _schema() -> dict:
    return yaml.safe_load(schema_path().read_text())


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """The validated config in `path`; every error is one line starting with the file name."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return validate_config(deep_merge(read_config_file(path), overrides or {}), source=path)
    except ConfigError as err:
        raise ConfigError(err.args[0] if err.args[0].startswith(str(path)) else f"{path}: {err}") from err


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last
    one silently, so a second `training:` block would replace the first with the defaults."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(None, None, f"key {key!r} is given twice in one mapping: merge the two "
                                                f"(the second would silently replace the first)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> dict:
    """The mapping in a YAML file; a syntax error, an empty file or a non-mapping is a one-line
    ConfigError naming the file and line."""
    try:
        config = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except _DuplicateKey as err:
        raise ConfigError(f"{path}:{err.problem_mark.line + 1}: {err.problem}") from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(f"{path}:{mark.line + 1 if mark else '?'}: YAML syntax error: {err.problem or err.context}; "
                          f"fix the indentation, colon or quoting on that line") from err
    if config is None:
        raise ConfigError(f"{path} is empty: a config needs at least {', '.join(_schema()['required'])} "
                          f"(start from {DEFAULT_CONFIG})")
    if not isinstance(config, dict):
        raise ConfigError(f"{path}:1: a config is a mapping of keys ({', '.join(_schema()['required'])}, ...), "
                          f"not a {type(config).__name__}")
    return config


def validate_config(config: dict, source: Path | None = None) -> dict:
    """Schema-validate `config` in place, filling defaults in the same pass, then run `check`;
    returns it. `source`: the YAML file it came from, to name the line of a schema error."""
    problem = schema_problem(config, source)
    if problem is not None:
        raise ConfigError(problem)
    check(config)
    return config


def _filling_defaults(validator_class):
    """`validator_class` that also sets each missing property with a schema `default` before
    checking it (what snakemake.utils.validate did, so every default lands as it did)."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, declared, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in declared.items():
                if "default" in subschema:
                    # A copy: the cached schema's own default must not be shared by configs.
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, declared, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


DefaultsValidator = _filling_defaults(jsonschema.Draft202012Validator)


def schema_problem(config: dict, source: Path | None = None) -> str | None:
    """The most relevant schema violation of `config` as one line, or None; the schema's
    defaults are filled into `config` on the way."""
    if not config:
        return f"the config is empty: it needs at least {', '.join(_schema()['required'])}"
    error = jsonschema.exceptions.best_match(DefaultsValidator(_schema()).iter_errors(config))
    if error is None:
        return None
    keys, message = _explain(error)
    line = _line_of(source.read_text(), keys) if source is not None and source.exists() else None
    return f"{'.'.join(map(str, keys)) or 'top level'}{f' (line {line})' if line else ''}: {message}"


def _explain(error: jsonschema.ValidationError) -> tuple[list, str]:
    """(key path, what is wrong and the fix) of a schema error."""
    keys = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = list(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in known][0]
        nearest = difflib.get_close_matches(str(unknown), known, n=1)
        hint = f"did you mean `{nearest[0]}`?" if nearest else f"valid keys: {', '.join(known)}"
        return keys + [unknown], f"unknown key `{unknown}`; {hint}"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return keys, f"missing required key `{missing[0]}` (see cbdm/config.schema.yaml and config/config.yaml)"
    if "propertyNames" in error.absolute_schema_path:
        return keys, f"the name {error.instance!r} is not allowed: {error.schema['description']}"
    if error.validator in ("oneOf", "anyOf"):
        forms = ", ".join(str(sub.get("type", "see the schema")) for sub in error.validator_value)
        unquote = "; write the number without quotes" if _is_number_text(error.instance) else ""
        return keys, f"{error.instance!r} is none of the accepted forms ({forms}){unquote}"
    message = error.message if len(error.message) <= 160 else error.message[:160] + "..."
    return keys, f"{message} (see cbdm/config.schema.yaml)"


def _is_number_text(value) -> bool:
    """A string YAML kept as text that reads as a number ('1.5' quoted)."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def section_problem(section: dict, definition: str, where: str) -> None:
    """Validate a merged `training` or `sampling` section against its schema definition; a
    violation is a ConfigError naming the key under `where` (e.g. variants.cbdm.training.steps)."""
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _schema()["definitions"]}
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(section))
    if error is not None:
        keys, message = _explain(error)
        raise ConfigError(f"{'.'.join([where, *map(str, keys)])}: {message}")


def _line_of(text: str, keys: list) -> int | None:
    """1-based line of the deepest of `keys` found in the YAML `text`."""
    node, line = yaml.compose(text), None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def command_line_values(values: dict) -> dict:
    """Snakemake's --config reads nested values as strings ('seeds=[0,1]' gives ['0', '1']):
    the same values with numbers, booleans and null typed."""
    return {key: _typed(value) if isinstance(value, (list, dict)) else value for key, value in values.items()}


def _typed(value):
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if not isinstance(value, str):
        return value
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "null": None}.get(value.lower(), value)


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in, mapping by mapping (neither input changes)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def as_list(value) -> list:
    """`value` as a list: a list or tuple as is, a single value as a list of one."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def imbalance_factors(dataset: dict) -> list[float]:
    """The imbalance factor(s) a dataset declares, as a list."""
    return as_list(dataset["longtail"]["imbalance_factor"])


def factor_value(label: str, values, where: str) -> int | float:
    """The number among `values` (as the config writes them) whose factor_label is `label`, the
    {imb} or {guidance} of a path: jobs get the config's own number, never the label parsed back."""
    for value in as_list(values):
        if factor_label(value) == label:
            return value
    raise ConfigError(f"{where}: {label} is not declared ({', '.join(factor_label(v) for v in as_list(values))}); "
                      f"add it to the config or ask for a declared one")


def check(config: dict) -> None:
    """What the schema cannot check: datasets, variants, protocols, init chains, files; raises ConfigError."""
    for key in ("datasets", "variants"):
        _check_case_distinct(key, config[key])
    for name, dataset in config["datasets"].items():
        _check_dataset(name, dataset, config["evaluation"]["overlap"])
    _check_diffusion_and_network(config)
    _check_protocol_variants(config)
    for name in config["variants"]:
        variant_settings(config, name)  # raises on a bad override or loss
    _check_protocols(config)
    _check_inception_splits(config)
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


def _check_case_distinct(key: str, names) -> None:
    """Names that differ only in case name one folder on a case-insensitive file system (macOS,
    Windows): two variants' models and samples would overwrite each other there."""
    seen = {}
    for name in names:
        other = seen.setdefault(str(name).casefold(), name)
        if other != name:
            raise ConfigError(f"{key}: {other!r} and {name!r} differ only in case: on a case-insensitive file "
                              f"system (macOS, Windows) their folders are one; rename one of them")


def _check_diffusion_and_network(config: dict) -> None:
    """A noise schedule that grows, and a UNet that can be built for every dataset's images (the
    network's own checks, run here so that a bad geometry fails before training, not in it)."""
    from .networks import UNetConfig

    diffusion = config["diffusion"]
    if diffusion["beta_start"] >= diffusion["beta_end"]:
        raise ConfigError(f"diffusion: beta_start {diffusion['beta_start']} is not below beta_end "
                          f"{diffusion['beta_end']}; the noise schedule must grow (DDPM: 1e-4 to 0.02)")
    for name, dataset in config["datasets"].items():
        channels, size = IMAGE_SHAPES[dataset["source"]]
        size = dataset.get("image_size") or size
        try:
            UNetConfig(image_channels=channels, image_size=size, num_classes=NUM_CLASSES[dataset["source"]],
                       num_timesteps=diffusion["num_timesteps"], **config["network"])
        except ValueError as err:
            raise ConfigError(f"network: {err} (dataset {name}: {size}x{size} images)") from err


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
    if overlap is not None:
        shared = sorted(set(dataset["groups"][overlap["source"]]) & set(dataset["groups"][overlap["target"]]))
        if shared:
            raise ConfigError(f"datasets.{name}.groups: {overlap['source']} and {overlap['target']} share class(es) "
                              f"{shared}, so the {overlap['source']}->{overlap['target']} overlap would count "
                              f"correct samples as overlap; make the two groups disjoint")
    for factor in imbalance_factors(dataset):
        if factor < 1:
            raise ConfigError(f"datasets.{name}.longtail.imbalance_factor {factor} < 1: it is "
                              f"n_max / n_min (e.g. 100 for the reference code's imb_factor=0.01)")
    _check_class_counts(name, dataset)


def training_pool_sizes(dataset: dict) -> list[int]:
    """Images per class of a dataset's training pool (before the long tail is drawn)."""
    sizes = TRAIN_CLASS_SIZES[dataset["source"]]
    held_out = dataset["heldout_per_class"] if dataset["source"] in SOURCES_WITHOUT_TEST_SPLIT else 0
    return [n - held_out for n in sizes]


def _check_class_counts(name: str, dataset: dict) -> None:
    """Every class gets at least one training image and no more than its pool holds."""
    pool, longtail = training_pool_sizes(dataset), dataset["longtail"]
    if min(pool) < 1:
        raise ConfigError(f"datasets.{name}.heldout_per_class {dataset['heldout_per_class']} holds out every image "
                          f"of class {pool.index(min(pool))}; lower heldout_per_class")
    for factor in imbalance_factors(dataset):
        n_max, counts = longtail_plan(longtail, factor, len(pool), sum(pool))
        empty = [c for c, n in enumerate(counts) if n < 1]
        if empty:
            raise ConfigError(f"datasets.{name}.longtail: imbalance_factor {factor:g} with n_max {n_max:g} gives "
                              f"class(es) {empty} no training image (counts {counts}); lower imbalance_factor "
                              f"or raise n_max")
        short = [c for c, (n, p) in enumerate(zip(counts, pool)) if n > p]
        if short:
            raise ConfigError(f"datasets.{name}.longtail.n_max {n_max:g}: class {short[0]} would need "
                              f"{counts[short[0]]} images but its training pool holds {pool[short[0]]}; lower "
                              f"n_max (or heldout_per_class)")


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


def _check_inception_splits(config: dict) -> None:
    """IS splits that fewer splits would fix: splits holding fewer samples than a dataset's classes
    cap IS below a model's score (cbdm.metrics.most_inception_splits). A protocol too small for
    even one split is not refused: its IS is recorded as not computed, with the reason."""
    splits = config["evaluation"]["is_splits"]
    sizes = [(spec["num_samples"], NUM_CLASSES[dspec["source"]], name, dataset)
             for name, spec in config["evaluation"]["protocols"].items()
             for dataset, dspec in config["datasets"].items()]
    # The fewest splits any protocol and dataset allow: the fix must suit all of them.
    fits = sorted((most_inception_splits(n, classes), n, classes, name, dataset) for n, classes, name, dataset in sizes)
    most, n, classes, name, dataset = next((fit for fit in fits if fit[0] > 0), (splits, 0, 0, "", ""))
    if most < splits:
        raise ConfigError(f"evaluation.is_splits {splits}: protocol {name}'s {n} samples give splits of {n // splits}, "
                          f"fewer than the {classes} classes of {dataset}, which cap the Inception Score; set "
                          f"evaluation.is_splits to at most {most}")


def variant_settings(config: dict, name: str) -> dict:
    """Everything a stage needs to know about one variant: merged training and sampling
    settings, and its loss terms with all options resolved."""
    if name not in config["variants"]:
        raise ConfigError(f"unknown variant {name!r}; declared variants: {', '.join(config['variants'])}")
    spec = config["variants"][name]
    settings = {"name": name, "external": spec["external"], "description": spec["description"]}
    for section in ("training", "sampling"):
        merged = deep_merge(config[section], spec.get(section, {}))
        section_problem(merged, section, f"variants.{name}.{section}")
        settings[section] = merged
    _check_training(name, spec, settings["training"])
    settings["guidance"] = as_list(settings["sampling"]["guidance"])
    _check_sampler(config, f"variant {name}", settings["sampling"])
    settings["protocol_sampling"] = protocol_sampling(config, name, settings["sampling"])
    if spec.get("samples") is not None:
        return imported_settings(config, name, spec, settings)
    if spec["external"]:
        if spec.get("losses"):
            raise ConfigError(f"variant {name} is external (built by a user rule); remove its `losses`")
        settings["losses"] = []
        return settings
    if not spec.get("losses"):
        raise ConfigError(f"variant {name} declares no `losses`; list at least `- name: eps_mse`, "
                          f"or mark it `external: true` if a user rule builds it")
    settings["losses"] = loss_terms(name, spec["losses"])
    return settings


def twin_variants(config: dict) -> list[tuple[str, str]]:
    """Pairs (first, later) of variants that train and sample alike: every resolved setting but the
    name and description equal (an external variant's training is its rule's, so none is compared).
    Training is seeded by the training seed alone, so such a pair gives the same numbers twice."""
    first, pairs = {}, []
    for name in config["variants"]:
        settings = variant_settings(config, name)
        if settings["external"]:
            continue
        key = fingerprint(_as_floats({k: v for k, v in settings.items() if k not in ("name", "description")}))
        if key in first:
            pairs.append((first[key], name))
        first.setdefault(key, name)
    return pairs


def _as_floats(value):
    """`value` with every int a float: a weight of 1 trains as the default 1.0 (float(weight))."""
    if isinstance(value, dict):
        return {k: _as_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_floats(v) for v in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _check_training(name: str, spec: dict, training: dict) -> None:
    """Cross-key checks of variant `name`'s merged training settings; an error names the section
    that set the keys (the variant's override, or the shared `training`)."""
    def where(*keys: str) -> str:
        return f"variants.{name}.training" if set(keys) & set(spec.get("training", {})) else "training"

    if training["group_norm"] == "channels_last" and not training["channels_last"]:
        raise ConfigError(f"{where('group_norm', 'channels_last')}: group_norm 'channels_last' keeps a channels-last "
                          f"layout, but channels_last is false; set channels_last: true, or group_norm: native")
    # A checkpoint between loss-log rows would resume into a row averaged over steps it did not
    # sum, and be written before the finite-loss check of the steps it holds.
    if training["checkpoint_every"] % training["log_every"]:
        raise ConfigError(f"{where('checkpoint_every', 'log_every')}: checkpoint_every {training['checkpoint_every']} "
                          f"is not a multiple of log_every {training['log_every']}; set checkpoint_every to a "
                          f"multiple of log_every")
    if training["batch_size"] % training["processes"]:
        raise ConfigError(f"{where('batch_size', 'processes')}: batch_size {training['batch_size']} is not a multiple "
                          f"of processes {training['processes']}: each process takes an equal share of a batch")


def loss_terms(variant: str, losses: list[dict]) -> list[dict]:
    """Loss terms as the trainer takes them ({name, weight, options}, every option resolved) from
    `losses` as a config lists them (`- name: cbdm`, `weight: 0.1`, options); errors name `variant`.
    An extension rule training its own variant gives its losses here."""
    terms = []
    for i, term in enumerate(losses):
        # The trainer logs each term under its loss's name (one loss.csv column per loss), so a
        # second term of one loss would train but be logged as the first's value.
        first = next((j for j, t in enumerate(losses[:i]) if t.get("name") == term.get("name")), None)
        if first is not None:
            raise ConfigError(f"variant {variant}: loss {term['name']!r} is listed twice (losses {first + 1} and "
                              f"{i + 1}); the loss log keeps one column per loss: give it once, with the summed weight")
        options = {k: v for k, v in term.items() if k not in ("name", "weight")}
        try:
            loss = get_loss(term["name"])
            options = loss.options(options)
        except (KeyError, ValueError) as err:
            raise ConfigError(f"variant {variant}: {err.args[0]}") from err
        terms.append({"name": term["name"], "weight": term.get("weight", loss.weight), "options": options})
    weighted = [t["name"] for t in terms if t["weight"]]
    if terms and not weighted:
        raise ConfigError(f"variant {variant}: every loss term has weight 0, so training would never change the "
                          f"model; give a term a positive weight")
    if weighted and all(get_loss(name).regularizer for name in weighted):
        raise ConfigError(f"variant {variant}: its losses ({', '.join(weighted)}) are regularizers only: nothing "
                          f"would teach the network to predict the noise; add `- name: eps_mse` (or another "
                          f"denoising loss: t2h, cm)")
    return terms


def imported_settings(config: dict, name: str, spec: dict, settings: dict) -> dict:
    """A variant whose samples were made elsewhere: `samples` resolved to {guidance label:
    {training seed: path}}, each path checked; it has no training and one sampling seed. A plain
    path declares no guidance: its cells are labelled with the suite's first scale, which is not
    the files', so `sampling.guidance_declared` is false and tables show the scale as unknown."""
    clash = [key for key in ("losses", "training") if spec.get(key)] + (["external"] if spec["external"] else [])
    clash += [f"evaluation.protocols.{p}.sampling.{name}" for p in settings["protocol_sampling"]]
    if clash:
        raise ConfigError(f"variant {name} declares `samples` (imported, not trained) and {clash}: remove {clash}")
    given = spec["samples"]
    declared = not isinstance(given, str)
    if not declared:
        given = {settings["guidance"][0]: {config["seeds"][0]: given}}
    sets = {}
    for guidance, by_seed in given.items():
        try:
            sets[factor_label(float(guidance))] = {int(seed): str(path) for seed, path in by_seed.items()}
        except ValueError as err:
            raise ConfigError(f"variants.{name}.samples: keys are guidance scales, then training seeds "
                              f"(numbers), got {guidance!r} -> {list(by_seed)}") from err
    seeds = [sorted(s) for s in sets.values()]
    if any(s != seeds[0] for s in seeds):
        raise ConfigError(f"variants.{name}.samples: give every guidance scale the same seeds, got {seeds}")
    for path in (p for s in sets.values() for p in s.values()):
        if not Path(path).exists():
            raise ConfigError(f"variants.{name}.samples: {path!r} does not exist (paths are relative to the "
                              f"folder snakemake runs in)")
    _check_distinct_runs(name, sets)
    settings.update(losses=[], samples=sets, guidance=[float(g) for g in sets], seeds=seeds[0],
                    samples_format=spec["samples_format"], samples_resize=spec["samples_resize"])
    # The guidance scales are the ones the files were drawn at: the DAG's cells read them here.
    settings["sampling"] = {**settings["sampling"], "sampler": "imported", "steps": None,
                            "guidance": settings["guidance"], "seeds": settings["sampling"]["seeds"][:1],
                            "guidance_declared": declared}
    return settings


def _check_distinct_runs(name: str, sets: dict[str, dict[int, str]]) -> None:
    """Each run (guidance, training seed) of an imported variant has its own files: one set under
    two runs would be imported twice and counted as two runs (a spread of 0 over them)."""
    seen = {}
    for guidance, by_seed in sets.items():
        for seed, path in by_seed.items():
            where = seen.setdefault(Path(path).resolve(), (guidance, seed))
            if where != (guidance, seed):
                raise ConfigError(f"variants.{name}.samples: {path} is given for guidance {where[0]} seed {where[1]} "
                                  f"and for guidance {guidance} seed {seed}: one set would count as two runs; give "
                                  f"each run its own samples")


def _check_sampler(config: dict, where: str, sampling: dict) -> None:
    if sampling["sampler"] == "ddim" and sampling["steps"] > config["diffusion"]["num_timesteps"]:
        raise ConfigError(f"{where}: sampling.steps {sampling['steps']} exceeds diffusion.num_timesteps "
                          f"{config['diffusion']['num_timesteps']}; DDIM takes at most one step per timestep")
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
        section_problem(merged, "sampling", where)
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
            if config["variants"][source].get("samples") is not None:
                raise ConfigError(f"variant {seen[-1]}: training.init_from {source!r} is an imported variant "
                                  f"(samples:), which has no model file to start from; start {seen[-1]} from a "
                                  f"trained or external variant, or remove init_from")
            seen.append(source)
            source = variant_settings(config, source)["training"]["init_from"]
        _check_init_architecture(config, name)


def _check_init_architecture(config: dict, name: str) -> None:
    """Variant `name` starts from its init_from variant's weights, so the losses of both must add
    the same parameters (heads, a low-rank branch); an external or imported variant's network is
    not known here (training checks the model file it loads)."""
    settings = variant_settings(config, name)
    source = settings["training"]["init_from"]
    if source is None:
        return
    source_losses = variant_settings(config, source)["losses"]
    if not settings["losses"] or not source_losses:
        return
    mine, theirs = network_extras(settings["losses"]), network_extras(source_losses)
    if (dict(mine["heads"]), mine["lowrank_ratio"]) != (dict(theirs["heads"]), theirs["lowrank_ratio"]):
        raise ConfigError(f"variant {name}: training.init_from {source!r} has another network ({source}'s losses "
                          f"add {_extras(theirs)}, {name}'s add {_extras(mine)}), so its model file cannot "
                          f"initialise {name}; start {name} from a variant with the same heads and low-rank "
                          f"branch, or remove init_from")


def _extras(extras: dict) -> str:
    parts = [f"head {head} ({width})" for head, width in extras["heads"]]
    parts += [f"a low-rank branch (ratio {extras['lowrank_ratio']:g})"] if extras["lowrank_ratio"] else []
    return ", ".join(parts) or "no parameters"


PUBLISHED_FIELDS = {"source", "imbalance_factor", "method", "variant", "metric", "value", "status", "samples",
                    "reference_statistics", "inception_preprocessing", "protocol", "reference"}


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
    """{loss name: description} of every registered loss, by name."""
    return {name: term.description for name, term in sorted(LOSSES.items())}


def report_protocol(config: dict) -> str:
    """The protocol of the report's main table: evaluation.report_protocol, or the first declared."""
    return config["evaluation"]["report_protocol"] or next(iter(config["evaluation"]["protocols"]))


def baseline_variant(config: dict) -> str:
    """The variant the report compares the others with: evaluation.baseline, or the first declared."""
    return config["evaluation"]["baseline"] or next(iter(config["variants"]))
