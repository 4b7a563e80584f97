"""The `cbdm` command: check a config, list the registered losses, and list, verify or fetch
the files a config needs (the only way cbdm downloads anything besides `download: true`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import (
    DEFAULT_CONFIG,
    ConfigError,
    imbalance_factors,
    load_config,
    registered_losses,
    twin_variants,
    variant_settings,
)


def _load(path: str) -> dict | None:
    """The validated config in `path`, or None after printing its one-line error (which names the file)."""
    try:
        return load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


def cmd_losses(args) -> int:
    """List the registered losses with their options and allowed values."""
    from .losses import LOSSES

    for name, description in registered_losses().items():
        term = LOSSES[name]
        options = ", ".join(f"{k}={v!r}{_allowed(term.specs[k])}" for k, v in term.defaults.items()) or "no options"
        kind = "; a regularizer: list it with a denoising loss" if term.regularizer else ""
        print(f"{name}: {description}\n    weight={term.weight:g}{kind}; {options}")
    return 0


def _allowed(spec) -> str:
    """' (one of a|b)', ' (>= 0)' or '' for a loss option's declared values."""
    if spec.choices is not None:
        return f" (one of {'|'.join(map(str, spec.choices))})"
    bounds = [f">= {spec.minimum:g}" if spec.minimum is not None else "",
              f"> {spec.above:g}" if spec.above is not None else "",
              f"<= {spec.maximum:g}" if spec.maximum is not None else ""]
    return f" ({', '.join(b for b in bounds if b)})" if any(bounds) else ""


def cmd_check(args) -> int:
    """Validate a config and everything that can be known before the first job: the schema,
    losses and their options, class counts, data files and weights (against the asset lock),
    imported sample sets and, as a warning, a GPU for `device: cuda`."""
    config = _load(args.config)
    if config is None:
        return 1
    missing = missing_assets(config, args.config)
    missing += sample_set_problems(config, args.config)
    for line in missing:
        print(line, file=sys.stderr)
    if config["device"] == "cuda" and not _torch_sees_a_gpu():
        print(f"{args.config}: warning: device: cuda, but torch sees no GPU on this machine; jobs that run "
              f"here will fail (set device: auto to run on the CPU)", file=sys.stderr)
    for line in emulated_bf16_warnings(config, args.config):
        print(line, file=sys.stderr)
    for name in config["variants"]:
        settings = variant_settings(config, name)
        terms = ", ".join(f"{t['weight']} x {t['name']}" for t in settings["losses"]) or \
            (f"imported samples {settings['samples']}" if settings.get("samples") else "external rule")
        print(f"variant {name}: {terms}; guidance {settings['guidance']}")
        training = settings["training"]
        if not settings.get("samples") and not settings["external"] and training["warmup_steps"] >= training["steps"]:
            print(f"{args.config}: warning: variant {name}: training.warmup_steps {training['warmup_steps']} >= "
                  f"steps {training['steps']}, so the learning rate never reaches training.lr; lower warmup_steps",
                  file=sys.stderr)
    for first, later in twin_variants(config):
        print(f"{args.config}: warning: variants {first} and {later} train and sample alike (the same losses, "
              f"training and sampling settings): their rows will repeat each other; change one, or remove it",
              file=sys.stderr)
    if missing:
        return 1
    print(f"{args.config}: OK")
    return 0


def emulated_bf16_warnings(config: dict, config_path: str) -> list[str]:
    """A warning per stage whose bf16 would run emulated on this machine's CPU (no GPU to run on,
    no AVX-512 BF16 or AMX), where it is ~10x slower than fp32 (cbdm.acceleration.bf16_is_native).
    None for a GPU suite (device: cuda, or jobs that ask a scheduler for GPUs, as the paper
    configs' do from a login node without one)."""
    import torch

    from .acceleration import bf16_is_native
    from .origins import trained_by_cbdm
    from .workflow import gpus_per_job

    on_gpus = config["device"] == "cuda" or gpus_per_job(config) > 0
    if on_gpus or (config["device"] == "auto" and _torch_sees_a_gpu()) or bf16_is_native(torch.device("cpu")):
        return []
    settings = {name: variant_settings(config, name) for name in config["variants"]}
    ours = {name: s for name, s in settings.items() if trained_by_cbdm(s)}
    lines = []
    for stage in ("training", "sampling"):
        names = [name for name, s in ours.items() if s[stage]["precision"] == "bf16"]
        if names:
            lines.append(f"{config_path}: warning: {stage}.precision: bf16 (variants {', '.join(names)}) on a CPU "
                         f"without native bfloat16 ({torch.backends.cpu.get_cpu_capability()}): emulated, about 10x "
                         f"slower than fp32 here; set {stage}.precision: fp32 (numbers differ within float rounding)")
    return lines


def missing_assets(config: dict, config_path: str) -> list[str]:
    """One error line per data or weights file the config needs that is missing or corrupt."""
    from .assets import DataError

    lines = []
    for label, check, _ in _config_assets(config):
        try:
            check()
        except DataError as err:
            lines.append(f"{config_path}: {label}: {err} (fetch: cbdm assets fetch --config {config_path})")
    return lines


def sample_set_problems(config: dict, config_path: str) -> list[str]:
    """One error line per `samples:` file that its import job would refuse (format, shape, labels,
    pixel values against the dataset's training pool, cbdm.samplesets): found here, not after the
    dataset and classifier jobs. A dataset whose files are missing is skipped (missing_assets
    names it)."""
    from .dataset import split_source
    from .samplesets import SampleSetError, read_samples
    from .sources import CLASS_NAMES, NUM_CLASSES, DataError

    imported = {name: variant_settings(config, name) for name in config["variants"]}
    imported = {name: settings for name, settings in imported.items() if settings.get("samples")}
    lines = []
    for dataset, spec in config["datasets"].items() if imported else ():
        try:
            pool = split_source(spec)[0].images
        except (DataError, OSError):
            continue
        for name, settings in imported.items():
            for path in sorted({p for by_seed in settings["samples"].values() for p in by_seed.values()}):
                try:
                    sample_set = read_samples(path, num_classes=NUM_CLASSES[spec["source"]],
                                              image_shape=pool.shape[1:], class_names=CLASS_NAMES[spec["source"]],
                                              fmt=settings["samples_format"], resize=settings["samples_resize"],
                                              reference=pool)
                except SampleSetError as err:
                    lines.append(f"{config_path}: variants.{name}.samples (dataset {dataset}): {err}")
                    continue
                lines += [f"{config_path}: variants.{name}.samples (dataset {dataset}, {problem}"
                          for problem in protocol_problems(config, spec, sample_set.images, path)]
    return lines


def protocol_problems(config: dict, spec: dict, images, path: str) -> list[str]:
    """'protocol P[, imbalance factor F]): why' for each protocol (and imbalance factor, whose long
    tail sets the train_prior counts) whose count of some class the imported `images` fall short
    of, as the import job would find (cbdm.samplesets.fit_to_dataset_protocol)."""
    from .labels import factor_label
    from .samplesets import SampleSetError, fit_to_dataset_protocol

    factors = imbalance_factors(spec)
    problems = []
    for protocol, proto in config["evaluation"]["protocols"].items():
        errors = {}
        for factor in factors:
            try:
                fit_to_dataset_protocol(images, spec, factor, proto, path)
            except SampleSetError as err:
                errors[factor] = str(err)
        if len(errors) == len(factors) and len(set(errors.values())) == 1:
            errors = {None: next(iter(errors.values()))}  # the same at every factor: one line
        problems += [f"protocol {protocol}{'' if f is None else f', imbalance factor {factor_label(f)}'}): {err}"
                     for f, err in errors.items()]
    return problems


def _torch_sees_a_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _config_assets(config: dict):
    """(label, check, fetch) for every file the config reads that cbdm does not ship."""
    from pathlib import Path

    from .assets import download, require_weights, weights_entry
    from .sources import fetch_source, verify_source

    for name, spec in config["datasets"].items():
        if spec["source"] != "sklearn_digits":  # digits ship with scikit-learn
            yield (f"dataset {name} ({spec['source']}, root {spec['root']})",
                   lambda spec=spec: verify_source({**spec, "download": False}),
                   lambda spec=spec: fetch_source(spec))
    if config["features"]["extractor"] == "inception":
        path = config["features"]["inception_weights"]
        entry = weights_entry("inception_v3_fid")
        yield (f"Inception weights ({path})", lambda: require_weights("inception_v3_fid", path),
               lambda: download(entry["url"], Path(path), entry))


def cmd_assets(args) -> int:
    """List the asset lock, or verify or fetch the data and weights files a config needs."""
    from .assets import DataError, asset_lock

    if args.action == "list":
        print(yaml_dump(asset_lock()))
        return 0
    config = _load(args.config)
    if config is None:
        return 1
    failures = 0
    for label, check, fetch in _config_assets(config):
        try:
            check()
            print(f"ok       {label}")
            continue
        except DataError as err:
            if args.action == "verify":
                print(f"MISSING  {label}: {err}")
                failures += 1
                continue
        try:
            print(f"fetching {label} ...", flush=True)
            fetch()
            check()
            print(f"ok       {label}")
        except (DataError, OSError) as err:
            print(f"FAILED   {label}: {err}")
            failures += 1
    return 1 if failures else 0


def cmd_evaluate(args) -> int:
    """`cbdm evaluate`: score a sample set made anywhere under the suite's protocol."""
    from .external import evaluate_external
    from .io import InputError

    try:
        evaluate_external(configfile=args.config, samples=args.samples, name=args.name or Path(args.samples).stem,
                          protocol=args.protocol, dataset=args.dataset, imb=args.imb, fmt=args.format,
                          resize=args.resize, ref_stats=args.ref_stats, cores=args.cores, overwrite=args.overwrite)
    except (ConfigError, InputError) as err:
        print(f"cbdm evaluate: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args) -> int:
    """`cbdm export`: write a suite sample set as a class folder of PNGs or an arr_0/arr_1 .npz."""
    from .io import InputError
    from .samplesets import export_samples

    try:
        export_samples(args.samples, args.out, args.format, "" if args.part == "samples" else f"{args.part}_")
    except InputError as err:
        print(f"cbdm export: {err}", file=sys.stderr)
        return 1
    return 0


def add_sample_commands(sub) -> None:
    """The `evaluate` and `export` subcommands and their options."""
    from .samplesets import FORMATS

    evaluate = sub.add_parser("evaluate", help="score a sample set made anywhere under a suite's protocol")
    evaluate.add_argument("--config", required=True, help="the suite's config file")
    evaluate.add_argument("--samples", required=True, help="class folder, EDM folder + dataset.json, or .npz")
    evaluate.add_argument("--name", help="name of the entry (default: the samples' file or folder name)")
    evaluate.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    evaluate.add_argument("--protocol", help="evaluation protocol (default: the report protocol)")
    evaluate.add_argument("--dataset", help="dataset of the config (needed when it has several)")
    evaluate.add_argument("--imb", type=float, help="imbalance factor (needed when the dataset has several)")
    evaluate.add_argument("--resize", action="store_true", help="resize images of another size to the suite's")
    evaluate.add_argument("--ref-stats", help="reference statistics .npz (mu, sigma) instead of reference images")
    evaluate.add_argument("--cores", type=int, default=1, help="cores for building the suite's inputs")
    evaluate.add_argument("--overwrite", action="store_true",
                          help="replace an entry of this name that holds another sample set's scores")
    evaluate.set_defaults(run=cmd_evaluate)
    export = sub.add_parser("export", help="write a suite sample set as a class folder of PNGs or an arr_0/arr_1 .npz")
    export.add_argument("--samples", required=True, help="a sample .npz of the suite (results/<suite>/samples/...)")
    export.add_argument("--out", required=True, help="a new folder (folder) or an .npz file (npz)")
    export.add_argument("--format", required=True, choices=["folder", "npz"])
    export.add_argument("--part", default="samples", choices=["samples", "pool", "heldout"],
                        help="pool / heldout: the real images of a prepared data/<dataset>/source.npz")
    export.set_defaults(run=cmd_export)


def yaml_dump(data) -> str:
    """`data` as YAML in its own key order."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def main(argv=None) -> int:
    """The `cbdm` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="cbdm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("losses", help="list the registered losses and their options").set_defaults(run=cmd_losses)
    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("config")
    check.set_defaults(run=cmd_check)
    assets = sub.add_parser("assets", help="list, verify or fetch the files a config needs (datasets, weights)")
    assets.add_argument("action", choices=["list", "verify", "fetch"])
    assets.add_argument("--config", default=DEFAULT_CONFIG)
    assets.set_defaults(run=cmd_assets)
    add_sample_commands(sub)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
