"""The long-tail phenomenon measurements: held-out rates, the tail-minus-head gap, leakage excess."""
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from cbdm.dataset import reference_origin
from cbdm.fingerprint import origin_array
from cbdm.io import InputError, write_npz
from cbdm.origins import sample_origin
from cbdm.phenomenon import classification_records, group_gap, heldout_records, leakage_excess

GROUPS = {"head": [0, 1], "tail": [2, 3]}


def cell_origin(config: dict, path) -> dict:
    """The origin a finished suite's sample features file at `path` records (its sample job's)."""
    dataset, imb, variant, seed, sampled, labelset = path.with_suffix("").parts[-6:]
    guidance, sample_seed = sampled[1:].split("-s")
    return sample_origin(config, dataset=dataset, imb=imb[2:], variant=variant, seed=seed[4:], guidance=guidance,
                         sample_seed=sample_seed, labelset=labelset)


def value(records, scope, metric):
    [found] = [r["value"] for r in records if r["scope"] == scope and r["metric"] == metric]
    return found


def test_classification_records_count_tail_images_predicted_as_a_head_class():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    predicted = np.array([0, 1, 1, 1, 0, 2, 1, 3, 3, 2])  # tail: 2->0, 2->1 into head; 2->3, 3->2 stay in tail
    records = classification_records(labels, predicted, GROUPS, 4)
    assert value(records, "tail", "misclassified_into:head") == pytest.approx(2 / 6)
    assert value(records, "tail", "misclassified_into:tail") == pytest.approx(2 / 6)
    assert value(records, "tail", "accuracy") == pytest.approx(2 / 6)
    assert value(records, "head", "accuracy") == pytest.approx(3 / 4)
    assert value(records, "head", "misclassified_into:head") == pytest.approx(1 / 4)
    assert value(records, "all", "accuracy") == pytest.approx(5 / 10)
    assert value(records, "class 2", "misclassified_into:head") == pytest.approx(2 / 4)
    [n] = {r["n_gen"] for r in records if r["scope"] == "tail"}
    assert n == 6


def test_a_scope_without_images_has_no_rate_and_says_why():
    records = classification_records(np.array([0, 1]), np.array([0, 1]), GROUPS, 4)
    assert value(records, "tail", "accuracy") is None
    assert {r["note"] for r in records if r["scope"] == "tail"} == {"no images"}


def test_heldout_records_read_the_classifiers_predictions_from_the_reference_features(tmp_path):
    path = tmp_path / "reference-heldout.npz"
    labels = np.repeat(np.arange(4), 5)
    predicted = labels.copy()
    predicted[labels == 3] = [3, 3, 3, 0, 0]
    write_npz(path, features=np.zeros((20, 2), np.float32), logits=np.zeros((20, 4), np.float32),
              labels=labels, predicted=predicted)
    records = heldout_records(str(path), GROUPS, 4)
    assert value(records, "tail", "misclassified_into:head") == pytest.approx(2 / 10)
    assert value(records, "head", "misclassified_into:tail") == 0.0


def runs_frame(head, tail, variant="ddpm", seeds=None):
    seeds = list(range(len(head))) if seeds is None else seeds
    rows = []
    for seed, h, t in zip(seeds, head, tail):
        rows += [{"variant": variant, "seed": seed, "sample_seed": 0, "guidance": 1.0, "protocol": "ours",
                  "scope": scope, "metric": "fid@matched", "value": v} for scope, v in (("head", h), ("tail", t))]
    return pd.DataFrame(rows)


def test_group_gap_pairs_tail_and_head_within_each_run_with_a_t_interval():
    # Head FIDs differ much between runs, the gap hardly: pairing is what makes it decisive.
    runs = runs_frame(head=[10.0, 20.0, 30.0], tail=[15.0, 26.0, 37.0], seeds=[2, 0, 1])
    runs = pd.concat([runs, runs_frame([1.0], [1.0], variant="cbdm")]).sample(frac=1.0, random_state=0)
    gaps = group_gap(runs).set_index("variant")
    half = stats.t.ppf(0.975, 2) * 1.0 / np.sqrt(3)
    assert gaps.loc["ddpm", "diff"] == pytest.approx(6.0)
    assert gaps.loc["ddpm", "ci_low"] == pytest.approx(6.0 - half)
    assert gaps.loc["ddpm", "ci_high"] == pytest.approx(6.0 + half)
    assert gaps.loc["ddpm", "sd"] == pytest.approx(1.0)
    assert gaps.loc["ddpm", "verdict"] == "tail worse than head"
    assert gaps.loc["cbdm", "verdict"].startswith("undecided (one run")


def test_group_gap_says_when_the_tail_is_better_or_the_interval_spans_zero():
    assert group_gap(runs_frame([15.0, 26.0, 37.0], [10.0, 20.0, 30.0]))["verdict"][0] == "tail better than head"
    assert group_gap(runs_frame([10.0, 20.0, 30.0], [12.0, 18.0, 31.0]))["verdict"][0] == "no detectable difference"


def leakage_runs(values):
    return pd.DataFrame([{"variant": "ddpm", "seed": s, "sample_seed": 0, "scope": "tail",
                          "metric": "misclassified_into:head", "value": v} for s, v in enumerate(values)])


def test_leakage_excess_compares_samples_with_the_heldout_images_own_rate():
    heldout = [{"scope": "tail", "metric": "misclassified_into:head", "value": 0.01, "n_gen": 10_000}]
    [row] = leakage_excess(leakage_runs([0.05, 0.06, 0.07]), heldout).to_dict("records")
    assert row["samples"] == pytest.approx(0.06)
    assert row["heldout"] == 0.01
    assert row["ratio"] == pytest.approx(6.0)
    assert row["diff"] == pytest.approx(0.05)
    assert row["verdict"] == "above held-out"
    [row] = leakage_excess(leakage_runs([0.0, 0.02, 0.01]), heldout).to_dict("records")
    assert row["verdict"] == "not distinguishable from held-out"


def test_the_leakage_verdict_weighs_the_heldout_rates_own_sampling_error():
    """2 of 250 held-out images (0.8 %, exact interval [0.10 %, 2.86 %]) against DDPM's 4.53 ±
    1.47 % over 3 runs: the runs' interval alone, [+0.07, +7.4] points, called it 'above held-out';
    with the held-out rate's error the excess interval holds 0."""
    from cbdm.phenomenon import rate_interval

    assert rate_interval(2 / 250, 250) == pytest.approx((0.000970, 0.02862), rel=2e-3)
    heldout = [{"scope": "tail", "metric": "misclassified_into:head", "value": 2 / 250, "n_gen": 250}]
    [row] = leakage_excess(leakage_runs([0.0306, 0.0453, 0.0600]), heldout).to_dict("records")
    assert row["verdict"] == "not distinguishable from held-out" and row["ci_low"] < 0 < row["ci_high"]
    assert (row["heldout_low"], row["heldout_high"]) == pytest.approx((0.000970, 0.02862), rel=2e-3)
    [row] = leakage_excess(leakage_runs([0.085, 0.10, 0.115]), heldout).to_dict("records")
    assert row["verdict"] == "above held-out"


def test_leakage_excess_refuses_heldout_records_without_the_rate():
    with pytest.raises(ValueError, match="no rate of tail misclassified into head"):
        leakage_excess(leakage_runs([0.1, 0.2]), [])


def test_suite_cells_recompute_the_metrics_stages_matched_records_and_regroup(tmp_path, repo):
    from cbdm.config import load_config
    from cbdm.evaluate import evaluate
    from cbdm.phenomenon import suite_cells

    config = load_config(repo / "config/config.yaml")
    results = tmp_path / "results/suite"
    results.mkdir(parents=True)
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.RandomState(0)

    def features(path, per_class, shift, origin=None):
        labels = np.repeat(np.arange(10), per_class)
        feats = rng.normal(size=(len(labels), 32)) + shift * (labels[:, None] >= 5)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_npz(path, features=feats.astype(np.float32), logits=np.zeros((len(labels), 10), np.float32),
                  labels=labels, predicted=np.where(labels == 9, 0, labels), **origin_array(origin))

    reference = results / "features/digits/IF100/reference-heldout.npz"
    features(reference, 50, 0.0, reference_origin("digits", config["datasets"]["digits"], "heldout", 100.0))
    for seed in (0, 1):
        path = results / f"features/digits/IF100/ddpm/seed{seed}/w1-s0/exact-1000.npz"
        features(path, 100, 1.0, cell_origin(config, path))
    [(cell, (runs, heldout))] = suite_cells(results).items()
    assert cell == ("digits", "100", "exact-1000") and sorted(runs["seed"].unique()) == [0, 1]
    assert value(heldout, "tail", "misclassified_into:head") == pytest.approx(0.2)  # class 9 -> 0
    out = tmp_path / "metrics.json"
    evaluate(generated_npz=str(results / "features/digits/IF100/ddpm/seed1/w1-s0/exact-1000.npz"),
             reference_npz=str(reference), groups=config["datasets"]["digits"]["groups"], num_classes=10,
             evaluation=config["evaluation"], cell={}, device="cpu", out_json=str(out))
    stage = json.loads(out.read_text())["records"]
    mine = runs[runs["seed"] == 1].to_dict("records")
    for scope in ("head", "tail"):
        assert value(mine, scope, "fid@matched") == value(stage, scope, "fid@matched")
    assert group_gap(runs)["diff"][0] > 0  # tail features shifted away from the reference
    [(regrouped, heldout)] = suite_cells(results, {"head": [0, 1, 2], "tail": [7, 8, 9]}).values()
    assert value(heldout, "tail", "misclassified_into:head") == pytest.approx(1 / 3)
    assert {r["n_gen"] for r in regrouped.to_dict("records") if r["metric"] == "fid@matched"} == {
        int(config["evaluation"]["matched_fraction"] * 300)}


def test_suite_cells_keep_imbalance_factors_apart(tmp_path, repo):
    """Two imbalance factors, three seeds each, tail gaps of about 10 and 50: one gap per factor,
    each from its own three runs (pooled by seed, IF1000's runs were dropped without a word)."""
    from cbdm.config import load_config
    from cbdm.phenomenon import main, suite_cells

    config = load_config(repo / "config/config.yaml")
    config["datasets"]["digits"]["longtail"]["imbalance_factor"] = [100, 1000]
    results = tmp_path / "results/suite"
    results.mkdir(parents=True)
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(10), 60)
    for imb, shift in (("100", 1.0), ("1000", 3.0)):
        for name, move in [("reference-heldout", 0.0)] + [(f"ddpm/seed{s}/w1-s0/exact-600", shift) for s in range(3)]:
            path = results / f"features/digits/IF{imb}/{name}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            feats = rng.normal(size=(len(labels), 8)) + move * (labels[:, None] >= 5)
            origin = (reference_origin("digits", config["datasets"]["digits"], "heldout", float(imb))
                      if name.startswith("reference") else cell_origin(config, path))
            write_npz(path, features=feats.astype(np.float32), logits=np.zeros((len(labels), 10), np.float32),
                      labels=labels, predicted=labels, **origin_array(origin))
    cells = suite_cells(results)
    assert sorted(cells) == [("digits", "100", "exact-600"), ("digits", "1000", "exact-600")]
    gaps = {imb: group_gap(runs).to_dict("records") for (_, imb, _), (runs, _) in cells.items()}
    assert [row["pairs"] for imb in gaps for row in gaps[imb]] == [3, 3]
    assert gaps["1000"][0]["diff"] > 2 * gaps["100"][0]["diff"] > 0
    main([str(results)])


def test_suite_cells_refuse_reference_features_of_another_heldout_split(tmp_path, repo):
    """The analysis reads a finished suite's held-out features as the metrics job does: features of
    another held-out split (here 20 per class where the suite holds out 50) are refused."""
    from cbdm.config import load_config
    from cbdm.phenomenon import suite_cells

    config = load_config(repo / "config/config.yaml")
    results = tmp_path / "results/suite"
    results.mkdir(parents=True)
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    other = {**config["datasets"]["digits"], "heldout_per_class": 20}
    labels = np.repeat(np.arange(10), 40)
    arrays = dict(features=np.zeros((400, 8), np.float32), logits=np.zeros((400, 10), np.float32), labels=labels,
                  predicted=labels)
    reference = results / "features/digits/IF100/reference-heldout.npz"
    reference.parent.mkdir(parents=True)
    write_npz(reference, **arrays, **origin_array(reference_origin("digits", other, "heldout", 100.0)))
    write_npz(results / "features/digits/IF100/ddpm/seed0/w1-s0/exact-400.npz", **arrays)
    with pytest.raises(InputError, match="reference-heldout.npz was made for data_digest"):
        suite_cells(results)


@pytest.mark.parametrize("other, differs", [("ddpm/seed1", "seed 0, but this job needs seed 1"),
                                            ("cbdm/seed0", "training_digest .* variant ddpm, but this job needs")],
                         ids=["seed", "variant"])
def test_suite_cells_refuse_sample_features_copied_over_another_cells(tmp_path, repo, other, differs):
    """The analysis reads a finished suite's sample features as the metrics job does: a features
    file copied over another cell's (another training seed's, another variant's) was scored as
    that cell's without a word; it is refused in one line naming the file and what differs."""
    import shutil

    from cbdm.config import load_config
    from cbdm.phenomenon import main, suite_cells

    config = load_config(repo / "config/config.yaml")
    results = tmp_path / "results/suite"
    results.mkdir(parents=True)
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    labels = np.repeat(np.arange(10), 40)
    arrays = dict(features=np.random.RandomState(0).normal(size=(400, 8)).astype(np.float32),
                  logits=np.zeros((400, 10), np.float32), labels=labels, predicted=labels)
    folder = results / "features/digits/IF100"
    folder.mkdir(parents=True)
    write_npz(folder / "reference-heldout.npz", **arrays,
              **origin_array(reference_origin("digits", config["datasets"]["digits"], "heldout", 100.0)))
    for cell in ("ddpm/seed0", other):
        path = folder / cell / "w1-s0/exact-400.npz"
        path.parent.mkdir(parents=True)
        write_npz(path, **arrays, **origin_array(cell_origin(config, path)))
    assert len(suite_cells(results)) == 1  # each file as its sample job wrote it
    shutil.copy(folder / "ddpm/seed0/w1-s0/exact-400.npz", folder / other / "w1-s0/exact-400.npz")
    with pytest.raises(InputError, match=rf"{other}/w1-s0/exact-400.npz was made for .*{differs}"):
        suite_cells(results)
    with pytest.raises(SystemExit, match=rf"^cbdm.phenomenon: \S+{other}/w1-s0/exact-400.npz was made for"):
        main([str(results)])  # the command says it in one line, no traceback


def test_suite_cells_refuse_sample_features_of_a_cell_the_recorded_config_does_not_declare(tmp_path, repo):
    """Features of a variant the suite's config.yaml does not declare (left from another config) have
    no origin to expect: one line naming the file and the config, not a KeyError."""
    from cbdm.config import load_config
    from cbdm.phenomenon import suite_cells

    config = load_config(repo / "config/config.yaml")
    results = tmp_path / "results/suite"
    results.mkdir(parents=True)
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    labels = np.repeat(np.arange(10), 40)
    arrays = dict(features=np.zeros((400, 8), np.float32), logits=np.zeros((400, 10), np.float32), labels=labels,
                  predicted=labels)
    folder = results / "features/digits/IF100"
    (folder / "gone/seed0/w1-s0").mkdir(parents=True)
    write_npz(folder / "reference-heldout.npz", **arrays,
              **origin_array(reference_origin("digits", config["datasets"]["digits"], "heldout", 100.0)))
    write_npz(folder / "gone/seed0/w1-s0/exact-400.npz", **arrays)
    with pytest.raises(InputError, match=r"gone/seed0/w1-s0/exact-400.npz: \S+config.yaml gives no origin for its "
                                         r"cell \(unknown variant 'gone'"):
        suite_cells(results)
