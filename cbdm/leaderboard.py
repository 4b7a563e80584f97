"""The suite's leaderboard: one row per variant (at each guidance scale) and per external entry
that has been evaluated, across the suite's datasets and protocols, each with its protocol card.

A card has two halves. The measurement (dataset and imbalance factor, feature extractor, the
extractor's file and the preprocessing, the evaluation settings that change the numbers,
reference set, label policy and number of samples) must be identical for rows to be compared, so
every distinct measurement gets its own table, and the Markdown says that rows of different
tables are not comparable. Each row's measurement is the one its metrics file recorded when it
was written (`measurement`; completed by the metrics with the features file's extractor label and
what an import did to the pixels, `measured_cell`), since external entries are not rebuilt when
the config changes; a file that recorded none is labelled so and never joins a measured row's
table. The generation (sampler and steps, guidance, EMA, seeds, or where imported samples came from)
is what differs between methods and is shown in every row.

Written by the `leaderboard` rule after every evaluation of the DAG, and by `cbdm evaluate`
after each external entry: both read every metrics file under results/<suite>/ that belongs to
a declared variant or an external entry.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import records
from .config import as_list, imbalance_factors, variant_settings
from .io import atomic_path, read_json
from .labels import factor_label

MEASUREMENT = ["dataset", "imbalance_factor", "features", "extractor", "preprocessing", "evaluation", "reference",
               "labels", "num_samples"]
GENERATION = ["kind", "sampler", "steps", "guidance", "ema", "samples_from"]
# The label of a metrics file written before cells recorded their measurement (`measurement`):
# unlike any recorded one, so such rows get a card of their own instead of joining measured ones.
NOT_RECORDED = "not recorded (an older metrics file: re-run its evaluation to record it)"
# The headline metrics, with their column labels at the display scale (e.g. 'KID x 1e3').
ALL_METRICS = {m: records.metric(m).scaled_label for m in records.HEADLINE}


def describe_features(features: dict) -> str:
    """The feature extractor in words, for the measurement half of a card and the `extractor` of
    reference statistics; Inception's names its preprocessing, since the two resizes give
    features (and FIDs) that are not interchangeable."""
    if features["extractor"] == "inception":
        return (f"Inception-v3 pool 2048-d (torch-fidelity port, {Path(features['inception_weights']).name}), "
                f"{features['inception_preprocessing']} preprocessing")
    return (f"domain classifier {features['feature_dim']}-d penultimate features "
            f"({features['epochs']} epochs on the balanced pool, seed {features['seed']})")


def describe_preprocessing(features: dict, spec: dict) -> str:
    """How images reach the extractor (size, resize, value range), for the measurement half of a card."""
    size = "native size" if not spec.get("image_size") else \
        f"resized to {spec['image_size']}x{spec['image_size']} (antialiased bilinear)"
    if features["extractor"] == "inception" and features["inception_preprocessing"] == "pytorch_fid":
        return (f"images at {size} as floats in [0, 1], bilinear resize to 299x299 (align_corners=False), "
                f"scaled to [-1, 1] (pytorch-fid's convention)")
    if features["extractor"] == "inception":
        return f"uint8 images at {size}, torch-fidelity's TF-1 bilinear resize to 299x299"
    return f"uint8 images at {size}, scaled to [-1, 1]"


def describe_evaluation(evaluation: dict) -> str:
    """The evaluation settings that change a metrics file's numbers (cbdm.evaluate reads them),
    for the measurement half of a card: precision/recall with another k, or KID over other
    subsets, give other values for the same samples."""
    e = evaluation
    return (f"precision/recall k={e['pr_neighborhood']}; KID over {e['kid_subsets']} subsets of up to "
            f"{e['kid_subset_size']} (class intervals: {e['kid_bootstrap']} bootstrap resamples); groups at matched "
            f"n: {e['matched_repeats']} subsets of {e['matched_fraction']:g} of the smallest group; IS over "
            f"{e['is_splits']} splits; seed {e['seed']}; no metric under {e['min_samples']} samples a side; "
            f"FID at n <= feature dim: {e['fid_small_n']}")


def measurement(features: dict, spec: dict, evaluation: dict) -> dict[str, str]:
    """The `features`, `preprocessing` and `evaluation` a metrics file's cell records when it is
    written, so that its row is labelled by how it was measured, not by the config at the time
    of reading (the metrics add the rest, `measured_cell`)."""
    return {"features": describe_features(features), "preprocessing": describe_preprocessing(features, spec),
            "evaluation": describe_evaluation(evaluation)}


def measured_cell(cell: dict, gen: dict) -> dict:
    """`cell` completed by what only the featurised samples know of how they were measured: the
    `extractor` label of their features file (cbdm.features.extractor_label: a classifier by its
    file's digest, so two trainings never share a card), and the pixels an import changed (a
    lossy file format, a resize; cbdm.samplesets.Imported), first in its preprocessing, since
    they change the scores. Pops `preprocessing` from `gen`, whose remaining arrays the metrics
    read."""
    steps = str(gen.pop("preprocessing", ""))
    cell = {**cell, "extractor": str(gen["extractor"])} if "extractor" in gen else cell
    if not steps:
        return cell
    return {**cell, "preprocessing": f"imported {steps}; then {cell.get('preprocessing', NOT_RECORDED)}"}


def generation_card(config: dict, cell: dict, external_card: dict | None, note: str) -> dict:
    """How the rows' samples were made; `note`: the all-classes FID record's note, which says
    how imported samples were read."""
    if external_card is not None:
        return {"kind": "external (cbdm evaluate)", "sampler": "n/a", "steps": "n/a", "guidance": "n/a",
                "ema": "n/a", "samples_from": external_card["note"]}
    settings = variant_settings(config, cell["variant"])
    if settings.get("samples"):
        source = note[note.find("imported from"):] if "imported from" in note \
            else settings["samples"][factor_label(cell["guidance"])][cell["seed"]]
        guidance = factor_label(cell["guidance"]) if settings["sampling"]["guidance_declared"] else "n/a"
        return {"kind": "imported (samples:)", "sampler": "n/a", "steps": "n/a", "guidance": guidance,
                "ema": "n/a", "samples_from": source}
    # The protocol's own sampler where it sets one (the `published` protocol), as the cell recorded
    # it; a file written before cells recorded it falls back to the config's.
    sampling = settings["protocol_sampling"].get(cell["protocol"], settings["sampling"])
    return {"kind": "external model" if settings["external"] else "built-in",
            "sampler": cell.get("sampler", sampling["sampler"]), "steps": cell.get("steps", sampling["steps"]),
            "guidance": factor_label(cell["guidance"]),
            "ema": settings["training"]["ema_decay"], "samples_from": "suite sampler"}


def entry_row(config: dict, data: dict, external_card: dict | None) -> dict:
    """One evaluation's card and headline numbers (all classes, and FID of every group), from its
    metrics file's contents `data`."""
    cell = data["cell"]
    spec = config["datasets"][cell["dataset"]]
    values = {(r["scope"], r["metric"]): r for r in data["records"]}
    row = {"entry": cell["variant"], "protocol": cell["protocol"], "dataset": cell["dataset"],
           "imbalance_factor": f"{cell['imbalance_factor']:g}",
           **{key: cell.get(key, NOT_RECORDED) for key in ("features", "extractor", "preprocessing", "evaluation")},
           "reference": cell["reference"],
           "labels": cell["labels"], "num_samples": cell["num_samples"],
           **generation_card(config, cell, external_card, values[("all", "fid")]["note"]),
           "run": "-" if cell["seed"] is None else f"{cell['seed']}/{cell['sample_seed']}",
           "n_gen": values[("all", "fid")]["n_gen"], "n_ref": values[("all", "fid")]["n_ref"]}
    for metric in ALL_METRICS:
        value = values.get(("all", metric), {}).get("value")
        row[metric] = None if value is None else value * records.scale(metric)
    for group in spec["groups"]:
        row[f"fid_{group}"] = values[(group, "fid")]["value"]
        row[f"n_{group}"] = f"{values[(group, 'fid')]['n_gen']} vs {values[(group, 'fid')]['n_ref']}"
    return row


def in_config(config: dict, cell: dict) -> bool:
    """Whether a variant's metrics file is of a cell the config declares: a file left from a seed,
    guidance scale, sampling seed or imbalance factor since dropped stays on disk, and its row
    would be averaged in and labelled with the current settings."""
    settings = variant_settings(config, cell["variant"])
    sampling = settings["protocol_sampling"].get(cell["protocol"], settings["sampling"])
    factors = imbalance_factors(config["datasets"][cell["dataset"]])
    return (cell["seed"] in settings.get("seeds", config["seeds"]) and cell["sample_seed"] in sampling["seeds"]
            and factor_label(cell["imbalance_factor"]) in map(factor_label, factors)
            and factor_label(cell["guidance"]) in map(factor_label, as_list(sampling["guidance"])))


def metrics_files(config: dict, results: Path) -> list[tuple[dict, dict | None]]:
    """(metrics file's contents, external card or None) of every declared variant cell and
    external entry."""
    found = []
    for dataset in config["datasets"]:
        for variant in config["variants"]:
            paths = sorted((results / "metrics" / dataset).glob(f"IF*/{variant}/seed*/*/*.json"))
            read = [records.read_metrics(p) for p in paths if p.stem in config["evaluation"]["protocols"]]
            found += [(data, None) for data in read if in_config(config, data["cell"])]
        for card in sorted((results / "external").glob(f"*/{dataset}-IF*/card.json")):
            entry = read_json(card)
            found += [(read_json(p), entry) for p in sorted(card.parent.glob("*.json")) if p.name != "card.json"]
    return found


def leaderboard(config: dict, results: Path) -> pd.DataFrame:
    """Rows aggregated over runs (mean), with the runs and the sample sources they came from."""
    rows = [entry_row(config, data, card) for data, card in metrics_files(config, results)]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    # Not `samples_from`: an imported variant's seeds come from files of their own, and its one row
    # joins their sources as it averages their numbers, like a built-in variant's.
    keys = ["entry", "protocol", *MEASUREMENT, *GENERATION[:-1]]
    numbers = [c for c in frame.columns if c in ALL_METRICS or c.startswith("fid_")]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    # A number some runs did not compute (too few samples: their notes say why) is no mean of the
    # runs the row lists; the mean of the others would be ranked beside full rows.
    table = grouped[numbers].mean().where(grouped[numbers].count().eq(grouped.size(), axis=0))
    table["sd_fid"] = grouped["fid"].std(ddof=1)  # NaN for one run: no spread to show
    table["runs"] = grouped["run"].agg(lambda r: ", ".join(r))
    for col in ["n_gen", "n_ref"] + [c for c in frame.columns if c.startswith("n_") and c not in ("n_gen", "n_ref")]:
        table[col] = grouped[col].agg(lambda v: "/".join(map(str, dict.fromkeys(v))))
    table = table.reset_index()
    table.insert(len(keys), "samples_from", grouped["samples_from"].agg(lambda v: " | ".join(dict.fromkeys(v))).values)
    return table


def markdown(table: pd.DataFrame, suite: str) -> str:
    """The leaderboard as Markdown: one table per distinct measurement, with its card."""
    lines = [f"# Leaderboard: {suite}", "",
             "One table per measurement (dataset, features and the extractor's label, preprocessing, "
             "evaluation settings, reference set, labels and n): rows in different "
             "tables were not measured the same way and must not be compared. Rows are ranked by FID over all "
             "classes. Lower is better for FID and KID, higher for precision, recall and acc (the share of "
             "samples the feature classifier assigns to their own class). Each value is the mean over the runs "
             "listed (training seed / sampling seed; '-': a single external set), FID sd its sd over them "
             "('-': one run); a value '-': not computed in every run listed (too few samples; the metrics "
             "files' notes say why). KID x 1e3; n: generated vs reference.", ""]
    if table.empty:
        return "\n".join(lines + ["No evaluations yet."]) + "\n"
    show = ["entry", "kind", "sampler", "steps", "guidance", "ema", "runs", "n_gen", "n_ref", "fid", "sd_fid",
            *[m for m in ALL_METRICS if m != "fid"]]
    for i, (card, rows) in enumerate(table.groupby(["protocol", *MEASUREMENT], sort=False), start=1):
        fields = dict(zip(["protocol", *MEASUREMENT], card))
        lines += [f"## Card {i}: {fields['dataset']} IF {fields['imbalance_factor']}, protocol {fields['protocol']}",
                  "", f"{fields['labels']} labels, {fields['num_samples']} samples against the {fields['reference']} "
                  f"reference; features: {fields['features']}; extractor label: {fields['extractor']}; "
                  f"preprocessing: {fields['preprocessing']}; evaluation: {fields['evaluation']}.", ""]
        rows = rows.sort_values("fid", na_position="last", kind="stable")
        groups = [c for c in rows.columns if c.startswith("fid_") and rows[c].notna().any()]
        cols = show + [c for g in groups for c in (g, "n_" + g[4:])]
        body = rows[cols].rename(columns={**ALL_METRICS, "sd_fid": "FID sd", **{g: f"FID {g[4:]}" for g in groups}})
        body = body.astype(object).where(body.notna(), None)  # tabulate prints None as '-', NaN as 'nan'
        lines += [body.to_markdown(index=False, floatfmt=".4g", missingval="-"), ""]
        sources = rows[rows["samples_from"] != "suite sampler"]
        lines += [f"- {r.entry}: {r.samples_from}" for r in sources.itertuples()] + [""]
    return "\n".join(lines)


def write_leaderboard(config: dict, results_dir: str, out_csv: str | None = None, out_md: str | None = None) -> None:
    """results/<suite>/leaderboard.{csv,md} from every evaluation found under `results_dir`."""
    results = Path(results_dir)
    table = leaderboard(config, results)
    for path, text in ((out_csv or results / "leaderboard.csv", table.to_csv(index=False)),
                       (out_md or results / "leaderboard.md", markdown(table, config["suite"]))):
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
    print(markdown(table, config["suite"]), flush=True)
