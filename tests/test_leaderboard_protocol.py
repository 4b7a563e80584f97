"""Protocols that differ are never silently compared: reference statistics must prove the
extractor and reference set they were made with, the fid_small_n rule holds against statistics
as against images, and leaderboard rows are labelled by the measurement their metrics file
records, not by the config at the time of reading."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from cbdm.config import load_config
from cbdm.evaluate import distribution_metrics
from cbdm.io import InputError, write_json, write_npz
from cbdm.leaderboard import NOT_RECORDED, describe_features, leaderboard, markdown, measurement
from cbdm.records import record
from cbdm.refstats import evaluate_against_stats, write_reference_stats

from helpers import minimal_config

GROUPS = {"head": [0, 1, 2, 3, 4], "tail": [5, 6, 7, 8, 9]}
DIM = 8
CLASSIFIER = "domain classifier 8-d penultimate features (2 epochs on the balanced pool, seed 0)"


def feature_set(per_class: int, seed: int) -> dict:
    """Random 8-d features of `per_class` images of each of ten classes, as a features file holds them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    return {"features": rng.normal(size=(len(labels), DIM)), "labels": labels, "predicted": labels,
            "logits": rng.normal(size=(len(labels), 10))}


@pytest.fixture
def stats_file(tmp_path):
    """The statistics of 30 reference images per class, made with the classifier extractor."""
    write_npz(tmp_path / "reference.npz", **feature_set(30, seed=1))
    path = tmp_path / "reference-heldout.stats.npz"
    write_reference_stats(reference_npz=str(tmp_path / "reference.npz"), groups=GROUPS, num_classes=10,
                          extractor=CLASSIFIER, reference="heldout", out_npz=str(path))
    return path


def fid_records(gen, path, cfg, extractor=CLASSIFIER, reference="heldout") -> dict:
    return {r["scope"]: r for r in evaluate_against_stats(gen, str(path), GROUPS, 10, cfg, extractor=extractor,
                                                          reference=reference) if r["metric"] == "fid"}


def test_the_two_inception_preprocessings_are_described_differently():
    config = minimal_config(features={"extractor": "inception"})["features"]
    ours, theirs = describe_features(config), describe_features({**config, "inception_preprocessing": "pytorch_fid"})
    assert ours != theirs and "torch_fidelity preprocessing" in ours and "pytorch_fid preprocessing" in theirs


def test_statistics_of_another_extractor_or_reference_are_refused(stats_file):
    gen, cfg = feature_set(12, seed=2), minimal_config()["evaluation"]
    assert fid_records(gen, stats_file, cfg)["all"]["value"] > 0  # the matching extractor and reference
    other = "Inception-v3 pool 2048-d (torch-fidelity port, w.pth), pytorch_fid preprocessing"
    with pytest.raises(InputError, match=re.escape(f"{stats_file} holds statistics with extractor '{CLASSIFIER}', "
                                                   f"but these samples are scored with extractor '{other}'")
                       + ".*score with the config and protocol that made the file, or remake it"):
        fid_records(gen, stats_file, cfg, extractor=other)
    with pytest.raises(InputError, match="reference 'heldout', but these samples are scored with reference 'pool'"):
        fid_records(gen, stats_file, cfg, reference="pool")


def test_published_statistics_are_accepted_but_say_what_they_do_not_record(stats_file, tmp_path):
    gen, cfg = feature_set(12, seed=2), minimal_config()["evaluation"]
    with np.load(stats_file) as ours:
        np.savez(tmp_path / "edm.npz", mu=ours["mu"], sigma=ours["sigma"])  # EDM's and clean-fid's layout
        np.savez(tmp_path / "other.npz", mu=ours["mu"], sigma=ours["sigma"], n=ours["n"])
    fid = fid_records(gen, tmp_path / "edm.npz", cfg)["all"]
    assert fid["value"] > 0 and fid["n_ref"] == 0
    assert "extractor and reference set were not recorded" in fid["note"] and CLASSIFIER in fid["note"]
    assert "n of the reference statistics not recorded" in fid["note"]
    # neither ours nor a published layout: nothing says what made it
    with pytest.raises(InputError, match=f"{tmp_path / 'other.npz'} records no `extractor`"):
        fid_records(gen, tmp_path / "other.npz", cfg)


@pytest.mark.parametrize("rule", ["refuse", "flag"])
def test_fid_small_n_holds_against_statistics_as_against_images(stats_file, tmp_path, rule):
    gen, ref = feature_set(6, seed=2), feature_set(30, seed=1)  # 6 per class: at or below the 8 dimensions
    cfg = {**minimal_config()["evaluation"], "min_samples": 2, "fid_small_n": rule}
    from_stats = fid_records(gen, stats_file, cfg)["class 3"]
    from_images = distribution_metrics(gen["features"][gen["labels"] == 3], ref["features"][ref["labels"] == 3],
                                       cfg)["fid"]
    assert from_stats["note"].startswith(from_images[1])
    if rule == "refuse":
        assert from_stats["value"] is None and from_images[0] is None
    else:
        assert from_stats["value"] == pytest.approx(from_images[0], rel=1e-8)


def write_entry(results, name: str, cell_extra: dict) -> None:
    """An external entry's card and metrics file, its cell extended by `cell_extra`."""
    folder = results / "external" / name / "digits-IF100"
    cell = dict(dataset="digits", imbalance_factor=100.0, variant=name, seed=None, guidance=None, sample_seed=None,
                protocol="ours", labels="exact", num_samples=1000, reference="heldout", **cell_extra)
    records = [dict(scope=s, metric=m, value=1.0, n_gen=500, n_ref=150, note="", sd=None, ci_low=None,
                    ci_high=None) for s in ("all", *GROUPS) for m in ("fid", "kid_mean", "precision", "recall",
                                                                      "accuracy")]
    write_json(folder / "ours.json", {"cell": cell, "records": records})
    (folder / "card.json").write_text(json.dumps({"source": name, "note": "", "kind": "external"}))


def test_leaderboard_rows_carry_the_measurement_their_metrics_file_records(tmp_path):
    config = minimal_config()
    then = measurement(minimal_config(features={"extractor": "inception"})["features"], config["datasets"]["digits"],
                       config["evaluation"])
    write_entry(tmp_path, "measured", then)
    write_entry(tmp_path, "older", {})  # written before cells recorded their extractor
    table = leaderboard(config, tmp_path).set_index("entry")
    assert table.loc["measured", "features"] == then["features"]  # not the config's classifier
    assert table.loc["measured", "preprocessing"] == then["preprocessing"]
    assert table.loc["older", "features"] == NOT_RECORDED == table.loc["older", "preprocessing"]
    assert table.loc["older", "evaluation"] == NOT_RECORDED == table.loc["older", "extractor"]
    text = markdown(table.reset_index(), "t")
    assert text.count("## Card") == 2 and f"features: {NOT_RECORDED}" in text


def test_the_metrics_rule_records_the_measurement_in_the_cell(tmp_path, repo, tiny_config):
    from test_workflow import planned_dag_jobs

    config = load_config(tiny_config)
    cells = [job.params.cell for job in planned_dag_jobs(repo, tmp_path, tiny_config) if job.rule.name == "metrics"]
    expected = measurement(config["features"], config["datasets"]["digits"], config["evaluation"])
    assert cells and all(cell["features"] == expected["features"] for cell in cells)
    assert all(cell["preprocessing"] == expected["preprocessing"] for cell in cells)
    assert all(cell["evaluation"] == expected["evaluation"] for cell in cells)
    assert {(cell["sampler"], cell["steps"]) for cell in cells} == {(config["sampling"]["sampler"],
                                                                     config["sampling"]["steps"])}


def test_a_card_ranks_its_rows_by_fid_with_the_spread_over_runs_and_says_which_way_is_better(tmp_path):
    config = minimal_config()
    for name, fid in (("a_worse", 9.0), ("b_better", 3.0)):  # read in name order
        write_entry(tmp_path, name, measurement(config["features"], config["datasets"]["digits"],
                                                config["evaluation"]))
        path = tmp_path / "external" / name / "digits-IF100" / "ours.json"
        data = json.loads(path.read_text())
        for r in data["records"]:
            r["value"] = fid if r["metric"] == "fid" else r["value"]
        write_json(path, data)
    text = markdown(leaderboard(config, tmp_path), "t")
    assert text.index("| b_better") < text.index("| a_worse")  # read second, ranked first
    assert "Lower is better for FID and KID, higher for precision, recall and acc" in text
    assert "FID sd" in text.split("## Card 1")[1]


def write_run(results, config: dict, variant: str, seed: int, guidance: float, fid: float, note: str) -> None:
    """A metrics file of one run of a declared variant, measured as `config` says, every value `fid`."""
    cell = dict(dataset="digits", imbalance_factor=100.0, variant=variant, seed=seed, guidance=guidance,
                sample_seed=0, protocol="ours", labels="exact", num_samples=1000, reference="heldout",
                **measurement(config["features"], config["datasets"]["digits"], config["evaluation"]))
    records = [dict(scope=s, metric=m, value=fid, n_gen=500, n_ref=150, note=note, sd=None, ci_low=None,
                    ci_high=None) for s in ("all", *GROUPS) for m in ("fid", "kid_mean", "precision", "recall",
                                                                      "accuracy")]
    path = results / f"metrics/digits/IF100/{variant}/seed{seed}/w{guidance:g}-s0/ours.json"
    write_json(path, {"cell": cell, "records": records})


def test_an_imported_variant_of_several_seeds_is_one_row_with_the_spread_over_them(in_tmp):
    """Each seed of an imported variant comes from a file of its own: its row is still one, the
    mean and sd over the seeds as for a built-in variant, and it names every file."""
    paths = {seed: f"seed{seed}.npz" for seed in (0, 1, 2)}
    for path in paths.values():
        (in_tmp / path).write_bytes(b"")
    config = minimal_config(seeds=[0, 1, 2], variants={"mine": {"samples": {1.0: paths}}})
    for seed, fid in ((0, 1.0), (1, 2.0), (2, 3.0)):
        write_run(in_tmp, config, "mine", seed, 1.0, fid, f"imported from {paths[seed]} (suite_npz)")
    table = leaderboard(config, in_tmp)
    assert len(table) == 1 and table["runs"].iloc[0] == "0/0, 1/0, 2/0"
    assert table["fid"].iloc[0] == pytest.approx(2.0) and table["sd_fid"].iloc[0] == pytest.approx(1.0)
    assert table["samples_from"].iloc[0] == " | ".join(f"imported from {p} (suite_npz)" for p in paths.values())
    assert list(table.columns[table.columns.get_loc("ema"):][:2]) == ["ema", "samples_from"]


def test_the_guidance_of_samples_given_as_a_plain_path_is_shown_as_not_declared(in_tmp):
    """A plain `samples:` path declares no guidance scale: its cells carry the suite's own sampling
    scale as a label only, so the leaderboard and the report show it as unknown; a scale given as
    a key of `samples` is shown."""
    from cbdm.config import variant_settings
    from cbdm.report import aggregate, sampling_line, wide_table

    (in_tmp / "a.npz").write_bytes(b"")
    config = minimal_config(sampling={"guidance": 2.0},
                            variants={"plain": {"samples": "a.npz"}, "keyed": {"samples": {1.5: {0: "a.npz"}}}})
    for variant, guidance in (("plain", 2.0), ("keyed", 1.5)):
        write_run(in_tmp, config, variant, 0, guidance, 1.0, "imported from a.npz (suite_npz)")
    table = leaderboard(config, in_tmp).set_index("entry")
    assert table.loc["plain", "guidance"] == "n/a" and table.loc["keyed", "guidance"] == "1.5"
    sampling = {v: variant_settings(config, v)["sampling"] for v in ("plain", "keyed")}
    assert sampling_line(sampling["plain"], 2.0) == "imported samples (guidance not declared; sampler and steps " \
                                                    "not known)"
    assert sampling_line(sampling["keyed"], 1.5).startswith("imported samples (declared guidance 1.5;")
    runs = pd.DataFrame([{"protocol": "ours", "variant": v, "guidance": g, "seed": 0, "sample_seed": 0,
                          **record("all", "fid", 1.0, 100, 50)} for v, g in (("plain", 2.0), ("keyed", 1.5))])
    wide = wide_table(aggregate(runs), [("FID all", "all", "fid")], sampling).set_index("variant")
    assert wide.loc["plain", "guidance"] == "n/a" and wide.loc["keyed", "guidance"] == "1.5"


def test_rows_of_cells_the_config_no_longer_declares_are_left_out_and_rows_say_their_own_sampler(in_tmp):
    """Metrics files of a dropped seed or guidance scale stay on disk; the leaderboard averaged
    them in and labelled them with the current sampler. A row's sampler and steps are the ones its
    cell recorded (a protocol may sample with its own)."""
    config = minimal_config(seeds=[0, 1], sampling={"guidance": 2.0, "sampler": "ddim", "steps": 50})
    for seed, guidance in ((0, 2.0), (1, 2.0), (2, 2.0), (0, 1.0)):  # seed 2 and scale 1 were dropped
        write_run(in_tmp, config, "ddpm", seed, guidance, 1.0 + seed, "")
    path = in_tmp / "metrics/digits/IF100/ddpm/seed1/w2-s0/ours.json"
    data = json.loads(path.read_text())
    write_json(path, {**data, "cell": {**data["cell"], "sampler": "ancestral", "steps": 1000}})
    table = leaderboard(config, in_tmp)
    assert sorted(table["runs"]) == ["0/0", "1/0"] and set(table["guidance"]) == {"2"}
    assert sorted(zip(table["sampler"], table["steps"])) == [("ancestral", 1000), ("ddim", 50)]


def test_a_number_not_computed_in_every_run_of_a_row_is_not_the_mean_of_the_others(in_tmp):
    """A group too small for FID in one seed (value None, a note saying why) was left out of the
    mean, so the row showed the mean of the other two seeds beside 'runs: 0/0, 1/0, 2/0'."""
    config = minimal_config(seeds=[0, 1, 2])
    for seed, fid in ((0, 1.0), (1, 2.0), (2, 3.0)):
        write_run(in_tmp, config, "ddpm", seed, 1.0, fid, "")
    path = in_tmp / "metrics/digits/IF100/ddpm/seed1/w1-s0/ours.json"
    data = json.loads(path.read_text())
    for r in data["records"]:
        if r["scope"] == "tail" and r["metric"] == "fid":
            r.update(value=None, note="not computed: n_gen=8, n_ref=150, fewer than evaluation.min_samples=10")
    write_json(path, data)
    row = leaderboard(config, in_tmp).iloc[0]
    assert row["runs"] == "0/0, 1/0, 2/0" and row["fid"] == pytest.approx(2.0)
    assert row["fid_head"] == pytest.approx(2.0) and pd.isna(row["fid_tail"])
    text = markdown(leaderboard(config, in_tmp), "t")
    assert "'-': not computed in every run listed" in text


def test_a_metrics_file_copied_over_another_cells_is_refused_naming_it(in_tmp):
    """ddpm's ours.json copied over cbdm's: the leaderboard counted it as a second run of ddpm (sd 0)
    and cbdm's row vanished; the report said cbdm's cell had no metrics and to run the workflow to
    completion, which reran nothing."""
    config = minimal_config(variants={"ddpm": {"losses": [{"name": "eps_mse"}]},
                                      "cbdm": {"losses": [{"name": "eps_mse"}, {"name": "cbdm"}]}})
    for variant, fid in (("ddpm", 1.0), ("cbdm", 2.0)):
        write_run(in_tmp, config, variant, 0, 1.0, fid, "")
    assert len(leaderboard(config, in_tmp)) == 2
    copied = in_tmp / "metrics/digits/IF100/cbdm/seed0/w1-s0/ours.json"
    copied.write_text((in_tmp / "metrics/digits/IF100/ddpm/seed0/w1-s0/ours.json").read_text())
    with pytest.raises(InputError, match=rf"{copied} holds the metrics of variant ddpm, but its place is that of "
                                         rf"variant cbdm: it was copied or moved; .*--forcerun {copied}"):
        leaderboard(config, in_tmp)


def test_statistics_of_another_training_of_the_classifier_are_refused(tmp_path):
    """Two trainings of the same recipe (other thread count, another machine) give other feature
    spaces under the same words: a statistics file copied from another run was scored against
    without a word. The file records its features' extractor label (the classifier file's digest)."""
    write_npz(tmp_path / "reference.npz", **feature_set(30, seed=1), extractor=np.asarray("classifier sha256:aaa"))
    path = tmp_path / "reference-heldout.stats.npz"
    write_reference_stats(reference_npz=str(tmp_path / "reference.npz"), groups=GROUPS, num_classes=10,
                          extractor=CLASSIFIER, reference="heldout", out_npz=str(path))
    cfg = minimal_config()["evaluation"]
    assert fid_records({**feature_set(12, seed=2), "extractor": np.asarray("classifier sha256:aaa")}, path, cfg)
    with pytest.raises(InputError, match=re.escape(f"{path} holds statistics of features labelled "
                                                   "'classifier sha256:aaa', but these samples' features are "
                                                   "labelled 'classifier sha256:bbb'")):
        fid_records({**feature_set(12, seed=2), "extractor": np.asarray("classifier sha256:bbb")}, path, cfg)


def test_inception_statistics_of_a_run_with_another_classifier_are_accepted(tmp_path):
    """Inception's features do not depend on the classifier its label also names (it predicts the classes)."""
    inception = "inception torch_fidelity preprocessing; classes by classifier sha256:"
    write_npz(tmp_path / "reference.npz", **feature_set(30, seed=1), extractor=np.asarray(inception + "aaa"))
    path = tmp_path / "reference-heldout.stats.npz"
    write_reference_stats(reference_npz=str(tmp_path / "reference.npz"), groups=GROUPS, num_classes=10,
                          extractor=CLASSIFIER, reference="heldout", out_npz=str(path))
    gen = {**feature_set(12, seed=2), "extractor": np.asarray(inception + "bbb")}
    assert fid_records(gen, path, minimal_config()["evaluation"])["all"]["value"] > 0
