"""`cbdm evaluate`: score a sample set made anywhere under a suite's protocol.

The suite's own workflow builds what the scoring needs (the feature classifier, the reference
features, the dataset's manifest) through Snakemake's API, so the reference side is exactly the
one the built-in variants were scored against; the user's images are then read
(cbdm.samplesets), featurised (cbdm.features) and measured (cbdm.evaluate) into
`results/<suite>/external/<name>/<dataset>-IF<x>/`, and the suite's leaderboard is rewritten.
"""
from __future__ import annotations

import re
from pathlib import Path

from .config import ConfigError, factor_label, imbalance_factors, load_config, report_protocol
from .io import read_json, write_json
from .records import HEADLINE, class_of, is_class
from .workflow import suite_paths as workflow_paths

SNAKEFILE = Path(__file__).resolve().parents[1] / "Snakefile"
SUMMARY_METRICS = HEADLINE


def suite_paths(config: dict, dataset: str, imb: str, reference: str) -> dict[str, str]:
    """The workflow's files this evaluation reads (the rules' own patterns, cbdm.workflow.suite_paths)."""
    patterns = workflow_paths(config["suite"])
    return {key: patterns[key].format(dataset=dataset, imb=imb, reference=reference)
            for key in ("classifier", "source_npz", "source_json", "manifest", "reference", "reference_stats")}


def choose(config: dict, dataset: str | None, imb: float | None, protocol: str | None) -> tuple[str, str, str]:
    """(dataset, imbalance-factor label, protocol): the given ones, checked, or the only/main one."""
    datasets = list(config["datasets"])
    dataset = dataset or (datasets[0] if len(datasets) == 1 else None)
    if dataset not in config["datasets"]:
        raise ConfigError(f"--dataset: choose one of {', '.join(datasets)}")
    factors = [factor_label(f) for f in imbalance_factors(config["datasets"][dataset])]
    label = factor_label(imb) if imb is not None else (factors[0] if len(factors) == 1 else None)
    if label not in factors:
        raise ConfigError(f"--imb: dataset {dataset} has imbalance factors {', '.join(factors)}; choose one")
    protocols = config["evaluation"]["protocols"]
    protocol = protocol or report_protocol(config)
    if protocol not in protocols:
        raise ConfigError(f"--protocol {protocol!r}: the config declares {', '.join(protocols)}")
    return dataset, label, protocol


ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_entry(config: dict, name: str, samples: str, ref_stats: str | None) -> None:
    """Refuse, before anything is built, an entry name that would leave results/<suite>/external
    or share a variant's leaderboard row, and a samples or statistics path that does not exist."""
    if not ENTRY_NAME.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '_', '.' and '-' only (it names the folder "
                          f"results/{config['suite']}/external/<name>)")
    if name in config["variants"]:
        raise ConfigError(f"--name {name!r} is a variant of the suite: give the entry another name, so that the "
                          f"leaderboard keeps the two rows apart")
    for option, path in (("--samples", samples), ("--ref-stats", ref_stats)):
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{option} {path}: does not exist (relative paths start in the current folder)")


def entry_folder(config: dict, name: str, dataset: str, imb: str) -> Path:
    """Where an entry's files for one dataset and imbalance factor live."""
    return Path(workflow_paths(config["suite"])["results"]) / "external" / name / f"{dataset}-IF{imb}"


def replaces_another_set(folder: Path, name: str, samples: str, overwrite: bool) -> bool:
    """Whether scoring `samples` into `folder` replaces another sample set's scores; refused
    (before anything is built) unless `overwrite`. An entry is named by the samples' file name
    when --name is not given, so ext/runA/samples.npz and then ext/runB/samples.npz would both
    be 'samples', the second replacing the first without a word. The same set scored again (or
    under another protocol) is not a replacement, unless its files changed since it was scored."""
    card = folder / "card.json"
    if not card.exists():
        return False
    before = read_json(card)
    if Path(before.get("source_path", before["source"])).resolve() == Path(samples).resolve():
        return changed_since_scored(before, folder, name, samples)
    if not overwrite:
        raise ConfigError(f"entry {name!r} ({folder}) holds the scores of {before['source']}, not of {samples}: "
                          f"give this set its own --name, or pass --overwrite to replace that entry")
    return True


def changed_since_scored(card: dict, folder: Path, name: str, samples: str) -> bool:
    """Whether the files of the set an entry scored changed since (their recorded source_state):
    then the whole entry is replaced, since its scores under the protocols not scored now would be
    of the old images, shown under the same name. A card older than the record cannot tell: kept."""
    from .samplesets import source_state

    if card.get("source_state") in (None, source_state(samples)):
        return False
    protocols = sorted(p.stem for p in folder.glob("*.json") if p.name != "card.json")
    print(f"{samples} changed since entry {name!r} scored it: its scores under protocol(s) {', '.join(protocols)} "
          f"are removed before this one is stored; score it again under each protocol you need (--protocol)",
          flush=True)
    return True


def precheck_samples(config: dict, dataset: str, imb: str, protocol: str, samples: str, fmt: str,
                     resize: bool) -> None:
    """Refuse a set its import would refuse for its format, dtype, shape, labels or images per
    class, before the suite's inputs are built (the classifier and reference features of a new
    suite: minutes, hours with Inception). Its pixel values are checked on import, against the
    training pool, which is prepared with those inputs."""
    from .samplesets import fit_to_dataset_protocol, read_samples
    from .sources import CLASS_NAMES, IMAGE_SHAPES

    spec = config["datasets"][dataset]
    channels, side = IMAGE_SHAPES[spec["source"]]
    side = spec["image_size"] or side
    imported = read_samples(samples, num_classes=len(CLASS_NAMES[spec["source"]]), image_shape=(channels, side, side),
                            class_names=CLASS_NAMES[spec["source"]], fmt=fmt, resize=resize)
    fit_to_dataset_protocol(imported.images, spec, float(imb), config["evaluation"]["protocols"][protocol], samples)


def build_inputs(configfile: str, targets: list[str], cores: int = 1) -> None:
    """Make `targets` with the suite's workflow (only the jobs they need), in the current folder."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=cores),
                                config_settings=ConfigSettings(configfiles=[Path(configfile).resolve()]),
                                snakefile=SNAKEFILE, workdir=Path.cwd())
        workflow.dag(DAGSettings(targets=set(targets))).execute_workflow()


def score(*, config: dict, samples: str, name: str, dataset: str, imb: str, protocol: str, paths: dict,
          fmt: str, resize: bool, ref_stats: str | None, device: str) -> str:
    """Import, featurise and measure one sample set; returns the metrics file."""
    from .dataset import data_origin, read_manifest, read_source_record, reference_origin
    from .evaluate import evaluate, with_label_warning
    from .features import extract_features
    from .io import read_npz
    from .leaderboard import measured_cell, measurement
    from .refstats import evaluate_against_stats
    from .samplesets import import_samples, source_state
    from .sources import CLASS_NAMES

    spec, proto = config["datasets"][dataset], config["evaluation"]["protocols"][protocol]
    out = entry_folder(config, name, dataset, imb)
    state = source_state(samples)  # before reading: a set rewritten meanwhile is scored again next time
    manifest = read_manifest(paths["manifest"], data_origin(dataset, spec, float(imb)))
    source_origin = data_origin(dataset, spec)  # what source.json, source.npz and the classifier record
    source_record = read_source_record(paths["source_json"], source_origin)
    note = import_samples(source=samples, fmt=fmt, resize=resize, labels=proto["labels"],
                          num_samples=proto["num_samples"], class_counts=manifest["class_counts"],
                          image_shape=source_record["image_shape"],
                          class_names=CLASS_NAMES[spec["source"]], source_npz=paths["source_npz"],
                          source_origin=source_origin, out_npz=str(out / "samples.npz"))
    extract_features(features_cfg=config["features"], classifier_path=paths["classifier"],
                     images_npz=str(out / "samples.npz"), prefix="", device=device,
                     out_npz=str(out / "features.npz"), source_origin=source_origin)
    reference = f"statistics {ref_stats}" if ref_stats else proto["reference"]
    cell = dict(dataset=dataset, imbalance_factor=float(imb), variant=name, seed=None, guidance=None,
                sample_seed=None, protocol=protocol, **{**proto, "reference": reference},
                **measurement(config["features"], spec, config["evaluation"]))
    metrics = out / f"{protocol}.json"
    origin = reference_origin(dataset, spec, proto["reference"], cell["imbalance_factor"])
    if ref_stats:
        gen = read_npz(out / "features.npz")
        note = with_label_warning(note, gen, len(CLASS_NAMES[spec["source"]]))
        cell = measured_cell(cell, gen)
        records = evaluate_against_stats(gen, ref_stats, spec["groups"], len(CLASS_NAMES[spec["source"]]),
                                         config["evaluation"], device, extractor=cell["features"],
                                         reference=proto["reference"], reference_origin=origin)
        for r in records:
            r["note"] = "; ".join(filter(None, [r["note"], note]))
        write_json(metrics, {"cell": cell, "records": records})
    else:  # evaluate() reads the features once, and returns the note with the same label warning
        note = evaluate(generated_npz=str(out / "features.npz"), reference_npz=paths["reference"],
                        groups=spec["groups"], num_classes=len(CLASS_NAMES[spec["source"]]),
                        evaluation=config["evaluation"], cell=cell, device=device, out_json=str(metrics),
                        reference_origin=origin)
    write_json(out / "card.json", {"source": str(samples), "source_path": str(Path(samples).resolve()), "note": note,
                                   "kind": "external", "source_state": state})
    return str(metrics)


def summary(metrics_json: str, groups: dict) -> str:
    """A text table of all, each group and each class: FID, KID, precision, recall, accuracy, n."""
    records = read_json(metrics_json)["records"]
    order = ["all", *groups] + sorted({r["scope"] for r in records if is_class(r["scope"])}, key=class_of)
    values = {(r["scope"], r["metric"]): r for r in records}
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    lines = [f"{'scope':<10} " + " ".join(f"{m:>10}" for m in SUMMARY_METRICS) + "   n (gen vs ref)"]
    for scope in order:
        fid = values[(scope, "fid")]
        lines.append(f"{scope:<10} " + " ".join(f"{fmt(values[(scope, m)]['value']):>10}" for m in SUMMARY_METRICS)
                     + f"   {fid['n_gen']} vs {fid['n_ref']}")
    notes = sorted({r["note"] for r in records if r["scope"] == "all" and r["metric"] == "fid" and r["note"]})
    return "\n".join(lines + [f"note: {n}" for n in notes] + dash_reasons(values, order))


def dash_reasons(values: dict, order: list[str]) -> list[str]:
    """Why the summary shows '-': one line per reason, with the scopes it holds for."""
    why: dict[str, list[str]] = {}
    for scope in order:
        for m in SUMMARY_METRICS:
            if values[(scope, m)]["value"] is None and scope not in why.setdefault(values[(scope, m)]["note"], []):
                why[values[(scope, m)]["note"]].append(scope)
    return [f"-: not computed; {', '.join(s[:5]) + (f' and {len(s) - 5} more' if len(s) > 5 else '')}: "
            f"{note or 'no reason recorded'}" for note, s in why.items() if s]


def evaluate_external(*, configfile: str, samples: str, name: str, protocol: str | None = None,
                      dataset: str | None = None, imb: float | None = None, fmt: str = "auto",
                      resize: bool = False, ref_stats: str | None = None, cores: int = 1,
                      overwrite: bool = False) -> str:
    """The whole `cbdm evaluate`: returns the metrics file it wrote. `overwrite`: replace an entry
    of the same name that holds another sample set's scores (all its protocols)."""
    import shutil

    from .leaderboard import write_leaderboard

    config = load_config(configfile)
    check_entry(config, name, samples, ref_stats)
    dataset, imb, protocol = choose(config, dataset, imb, protocol)
    replace = replaces_another_set(entry_folder(config, name, dataset, imb), name, samples, overwrite)
    reference = config["evaluation"]["protocols"][protocol]["reference"]
    paths = suite_paths(config, dataset, imb, reference)
    needed = ["classifier", "source_npz", "source_json", "manifest"] + ([] if ref_stats else ["reference"])
    if not all(Path(paths[k]).exists() for k in needed):  # else scoring, at once, reads and checks the set
        precheck_samples(config, dataset, imb, protocol, samples, fmt, resize)
    build_inputs(configfile, [paths[k] for k in needed], cores)
    if replace:
        shutil.rmtree(entry_folder(config, name, dataset, imb))
    metrics = score(config=config, samples=samples, name=name, dataset=dataset, imb=imb, protocol=protocol,
                    paths=paths, fmt=fmt, resize=resize, ref_stats=ref_stats, device=config["device"])
    print(f"{name} on {dataset} IF {imb}, protocol {protocol}:\n"
          + summary(metrics, config["datasets"][dataset]["groups"]), flush=True)
    results = workflow_paths(config["suite"])["results"]
    write_leaderboard(config, results)
    print(f"records: {metrics}; leaderboard: {results}/leaderboard.md", flush=True)
    return metrics
