"""The report on synthetic metrics files: aggregation over seeds, guidance choice, sections,
paired differences, and the refusal to render a partial table."""

import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from cbdm.io import write_json, write_npz
from cbdm.records import record
from cbdm.report import ReportError, ReportFiles, ReportSettings, build_report, load_report, protocol_card
from cbdm.statistics import paired_difference, seed_variance

GROUPS = {"head": [0], "tail": [1]}
EVALUATION = {"protocols": {"ours": {"labels": "exact", "num_samples": 20, "reference": "heldout"},
                            "paper": {"labels": "uniform_random", "num_samples": 20, "reference": "balanced_train"}},
              "report_protocol": None, "guidance_choice": "best", "baseline": None, "matched_repeats": 3,
              "matched_fraction": 0.5, "pr_neighborhood": 5,
              "memorization": {"relative_threshold": 0.5}}
FID = {("ddpm", 1.0): [10.0, 12.0, 11.0], ("ddpm", 2.0): [20.0, 21.0, 22.0],
       ("cbdm", 1.0): [8.0, 10.0, 9.0]}


PUBLISHED = [
    {"source": "x", "imbalance_factor": 10, "method": "DDPM", "variant": "ddpm", "metric": "fid", "value": 10.5,
     "status": "to verify", "samples": 50000, "reference_statistics": "train", "inception_preprocessing": "pytorch_fid",
     "protocol": "ancestral", "reference": "paper A"},
    {"source": "x", "imbalance_factor": 10, "method": "T2H", "variant": None, "metric": "fid", "value": 7.0,
     "status": "to verify", "samples": 50000, "reference_statistics": "train", "inception_preprocessing": "not stated",
     "protocol": "", "reference": "paper B"},
    {"source": "x", "imbalance_factor": 10, "method": "DiffROP", "variant": "overlap", "metric": "fid",
     "value": None, "status": "not available", "samples": None, "reference_statistics": None,
     "inception_preprocessing": "not stated", "protocol": "?", "reference": "paper C"},
]


def metrics_records(fid):
    out = []
    for scope, n in (("all", 20), ("head", 10), ("tail", 10), ("class 0", 10), ("class 1", 10)):
        out += [record(scope, "fid", fid, n, n), record(scope, "kid_mean", 0.001, n, n),
                record(scope, "precision", 0.6, n, n), record(scope, "recall", 0.5, n, n),
                record(scope, "accuracy", 0.9, n, 0), record(scope, "label_entropy", 0.3, n, 0),
                record(scope, "misclassified_into:head", 0.05, n, 0)]
    out += [record(g, "fid@matched", fid + 1, 10, 10, "3 random subsets", sd=0.5, ci=(fid, fid + 2))
            for g in GROUPS]
    return out


def diagnostics_records():
    out = [record(s, "cas", 0.8, 10, 10) for s in ("all", "head", "tail")]
    for c in (0, 1):
        out += [record(f"class {c}", "near_copy_share", 0.1 * c, 10, 5),
                record(f"class {c}", "near_copy_threshold", 0.5, 10, 5),
                record(f"class {c}", "near_copy_share_heldout", 0.0, 10, 5)]
    return out


@pytest.fixture
def report_inputs(tmp_path):
    metric_files, diagnostic_files, cells = [], [], []
    for (variant, guidance), values in FID.items():
        for seed, fid in enumerate(values):
            for protocol in EVALUATION["protocols"]:
                cell = dict(variant=variant, seed=seed, guidance=guidance, sample_seed=0, protocol=protocol)
                cells.append(cell)
                path = tmp_path / f"m-{variant}-{guidance}-{seed}-{protocol}.json"
                write_json(path, {"cell": cell, "records": metrics_records(fid + (protocol == "paper")),
                                  "confusion": [[9, 1], [1, 9]]})
                metric_files.append(str(path))
            path = tmp_path / f"d-{variant}-{guidance}-{seed}.json"
            write_json(path, {"cell": {**cell, "protocol": "ours"}, "records": diagnostics_records()})
            diagnostic_files.append(str(path))
    write_json(tmp_path / "manifest.json", {"total": 30, "class_counts": [20, 10]})
    write_npz(tmp_path / "s.npz", images=np.zeros((20, 1, 8, 8), np.uint8), labels=np.repeat([0, 1], 10))
    (tmp_path / "loss.csv").write_text("step,lr,loss,eps_mse\n1,0.1,1.0,1.0\n2,0.1,0.5,0.5\n")
    write_npz(tmp_path / "train.npz", images=np.full((30, 1, 8, 8), 7, np.uint8), labels=np.repeat([0, 1], [20, 10]))
    outputs = {k: str(tmp_path / f"out.{k}") for k in
               ("csv", "runs", "stats", "paper", "augmentation", "md", "tex", "html", "protocol", "page_main",
                "page_per_class", "page_diagnostics", "page_comparisons", "page_data", "fid_vs_count",
                "precision_recall", "groups", "guidance", "confusion", "samples", "memorization", "loss")}
    files = ReportFiles(metric_files=metric_files, diagnostic_files=diagnostic_files,
                        sample_files={"ddpm": str(tmp_path / "s.npz"), "cbdm": str(tmp_path / "s.npz")},
                        train_npz=str(tmp_path / "train.npz"), loss_logs={"ddpm": str(tmp_path / "loss.csv")},
                        manifest_json=str(tmp_path / "manifest.json"))
    settings = ReportSettings(title="synthetic", variants=["ddpm", "cbdm"], groups=GROUPS,
                              overlap={"source": "tail", "target": "head"}, evaluation=EVALUATION, protocol="ours",
                              baseline="ddpm",
                              protocol_guidance={p: {"ddpm": 2.0, "cbdm": 1.0} for p in ("ours", "paper")},
                              sampling={v: {"sampler": "ddim", "steps": 10} for v in ("ddpm", "cbdm")},
                              features={"extractor": "classifier"}, published=PUBLISHED, expected_cells=cells)
    return dict(files=files, settings=settings, outputs=outputs)


def test_report_sections_guidance_choice_and_differences(report_inputs):
    build_report(**report_inputs)
    out = report_inputs["outputs"]
    md = open(out["md"]).read()
    for heading in ("## Main table: protocol 'ours'", "## Protocol 'paper'", "## Class groups at matched n",
                    "## Overlap diagnostics", "## Memorization audit", "## Differences to ddpm",
                    "## Spread over seeds"):
        assert heading in md
    # 'best' guidance: ddpm is shown at w = 1 (FID 11), not its declared 2 (FID 21).
    agg = pd.read_csv(out["csv"])
    assert set(agg[(agg.variant == "ddpm")].guidance) == {1.0, 2.0}
    main_section = md.split("## Protocol 'paper'")[0]
    assert "precision (k=5) all" in main_section and "recall (k=5) tail" in main_section
    assert "11 ± 1" in main_section and "21 ± 1" not in main_section  # FID over three seeds at w = 1
    stats = pd.read_csv(out["stats"])
    fid_all = stats[(stats.kind == "paired difference") & (stats.scope == "all") & (stats.metric == "fid")].iloc[0]
    assert fid_all["diff"] == pytest.approx(-2.0) and fid_all["pairs"] == 3 and fid_all["verdict"] == "better"
    assert "12 ± 1 [11, 13]" in md  # matched-n: mean ± sd over seeds [interval over subsets]
    runs = pd.read_csv(out["runs"])
    assert len(runs[(runs.metric == "fid") & (runs.scope == "all")]) == 18


def test_paper_comparison_shows_published_numbers_and_never_guesses(report_inputs):
    build_report(**report_inputs)
    paper = pd.read_csv(report_inputs["outputs"]["paper"], keep_default_na=False).set_index("method")
    assert paper.loc["DDPM", "published"] == "10.5" and paper.loc["DDPM", "ours"] == "11 ± 1"
    assert paper.loc["DDPM", "ours - published"] == "+0.5" and paper.loc["DDPM", "n ours"] == "20 vs 20, 3 run(s)"
    assert paper.loc["T2H", "ours"] == "not run" and paper.loc["T2H", "status"] == "to verify"
    assert paper.loc["DDPM", "published protocol"].startswith(
        "50000 samples; vs train; Inception preprocessing: pytorch_fid")
    assert paper.loc["DiffROP", "published protocol"].startswith("samples not stated")
    assert paper.loc["DiffROP", "published"] == "not available" and paper.loc["DiffROP", "ours"] == "not run"
    assert paper.loc["cbdm", "published"] == "not available"  # ours, with no published number
    md = open(report_inputs["outputs"]["md"]).read()
    assert "## Paper comparison" in md and "ddpm: ddim 10 steps, guidance 1" in md


def test_report_refuses_a_partial_table(report_inputs):
    report_inputs["files"] = replace(report_inputs["files"], metric_files=report_inputs["files"].metric_files[1:])
    with pytest.raises(ReportError, match="(?s)1 evaluation.*'variant': 'ddpm', 'seed': 0, 'guidance': 1.0"):
        build_report(**report_inputs)


def test_paired_difference_interval_and_verdicts():
    diffs = np.array([-1.0, -3.0, -2.0, -2.5])
    out = paired_difference(diffs, "fid")
    half = 3.182446305 * np.std(diffs, ddof=1) / 2  # t(0.975, 3)
    assert out["ci_low"] == pytest.approx(-2.125 - half) and out["ci_high"] == pytest.approx(-2.125 + half)
    assert out["verdict"] == "better"
    assert paired_difference(-diffs, "fid")["verdict"] == "worse"
    assert paired_difference(diffs, "recall")["verdict"] == "worse"  # lower recall is worse
    assert paired_difference(np.array([-1.0, 1.5, 0.2]), "fid")["verdict"] == "no detectable difference"
    assert paired_difference(np.array([-1.0]), "fid")["verdict"].startswith("undecided (one run")


def test_seed_variance_separates_training_and_sampling_seeds():
    rows = []
    for seed, base in ((0, 10.0), (1, 14.0)):
        for sample_seed, jitter in ((0, -0.5), (1, 0.5)):
            rows.append(dict(variant="v", scope="all", metric="fid", seed=seed, sample_seed=sample_seed,
                             value=base + jitter))
    out = seed_variance(pd.DataFrame(rows), "all", "fid").iloc[0]
    assert out["sd_training_seeds"] == pytest.approx(np.std([10, 14], ddof=1))
    assert out["sd_sampling_seeds"] == pytest.approx(np.std([-0.5, 0.5], ddof=1))


def test_table_tex_compiles_with_one_captioned_table_per_section(report_inputs, tmp_path):
    build_report(**report_inputs)
    tex = open(report_inputs["outputs"]["tex"]).read()
    md = open(report_inputs["outputs"]["md"]).read()
    assert tex.count("\\begin{table}") >= md.count("\n## ") - 1  # every section but the notes
    assert tex.count("\\begin{table}") == tex.count("\\caption{")
    assert "1.000000" not in tex and "& 1.0 &" in tex  # guidance as a scale, not a float dump
    assert all(line.startswith("%") or line.startswith("\\") or line.endswith("\\\\") or line in ("", "}")
               for line in tex.splitlines()), "stray text outside the tables"
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base); .ci/run installs it")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage[margin=2.5cm]{geometry}\n"
                                      "\\usepackage{graphicx}\n\\begin{document}\n\\input{out.tex}\n\\end{document}\n")
    result = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    assert "Overfull \\hbox" not in result.stdout  # every table fits the text width


def test_augmentation_rows_are_paired_with_real_only_by_classifier_seed(report_inputs, tmp_path):
    files = []
    for row, top1 in (("real_only", [0.5, 0.6]), ("ddpm", [0.6, 0.8])):
        records = [{**record(scope, "augment_top1", value, 40, 20), "seed": seed}
                   for seed, value in enumerate(top1) for scope in ("all", "head", "tail", "class 0", "class 1")]
        path = tmp_path / f"aug-{row}.json"
        write_json(path, {"row": row, "fill_percent": 100, "generated_per_class": [0, 10 * (row == "ddpm")],
                          "records": records})
        files.append(str(path))
    report_inputs["files"] = replace(report_inputs["files"], augmentation_files=files)
    build_report(**report_inputs)
    md = open(report_inputs["outputs"]["md"]).read()
    section = md.split("## Augmentation\n")[1].split("## Augmentation: differences")[0]
    assert "top-1 all (n=40 vs 20)" in section and "0.55 ± 0.071" in section and "0.7 ± 0.14" in section
    per_seed = pd.read_csv(report_inputs["outputs"]["augmentation"])
    assert len(per_seed) == 2 * 2 * 5
    diff = md.split("## Augmentation: differences to real_only")[1].split("## Augmentation per class")[0]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in diff.splitlines() if line.startswith("| ddpm")]
    assert ["ddpm", "real_only", "all", "augment_top1", "+0.15"] == rows[0][:5] and rows[0][6] == "2"


def test_protocol_card_names_the_inception_preprocessing_in_use(report_inputs):
    features = {"extractor": "inception", "inception_preprocessing": "pytorch_fid"}
    settings = replace(report_inputs["settings"], features=features)
    card = dict(protocol_card(load_report(report_inputs["files"], settings)))
    assert card["features"] == "inception (pytorch_fid preprocessing)"
    assert card["baseline"] == "ddpm" and card["protocol ours (main table)"].startswith("protocol 'ours': 20 samples")
    classifier = dict(protocol_card(load_report(report_inputs["files"], report_inputs["settings"])))
    assert classifier["features"] == "classifier"
