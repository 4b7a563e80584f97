"""The report on synthetic metrics files: aggregation over seeds, guidance choice, sections,
paired differences, and the refusal to render a partial table."""

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cbdm.fingerprint import origin_array
from cbdm.io import InputError, write_json, write_npz
from cbdm.records import record
from cbdm.report import ReportError, build_report, load_report, protocol_card
from cbdm.statistics import NO_SPREAD, paired_difference, seed_variance


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
    assert "Lower is better for FID and KID, higher for precision, recall and acc." in main_section
    assert "11 ± 1" in main_section and "21 ± 1" not in main_section  # FID over three seeds at w = 1
    # The differences pair each variant at that shown scale, and say which (ddpm's declared one is 2).
    assert "Each variant at the guidance scale of the main table: ddpm 1.0, cbdm 1.0." in md
    stats = pd.read_csv(out["stats"])
    fid_all = stats[(stats.kind == "paired difference") & (stats.scope == "all") & (stats.metric == "fid")].iloc[0]
    # cbdm is exactly 2 below ddpm in each of the three pairs: a t interval of no width, no verdict.
    assert fid_all["diff"] == pytest.approx(-2.0) and fid_all["pairs"] == 3 and fid_all["verdict"] == NO_SPREAD
    assert "12 ± 1 [11, 13]" in md  # matched-n: mean ± sd over seeds [interval over subsets]
    runs = pd.read_csv(out["runs"])
    assert len(runs[(runs.metric == "fid") & (runs.scope == "all")]) == 18


def test_paper_comparison_shows_published_numbers_and_never_guesses(report_inputs):
    build_report(**report_inputs)
    paper = pd.read_csv(report_inputs["outputs"]["paper"], keep_default_na=False).set_index("method")
    assert paper.loc["DDPM", "published"] == "10.5" and paper.loc["DDPM", "ours"] == "11 ± 1"
    assert paper.loc["DDPM", "n ours"] == "20 vs 20, 3 run(s)"
    assert paper.loc["DDPM", "ours - published"] == (
        "not comparable: ours on classifier features, published on Inception")
    assert paper.loc["T2H", "ours"] == "not run" and paper.loc["T2H", "status"] == "to verify"
    assert paper.loc["DDPM", "published protocol"].startswith(
        "50000 samples; vs train; Inception preprocessing: pytorch_fid")
    assert paper.loc["DiffROP", "published protocol"].startswith("samples not stated")
    assert paper.loc["DiffROP", "published"] == "not available" and paper.loc["DiffROP", "ours"] == "not run"
    assert paper.loc["cbdm", "published"] == "not available"  # ours, with no published number
    md = open(report_inputs["outputs"]["md"]).read()
    assert "## Paper comparison" in md and "ddpm: ddim 10 steps, guidance 1" in md


def test_a_published_number_is_subtracted_only_from_one_of_ours_measured_alike():
    """Ours: 20 samples of FID 11 on Inception (torch-fidelity preprocessing)."""
    from cbdm.report import paper_table

    agg = pd.DataFrame([{"variant": "ddpm", "scope": "all", "metric": "fid", "mean": 11.0, "sd": 1.0,
                         "runs": 3, "n_gen": "20", "n_ref": "20", "protocol": "paper", "guidance": 1.0,
                         "ci_low": float("nan"), "ci_high": float("nan")}])
    entry = {"method": "DDPM", "variant": "ddpm", "metric": "fid", "value": 10.5, "status": "", "samples": 20,
             "reference_statistics": "train", "inception_preprocessing": "not stated", "protocol": "",
             "reference": ""}
    inception = {"extractor": "inception", "inception_preprocessing": "torch_fidelity"}

    def difference(features=inception, **change):
        return paper_table(agg, [{**entry, **change}], ["ddpm"], features)["ours - published"][0]

    assert difference() == "+0.5"
    assert difference(inception_preprocessing="torch_fidelity") == "+0.5"
    assert difference(samples=50000) == "not comparable: ours on 20 samples, published on 50000"
    assert difference(samples=None) == "not comparable: the published number's sample count is not stated"
    assert difference(inception_preprocessing="pytorch_fid") == (
        "not comparable: ours with torch_fidelity preprocessing, published pytorch_fid")
    assert difference({"extractor": "classifier"}) == (
        "not comparable: ours on classifier features, published on Inception")


def test_report_refuses_a_partial_table(report_inputs):
    report_inputs["files"] = replace(report_inputs["files"], metric_files=report_inputs["files"].metric_files[1:])
    with pytest.raises(ReportError, match="(?s)1 evaluation.*'variant': 'ddpm', 'seed': 0, 'guidance': 1.0"):
        build_report(**report_inputs)



@pytest.mark.parametrize("shown, recorded", [
    ("copied", "variant ddpm, but this job needs variant cbdm"),
    ("older settings", "sampling older, but this job needs sampling s"),
    ("no origin", None)])
def test_a_sample_set_of_another_cell_is_refused_before_the_report_shows_it(report_inputs, shown, recorded):
    """ddpm's sample set copied over cbdm's, or cbdm's kept from older sampling settings under
    --rerun-triggers mtime, was shown in the sample grid and the memorization figure as cbdm's
    images without a word: the report refuses it in one line, before writing anything."""
    from report_helpers import sample_origin

    from cbdm.fingerprint import origin_array
    from cbdm.io import InputError, rebuild, write_npz

    files, outputs = report_inputs["files"], report_inputs["outputs"]
    path = files.sample_files["cbdm"]
    origin = {"copied": sample_origin("ddpm"), "older settings": {**sample_origin("cbdm"), "sampling": "older"},
              "no origin": None}[shown]
    write_npz(path, images=np.zeros((20, 1, 8, 8), np.uint8), labels=np.repeat([0, 1], 10), **origin_array(origin))
    with pytest.raises(InputError) as refused:
        build_report(**report_inputs)
    message = str(refused.value)
    if recorded is None:
        assert message.startswith(f"{path} records no origin")
    else:
        assert message == (f"{path} was made for {recorded}: it was copied or moved, or kept from other "
                           f"settings; {rebuild(path)}")
    assert "\n" not in message
    assert not any(Path(p).exists() for p in outputs.values())


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
    # The paper table's footer (how ours were measured) is printed, not a comment.
    assert any(line.startswith("\\par\\smallskip{\\scriptsize Ours: protocol") for line in tex.splitlines())
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
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(tmp_path / "doc.pdf"), "-"], capture_output=True, text=True).stdout
        assert "Ours: protocol" in text


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


def test_the_long_tail_problem_section_sets_leakage_against_the_held_out_rate(report_inputs):
    build_report(**report_inputs)
    md = open(report_inputs["outputs"]["md"]).read()
    section = md.split("## The long-tail problem")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in section.splitlines() if line.startswith("| ddpm") or line.startswith("| cbdm")}
    # synthetic runs: FID@matched is the same in every group (gap 0, no spread), tail->head 5 % in
    # every run against the held-out images' 1 % of 10 images, whose exact interval [0, 30.8] %
    # holds 5 %: not distinguishable (the runs alone, with no spread, gave [+4, +4] and "above")
    assert rows["ddpm"][0] == "3" and rows["ddpm"][1] == "+0"
    assert rows["ddpm"][4:7] == ["5 ± 0 %", "1 % [0, 30.8]", "[-25.8, +5]"]
    assert rows["ddpm"][-1] == "not distinguishable from held-out"
    header = [line for line in section.splitlines() if line.startswith("| variant")][0]
    for label in ("FID tail - head (n=10 vs 10 per group)", "tail->head samples (n=10)", "tail->head held-out (n=10)"):
        assert label in header


def test_an_imported_variant_is_described_as_imported_not_as_none_steps():
    from cbdm.report import sampling_line

    assert sampling_line({"sampler": "ddim", "steps": 10}, 1.5) == "ddim 10 steps, guidance 1.5"
    assert sampling_line({"sampler": "imported", "steps": None}, 1.0) == (
        "imported samples (declared guidance 1.0; sampler and steps not known)")


def test_a_note_shared_by_variants_and_scopes_is_said_once_with_where():
    from cbdm.report import report_notes

    unit = "bits; mean over the scope's classes"
    rows = [dict(protocol="ours", variant=v, scope=s, metric="label_entropy", note=unit)
            for v in ("ddpm", "cbdm") for s in ("all", "head")]
    rows += [dict(protocol="ours", variant="cbdm", scope="class 9", metric="fid", note="not computed: n_gen=3"),
             dict(protocol="ours", variant="ddpm", scope="all", metric="fid", note="")]
    assert report_notes(pd.DataFrame(rows)) == [
        "label_entropy (ours / ddpm, cbdm / all, head): bits; mean over the scope's classes",
        "fid (ours / cbdm / class 9): not computed: n_gen=3"]
    imported = [dict(protocol="ours", variant="mine", scope=s, metric="fid", note="imported from x.npz")
                for s in ["all", "tail"] + [f"class {c}" for c in range(100)]]
    assert report_notes(pd.DataFrame(imported)) == ["fid (ours / mine / all, tail, 100 classes): imported from x.npz"]


def _record_in_cells(files, change: dict, only: str | None = None) -> None:
    """Add `change` to the cell of every metrics file (or only to the file `only`)."""
    from cbdm.io import read_json
    for path in files.metric_files:
        if only is None or path == only:
            data = read_json(path)
            write_json(path, {**data, "cell": {**data["cell"], **change}})


def test_report_refuses_metrics_files_measured_with_other_settings(report_inputs):
    """A metrics file kept from other evaluation settings (e.g. under --rerun-triggers mtime, or
    copied in) was averaged into the same cells as the rest: a run at precision/recall k=3 went
    into the 'precision (k=5)' column and the paired differences without a word."""
    from cbdm.leaderboard import describe_evaluation

    metric_settings = dict(min_samples=10, kid_subsets=5, kid_subset_size=20, kid_bootstrap=20, seed=0,
                           fid_small_n="flag", is_splits=10)
    evaluation = {**report_inputs["settings"].evaluation, **metric_settings}
    report_inputs["settings"] = replace(report_inputs["settings"], evaluation=evaluation)
    files = report_inputs["files"]
    _record_in_cells(files, {"evaluation": describe_evaluation(evaluation)})
    load_report(files, report_inputs["settings"])  # one measurement, the config's: accepted
    stale = files.metric_files[3]
    _record_in_cells(files, {"evaluation": describe_evaluation({**evaluation, "pr_neighborhood": 3})}, only=stale)
    with pytest.raises(ReportError, match=f"(?s){stale}.*precision/recall k=3.*k=5.*--forcerun"):
        load_report(files, report_inputs["settings"])


def test_report_refuses_a_metrics_file_that_did_not_record_its_measurement_among_ones_that_did(report_inputs):
    files = report_inputs["files"]
    for path in files.metric_files[1:]:
        _record_in_cells(files, {"extractor": "classifier:abc"}, only=path)
    with pytest.raises(ReportError, match=f"(?s){files.metric_files[0]}.*not recorded.*classifier:abc"):
        load_report(files, report_inputs["settings"])
    _record_in_cells(files, {"extractor": "classifier:def"}, only=files.metric_files[0])
    with pytest.raises(ReportError, match="(?s)classifier:def.*classifier:abc"):
        load_report(files, report_inputs["settings"])


def test_equal_values_over_runs_have_an_sd_of_zero_not_round_off():
    """Per-class precision is a multiple of 1/n, so runs often agree exactly: the default suite's
    table printed '0.99 ± 1.4e-16' (the float sum of three 0.99s is not 3 x 0.99)."""
    from cbdm.report import aggregate, format_value

    runs = pd.DataFrame([dict(protocol="ours", variant="v", guidance=1.0, scope="class 0", metric="precision",
                              value=value, n_gen=20, n_ref=30, note="", ci_low=None, ci_high=None, seed=seed,
                              sample_seed=0) for seed, value in enumerate([0.99, 0.99, 0.99])])
    row = aggregate(runs).iloc[0]
    assert row["sd"] == 0.0 and format_value(row, "precision") == "0.99 ± 0"
    assert seed_variance(runs, "class 0", "precision").iloc[0]["sd_training_seeds"] == 0.0
    runs.loc[2, "value"] = 0.97
    assert aggregate(runs).iloc[0]["sd"] == pytest.approx(np.std([0.99, 0.99, 0.97], ddof=1))


def test_a_mean_over_fewer_runs_than_the_row_has_says_how_many():
    """A class too small for FID in one run of three (uniform random labels, or a sample count
    near evaluation.min_samples) was printed '2.5 ± 0.71', the mean of the other two, in a row of
    three runs: the cell now says '(2 of 3 runs)'."""
    from cbdm.report import aggregate, format_value

    rows = [dict(protocol="ours", variant="v", guidance=1.0, scope="class 0", metric="fid", value=value, n_gen=n,
                 n_ref=30, note="" if value else "not computed: n_gen=9", ci_low=None, ci_high=None, seed=seed,
                 sample_seed=0) for seed, (value, n) in enumerate([(2.0, 12), (None, 9), (3.0, 11)])]
    row = aggregate(pd.DataFrame(rows)).iloc[0]
    assert format_value(row, "fid") == "2.5 ± 0.71 (2 of 3 runs)"
    rows[1]["value"] = 2.5
    assert format_value(aggregate(pd.DataFrame(rows)).iloc[0], "fid") == "2.5 ± 0.5"


def test_groups_too_small_at_matched_n_are_n_a_with_the_reason_not_a_crash(report_inputs):
    """A tail group whose matched-n subsets fall under evaluation.min_samples in every run stopped
    the report with pandas' KeyError "None of ['variant'] are in the columns"; and the reason of an
    n/a at matched n never reached the notes, which leave the matched-n notes out."""
    from cbdm.io import read_json

    why = "not computed: n_gen=7, n_ref=75, fewer than evaluation.min_samples=10"
    for path in report_inputs["files"].metric_files:
        data = read_json(path)
        for r in data["records"]:
            if r["metric"].endswith("@matched"):
                r.update(value=None, sd=None, ci_low=None, ci_high=None, note=why)
        write_json(path, data)
    build_report(**report_inputs)
    md = open(report_inputs["outputs"]["md"]).read()
    section = md.split("## The long-tail problem")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in section.splitlines() if line.startswith("| ddpm") or line.startswith("| cbdm")}
    assert set(rows) == {"ddpm", "cbdm"}
    assert all("n/a" in cells and "not computed (see the notes)" in cells for cells in rows.values())
    notes = md.split("## Notes")[1]
    assert f"fid@matched (ours, paper / ddpm, cbdm / head, tail): {why}" in notes


def test_latex_prints_comparison_signs_and_bars_as_themselves(tmp_path):
    """pdflatex's default font encoding typesets '<' as '¡', '>' as '¿' and '|' as an em dash: a
    note 'n <= feature dim' came out as 'n ¡= feature dim'."""
    from cbdm.tables import tex_escape

    assert tex_escape("n <= 8 | x > y") == r"n \textless{}= 8 \textbar{} x \textgreater{} y"
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base); .ci/run installs it")
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\begin{document}\n"
                                      + tex_escape("n <= 8 | x > y") + "\n\\end{document}\n")
    subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                   capture_output=True, check=True, timeout=120)
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(tmp_path / "doc.pdf"), "-"], capture_output=True, text=True).stdout
        assert "n <= 8 | x > y" in text


def test_the_reason_of_an_n_a_reaches_table_tex_and_every_html_page(report_inputs):
    """The notes, which say why a cell is n/a, were only in table.md and table.html: table.tex and
    the topic pages of Snakemake's report (per_class.html, ...) showed n/a with no reason."""
    from cbdm.io import read_json

    why = "not computed: n_gen=3, n_ref=10, fewer than evaluation.min_samples=10"
    for path in report_inputs["files"].metric_files:
        data = read_json(path)
        for r in data["records"]:
            if r["scope"] == "class 1" and r["metric"] == "fid":
                r.update(value=None, note=why)
        write_json(path, data)
    build_report(**report_inputs)
    out = report_inputs["outputs"]
    assert "n/a" in open(out["page_per_class"]).read()
    for page in ("tex", "page_main", "page_per_class", "page_diagnostics", "page_comparisons", "page_data"):
        assert "fid (ours, paper / ddpm, cbdm / class 1): not computed: n" in open(out[page]).read(), page


def test_a_paired_difference_without_pairs_is_a_row_saying_so_not_a_missing_row():
    """A metric no run of a variant computed (a group too small at matched n) dropped its row from
    the differences table without a word."""
    from cbdm.report import format_differences
    from cbdm.statistics import NO_PAIRS, compare_to_baseline

    rows = [dict(variant=v, scope="tail", metric="fid@matched", seed=seed, sample_seed=0, value=value)
            for v, values in (("ddpm", [5.0, 6.0]), ("cbdm", [None, None]), ("mine", [4.0, 4.5]))
            for seed, value in enumerate(values)]
    diffs = compare_to_baseline(pd.DataFrame(rows), "ddpm", [("tail", "fid@matched")]).set_index("variant")
    assert diffs.loc["cbdm", "pairs"] == 0 and diffs.loc["cbdm", "verdict"] == NO_PAIRS
    assert diffs.loc["mine", "pairs"] == 2 and diffs.loc["mine", "diff"] == pytest.approx(-1.25)
    printed = format_differences(diffs.reset_index()).set_index("variant")
    assert printed.loc["cbdm", "difference"] == "n/a" and printed.loc["cbdm", "95% CI (t)"] == ""


def test_paired_differences_without_spread_or_within_round_off_are_said_as_such():
    """Seen in a two-seed tiny run: cbdm - ddpm accuracy was +1/150 in both pairs, printed
    '[+0.00667, +0.00667] better' (a t interval of no width from two identical differences), and
    tail->head leakage 1/61 and -1/61, printed as a difference of -3.47e-18."""
    same = paired_difference(np.array([1 / 150, 1 / 150]), "accuracy")
    assert same["verdict"] == NO_SPREAD and same["diff"] == pytest.approx(1 / 150)
    assert paired_difference(np.array([0.0, 0.0, 0.0]), "fid")["verdict"] == "no detectable difference"
    cancelled = paired_difference(np.array([3 / 61 - 2 / 61, 3 / 61 - 4 / 61]), "misclassified_into:head")
    assert cancelled["diff"] == 0.0 and cancelled["verdict"] == "no detectable difference"
    assert paired_difference(np.array([1e-9, 3e-9]), "fid")["diff"] == pytest.approx(2e-9)  # small, not round-off


def test_metrics_of_samples_drawn_otherwise_than_the_config_says_are_refused(report_inputs):
    """sampling.steps changed 5 -> 4 under --rerun-triggers mtime, then the report rerun: it said
    'ddim 4 steps' over metrics of 5-step samples (their cells record 5) without a word."""
    import json
    import os

    files = report_inputs["files"].metric_files
    for path in files:  # cells that record how their samples were drawn, as the metrics rule writes them
        data = json.loads(open(path).read())
        write_json(path, {**data, "cell": {**data["cell"], "sampler": "ddim", "steps": 10}})
    stale = next(p for p in files if "cbdm" in p and p.endswith("-ours.json"))
    data = json.loads(open(stale).read())
    write_json(stale, {**data, "cell": {**data["cell"], "steps": 5}})
    with pytest.raises(ReportError, match=rf"{stale} was measured on samples drawn with ddim 5 steps, but the "
                                          r"config says ddim 10 steps for variant cbdm"):
        build_report(**report_inputs)
    assert not any(os.path.exists(p) for p in report_inputs["outputs"].values())


@pytest.mark.parametrize("wrong", ["train.npz", "manifest.json"])
@pytest.mark.parametrize("recorded, refusal", [
    (None, "records no origin"),
    ({"dataset": "digits", "imbalance_factor": "10", "data_digest": "other"},
     "was made for data_digest other, but this job needs data_digest d")])
def test_a_training_set_or_manifest_of_other_settings_is_refused_before_anything_is_written(report_inputs, wrong,
                                                                                            recorded, refusal):
    """The report showed any train.npz as the training set beside the samples (the grids and the
    memorization figure), and any manifest's class counts and size as the training set's: one
    drawn with other long-tail settings passed without a word."""
    files = report_inputs["files"]
    expected = {"dataset": "digits", "imbalance_factor": "10", "data_digest": "d"}
    made = {name: recorded if name == wrong else expected for name in ("train.npz", "manifest.json")}
    write_npz(files.train_npz, images=np.full((30, 1, 8, 8), 7, np.uint8), labels=np.repeat([0, 1], [20, 10]),
              **origin_array(made["train.npz"]))
    write_json(files.manifest_json, {"total": 30, "class_counts": [20, 10],
                                     **({"origin": made["manifest.json"]} if made["manifest.json"] else {})})
    with pytest.raises(InputError, match=f"{wrong} {refusal}.*--forcerun"):
        build_report(replace(files, train_origin=expected), report_inputs["settings"], report_inputs["outputs"])
    assert not any(Path(path).exists() for path in report_inputs["outputs"].values())
