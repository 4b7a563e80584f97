"""Everything that reads the tiny suite (tests/data/tiny.yaml with its extension variant, run end
to end through Snakemake's API once a session by the `tiny_suite` fixture, tests/conftest.py).

One module on purpose: `pytest` runs a worker per core and gives each worker whole modules
(`--dist loadfile`), so the suite is built once, by the worker that runs this file, and the
other worker runs the rest meanwhile. conftest refuses a test elsewhere that asks for it.
"""
import importlib.metadata
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from test_imported import tiny_with_import, write_oracle
from test_phenomenon import value
from test_report_html import browser, printed_text, with_item_opened
from test_workflow import VARIANTS

from cbdm.fingerprint import ORIGIN
from cbdm.report import format_value

from helpers import run_workflow


@pytest.mark.slow
def test_the_dag_runs_end_to_end_and_reports_every_variant_and_group(tiny_suite):
    tmp_path = tiny_suite  # built once a session, with its HTML report
    report = tmp_path / "results/tiny/report/digits-IF5"
    table = pd.read_csv(report / "table.csv")
    for variant in VARIANTS:
        for scope in ("all", "head", "tail"):
            for metric in ("fid", "kid_mean", "recall", "accuracy"):
                row = table[(table.variant == variant) & (table.scope == scope) & (table.metric == metric)]
                assert len(row) == 1, (variant, scope, metric)
                row = row.iloc[0]
                assert math.isfinite(row["mean"]), (variant, scope, metric, row["note"])
                assert int(row["n_gen"]) > 0
                if metric != "accuracy":
                    assert int(row["n_ref"]) > 0
    markdown = (report / "table.md").read_text()
    assert "## The long-tail problem" in markdown  # the held-out rates reached the report
    main_table = markdown.split("## Class groups at matched n")[0]
    rows = [line.split("|")[1].strip() for line in main_table.splitlines() if line.startswith("| ")][1:]
    assert rows == VARIANTS  # config order
    for section in ("## Class groups at matched n", "## Overlap diagnostics", "## Memorization audit",
                    "## Differences to ddpm"):
        assert section in markdown
    assert "(n=120 vs 300)" in markdown  # all classes: 10 x 12 samples against 10 x 30 held-out images
    augmentation = pd.read_csv(report / "augmentation.csv")  # 2 controls + every variant, 2 classifier seeds
    assert list(dict.fromkeys(augmentation.variant)) == ["real_only", "real_oversampled", *VARIANTS]
    top1 = augmentation[augmentation.scope == "all"]
    assert len(top1) == 2 * (2 + len(VARIANTS)) and top1.value.between(0, 1).all()
    real = top1.variant == "real_only"
    assert (top1[real].generated == 0).all() and (top1[~real].generated > 0).all()
    for section in ("## Augmentation\n", "## Augmentation: differences to real_only", "## Augmentation per class",
                    "## Label entropy per class"):
        assert section in markdown
    assert "label entropy tail" in markdown and "precision (k=3) all" in markdown
    for name in ("fid_vs_count", "precision_recall", "groups", "guidance", "confusion", "samples", "memorization",
                 "loss"):
        assert (report / f"{name}.png").stat().st_size > 1000
    assert "\\begin{tabular}" in (report / "table.tex").read_text()
    log = (tmp_path / "results/tiny/logs/train/digits/IF5/cbdm/seed0.log").read_text()
    assert "parameters" in log and "done: 30 steps" in log

    provenance = json.loads((tmp_path / "results/tiny/provenance.json").read_text())
    assert provenance["packages"]["torch"] == importlib.metadata.version("torch")
    assert provenance["seeds"] == {"training": [0], "sampling": [0]}
    assert {run["variant"] for run in provenance["training_runs"]} == set(VARIANTS)
    html = (tmp_path / "report.html").read_text()
    assert "Per-class FID (top) and KID x 1e3" in html  # a caption
    assert "fid_vs_count.png" in html and "provenance.json" in html and "per_class.html" in html


@pytest.mark.slow
def test_snakemake_report_shows_the_main_table_in_the_browser(tmp_path, tiny_suite):
    browser()
    page = tmp_path / "opened.html"
    page.write_text(with_item_opened((tiny_suite / "report.html").read_text()))
    text = printed_text(page, tmp_path)
    agg = pd.read_csv(tiny_suite / "results/tiny/report/digits-IF5/table.csv")
    fid = agg[(agg.variant == "ddpm") & (agg.scope == "all") & (agg.metric == "fid")].iloc[0]
    assert "Main table: protocol 'ours'" in text
    assert "FID all" in text and "n=120 vs 300" in text  # the header and its sample sizes
    assert format_value(fid, "fid") in text, (format_value(fid, "fid"), text[:3000])


@pytest.mark.slow
def test_the_dag_scores_an_imported_variant_beside_the_built_in_ones(tmp_path, repo, tiny_suite):
    # The shared tiny suite plus the imported variant: only its jobs and the summaries run again.
    shutil.copytree(tiny_suite, tmp_path, dirs_exist_ok=True, symlinks=True)
    configfile = tiny_with_import(repo, tmp_path, write_oracle(tmp_path / "oracle.npz"))
    run_workflow(repo, tmp_path, configfile)
    results = tmp_path / "results/tiny"
    table = pd.read_csv(results / "report/digits-IF5/table.csv")
    for scope in ("all", "head", "tail"):
        row = table[(table.variant == "oracle") & (table.scope == scope) & (table.metric == "fid")].iloc[0]
        assert math.isfinite(row["mean"]) and "imported from" in row["note"]
    board = pd.read_csv(results / "leaderboard.csv")
    assert set(board["entry"]) == {"ddpm", "cbdm", "overlap", "cbdm_overlap", "ddpm_resampled", "oracle"}
    oracle = board[board.entry == "oracle"].iloc[0]
    assert oracle["kind"] == "imported (samples:)" and str(oracle["n_gen"]) == "120" and str(oracle["n_ref"]) == "300"
    # real images are closer to the reference than any tiny model's samples
    assert oracle["fid"] < board[board.entry != "oracle"]["fid"].min()
    assert "## Card 1: digits IF 5, protocol ours" in (results / "leaderboard.md").read_text()
    report = (results / "report/digits-IF5/table.md").read_text()
    assert "Imported variants (oracle) were made elsewhere: paired with the baseline by seed number only" in report
    assert "**variant oracle**: imported samples (guidance not declared;" in report  # a plain path
    # the differences' caption says so too, as the main table does (it printed the suite's label, 1)
    assert "guidance scale of the main table: ddpm 1.0, cbdm 1.0, overlap 1.0, cbdm_overlap 1.0, " in report
    assert ", oracle n/a. Imported variants" in report
    stats = np.load(results / "features/digits/IF5/reference-heldout.stats.npz")
    assert stats["sigma"].shape == (8, 8) and int(stats["n_tail"]) == 150


@pytest.mark.slow
def test_the_heldout_rates_rule_writes_the_classifiers_rates_on_heldout_images(tiny_suite):
    # The tiny suite's own job (it built it for the report's long-tail section): building the
    # four jobs up to it once more took 19 s on the 2-core development machine.
    tmp_path, target = tiny_suite, "results/tiny/diagnostics/digits/IF5/heldout.json"
    data = json.loads((tmp_path / target).read_text())
    assert data["cell"] == {"dataset": "digits", "imbalance_factor": 5.0, "reference": "heldout"}
    records = data["records"]
    assert value(records, "tail", "accuracy") is not None
    assert 0.0 <= value(records, "tail", "misclassified_into:head") <= 1.0 - value(records, "tail", "accuracy")
    [n] = {r["n_gen"] for r in records if r["scope"] == "tail"}
    assert n == 5 * 30  # 30 held-out images of each of the 5 tail classes
    assert (tmp_path / "results/tiny/benchmarks/heldout_rates/digits/IF5.tsv").exists()


@pytest.mark.slow
def test_the_resampled_set_records_how_it_was_drawn_and_train_npz_in_its_place_is_refused(tmp_path, repo,
                                                                                           tiny_suite):
    data = "results/tiny/data/digits/IF5"
    train, resampled = (json.loads(str(np.load(tiny_suite / data / name)[ORIGIN]))
                        for name in ("train.npz", "train-resampled.npz"))
    assert resampled.pop("resampling").startswith("every class repeated up to the largest class's count")
    assert resampled == train
    # The long-tailed set copied over the re-sampled one: its training job must refuse it.
    shutil.copytree(tiny_suite, tmp_path, dirs_exist_ok=True, symlinks=True)
    shutil.copyfile(tmp_path / data / "train.npz", tmp_path / data / "train-resampled.npz")
    model = "results/tiny/models/digits/IF5/ddpm_resampled/seed0/model.pt"
    (tmp_path / model).unlink()
    with pytest.raises(Exception):
        run_workflow(repo, tmp_path, tmp_path / "tiny.yaml", targets=(model,))
    log = (tmp_path / "results/tiny/logs/train/digits/IF5/ddpm_resampled/seed0.log").read_text()
    assert "train-resampled.npz was made for" in log and "resampling" in log, log[-2000:]
    assert not (tmp_path / model).exists()
