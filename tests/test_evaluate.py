import json
import re

import numpy as np
import pytest

from cbdm.evaluate import evaluate, matched_group_records, scope_records
from cbdm.io import write_npz

CFG = {"min_samples": 10, "kid_subsets": 5, "kid_subset_size": 50, "pr_neighborhood": 3, "seed": 0,
       "fid_small_n": "flag", "fid_infinity": False, "matched_repeats": 4, "matched_fraction": 0.5,
       "kid_bootstrap": 20, "is_splits": 2}


def arrays(n, dim=4, labels=None, predicted=None, seed=0):
    rng = np.random.RandomState(seed)
    labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    return {"features": rng.randn(n, dim), "labels": labels, "logits": rng.randn(n, 3),
            "predicted": labels.copy() if predicted is None else np.asarray(predicted)}


def by_metric(records):
    return {r["metric"]: r for r in records}


def test_too_few_samples_give_no_value_and_say_why():
    records = by_metric(scope_records("class 9", arrays(5), arrays(40), {}, CFG))
    for metric in ("fid", "kid_mean", "precision", "recall"):
        assert records[metric]["value"] is None
        assert "fewer than evaluation.min_samples=10" in records[metric]["note"]
        assert records[metric]["n_gen"] == 5 and records[metric]["n_ref"] == 40
    assert records["accuracy"]["value"] == 1.0  # accuracy needs no reference set


def test_fid_at_or_below_the_feature_dimension_is_flagged():
    records = by_metric(scope_records("class 0", arrays(30, dim=32), arrays(200, dim=32, seed=1), {}, CFG))
    assert np.isfinite(records["fid"]["value"])  # still computed, but flagged:
    assert "singular covariance" in records["fid"]["note"]
    clean = by_metric(scope_records("all", arrays(300, dim=8), arrays(200, dim=8, seed=1), {}, CFG))
    assert clean["fid"]["note"] == ""
    refused = by_metric(scope_records("class 0", arrays(30, dim=32), arrays(200, dim=32, seed=1), {},
                                      {**CFG, "fid_small_n": "refuse"}))
    assert refused["fid"]["value"] is None and "fid_small_n: refuse" in refused["fid"]["note"]


def test_fid_infinity_on_a_group_too_small_for_it_is_recorded_as_not_computed():
    """n_gen 30 and 34 at dimension 32: FID is flagged, FD-infinity has no value and says why
    (it used to end the metrics job: a subset larger than the set, or a ValueError)."""
    for n in (30, 34):
        records = by_metric(scope_records("head", arrays(n, dim=32), arrays(200, dim=32, seed=1), {},
                                          {**CFG, "fid_infinity": True}))
        assert records["fid"]["value"] is not None
        assert records["fid_infinity"]["value"] is None
        assert records["fid_infinity"]["note"] == (f"not computed: FD-infinity needs more than the feature "
                                                   f"dimension 32 + 2 generated samples, got {n}")
    records = by_metric(scope_records("head", arrays(35, dim=32), arrays(200, dim=32, seed=1), {},
                                      {**CFG, "fid_infinity": True}))
    assert records["fid_infinity"]["value"] is not None and "n = [34, 35]" in records["fid_infinity"]["note"]


def test_inception_score_on_splits_smaller_than_the_classes_is_not_computed_and_says_why():
    """Fewer samples than splits gave NaN; as many gave splits of one sample each and IS 1.0 with
    sd 0 whatever the logits (a split of m samples caps IS at m), printed as a score."""
    from cbdm.evaluate import inception_score_records

    logits = np.random.RandomState(0).randn(40, 3) * 3
    for n, splits in ((5, 10), (10, 10), (29, 10)):  # splits of 0, 1 and 2 samples, below the 3 classes
        short = by_metric(inception_score_records(logits[:n], {**CFG, "is_splits": splits}, num_classes=3))
        assert short["is_mean"]["value"] is None and short["is_std"]["value"] is None, n
        assert short["is_mean"]["note"] == (f"not computed: {n} samples in evaluation.is_splits={splits} splits "
                                            f"give splits of {n // splits}, fewer than the dataset's 3 classes, "
                                            f"which cap IS below what a model of every class scores")
        assert short["is_mean"]["n_gen"] == n
    full = by_metric(inception_score_records(logits[:30], {**CFG, "is_splits": 10}, num_classes=3))
    assert np.isfinite(full["is_mean"]["value"]) and full["is_mean"]["n_gen"] == 30


def test_precision_recall_on_too_few_samples_for_k_are_not_computed_and_say_why(tmp_path):
    """Precision/recall (k=5) at 12 samples a side: each k-NN ball held much of its set, and
    evaluate() gave class 2, its samples shifted from its reference, precision and recall 0.92,
    above class 0's unshifted 0.90 and 0.88 at 40 a side (at 2000 a side: 0.52 shifted, 0.77 not).
    Every scope under 10 k samples a side (classes, a group, the groups at matched n) is n/a with
    the reason, in the records and in cbdm evaluate's summary; the scopes over it are computed."""
    from cbdm.external import summary

    cfg = {**CFG, "pr_neighborhood": 5}
    labels = np.repeat([0, 1, 2], [40, 40, 12])
    shifted = {**arrays(92, dim=32, labels=labels)}
    shifted["features"] = shifted["features"] + 0.5 * (labels >= 1)[:, None]
    write_npz(tmp_path / "gen.npz", **shifted)
    write_npz(tmp_path / "ref.npz", **arrays(92, dim=32, labels=labels, seed=1))
    groups = {"head": [0], "tail": [1, 2]}
    evaluate(generated_npz=tmp_path / "gen.npz", reference_npz=tmp_path / "ref.npz", groups=groups,
             num_classes=3, evaluation=cfg, cell={"variant": "v"}, device="cpu", out_json=tmp_path / "m.json")
    records = {(r["scope"], r["metric"]): r for r in json.loads((tmp_path / "m.json").read_text())["records"]}
    why = ("not computed: precision/recall with k=5 need at least 50 samples on each side (10 k): with fewer, "
           "each sample's k-nearest-neighbour ball holds much of its set and both approach 1 whatever the sets")
    for scope in ("class 0", "class 1", "class 2", "head", "head@matched", "tail@matched"):
        scope, suffix = scope.split("@")[0], "@matched" if "@" in scope else ""
        for metric in ("precision", "recall"):
            assert records[(scope, metric + suffix)]["value"] is None, (scope, metric + suffix)
            assert records[(scope, metric + suffix)]["note"] == why
    assert records[("class 2", "fid")]["value"] is not None  # the other metrics of the scope stay
    for scope in ("all", "tail"):  # 92 and 52 samples a side
        assert 0 < records[(scope, "precision")]["value"] < 1 and records[(scope, "recall")]["value"] > 0
    assert f"-: not computed; head, class 0, class 1, class 2: {why}" in summary(str(tmp_path / "m.json"), groups)


def test_class_kid_has_a_bootstrap_interval_around_it():
    records = by_metric(scope_records("class 1", arrays(60, dim=4), arrays(60, dim=4, seed=3), {}, CFG))
    kid = records["kid_mean"]
    assert kid["ci_low"] < kid["ci_high"]
    assert by_metric(scope_records("all", arrays(60), arrays(60, seed=3), {}, CFG))["kid_mean"]["ci_low"] is None


def test_the_kid_bootstrap_is_the_unbiased_mmd_of_each_resample_without_self_pairs():
    """Against a loop over the resampled points' pairs: a pair of copies of one original point is
    left out of the within-set sums, as the diagonal is without resampling."""
    from cbdm.metrics import kid_bootstrap

    rng = np.random.RandomState(1)
    gen, ref = rng.randn(7, 3), rng.randn(5, 3) + 0.5
    draws = np.random.RandomState(4)
    for value in kid_bootstrap(gen, ref, resamples=3, seed=4):
        i_gen, i_ref = draws.randint(7, size=7), draws.randint(5, size=5)

        def k(x, y):
            return (x @ y / 3 + 1) ** 3

        def within(points, index):
            pairs = [(a, b) for a in range(len(index)) for b in range(len(index)) if index[a] != index[b]]
            return sum(k(points[index[a]], points[index[b]]) for a, b in pairs) / len(pairs)

        cross = np.mean([k(gen[a], ref[b]) for a in i_gen for b in i_ref])
        assert value == pytest.approx(within(gen, i_gen) + within(ref, i_ref) - 2 * cross, rel=1e-10)


def test_the_kid_interval_covers_the_value_it_estimates():
    """Sets of one distribution: the interval holds 0 and the point estimate (resampling with the
    self-pairs counted put all of [0.08, 0.43] above both); shifted sets: it holds the KID of
    large samples (0.29)."""
    for seed in range(5):
        rng = np.random.RandomState(seed)
        for shift, truth in ((0.0, 0.0), (0.3, 0.29)):
            gen, ref = rng.randn(100, 32) + shift, rng.randn(50, 32)
            kid = by_metric(scope_records("class 0", {**arrays(100), "features": gen},
                                          {**arrays(50), "features": ref}, {}, {**CFG, "kid_bootstrap": 100}))
            low, high = kid["kid_mean"]["ci_low"], kid["kid_mean"]["ci_high"]
            assert low <= truth <= high and low <= kid["kid_mean"]["value"] <= high, (seed, shift, low, high)


def test_groups_are_compared_at_matched_n():
    labels = np.repeat([0, 1], [200, 40])
    gen = arrays(240, labels=labels)
    ref = arrays(150, labels=np.repeat([0, 1], [100, 50]), seed=1)
    records = matched_group_records(gen, ref, {"head": [0], "tail": [1]}, CFG)
    fid = {r["scope"]: r for r in records if r["metric"] == "fid@matched"}
    assert fid["head"]["n_gen"] == fid["tail"]["n_gen"] == 20  # half the smallest group
    assert fid["head"]["n_ref"] == fid["tail"]["n_ref"] == 25
    assert fid["head"]["sd"] > 0 and fid["head"]["ci_low"] <= fid["head"]["value"] <= fid["head"]["ci_high"]
    assert "4 random subsets of 20 generated and 25 reference images" in fid["head"]["note"]
    assert fid["tail"]["sd"] > 0  # the smallest group varies too


def test_accuracy_and_misclassification_into_groups():
    gen = arrays(10, labels=[2] * 10, predicted=[2, 2, 2, 2, 0, 0, 0, 1, 2, 2])
    records = by_metric(scope_records("class 2", gen, arrays(20), {"head": [0, 1], "tail": [2]}, CFG))
    assert records["accuracy"]["value"] == pytest.approx(0.6)
    assert records["misclassified_into:head"]["value"] == pytest.approx(0.4)
    assert records["misclassified_into:tail"]["value"] == 0.0


def test_evaluate_writes_every_scope_with_its_n(tmp_path):
    labels = np.repeat(np.arange(3), [60, 30, 8])
    write_npz(tmp_path / "gen.npz", **arrays(98, labels=labels))
    write_npz(tmp_path / "ref.npz", **arrays(90, labels=np.repeat(np.arange(3), 30), seed=2))
    evaluate(generated_npz=tmp_path / "gen.npz", reference_npz=tmp_path / "ref.npz",
             groups={"head": [0], "tail": [1, 2]}, num_classes=3, evaluation=CFG,
             cell={"variant": "v"}, device="cpu", out_json=tmp_path / "m.json")
    data = json.loads((tmp_path / "m.json").read_text())
    scopes = {r["scope"] for r in data["records"]}
    assert scopes == {"all", "head", "tail", "class 0", "class 1", "class 2"}
    assert {r["metric"] for r in data["records"] if r["scope"] == "tail"} >= {"fid@matched", "recall@matched"}
    fid = {r["scope"]: r for r in data["records"] if r["metric"] == "fid"}
    assert fid["tail"]["n_gen"] == 38 and fid["tail"]["n_ref"] == 60
    assert fid["class 2"]["value"] is None  # 8 samples < min_samples
    assert all(r["value"] is None or np.isfinite(r["value"]) for r in data["records"])
    assert np.array(data["confusion"]).sum() == 98


def test_a_sample_file_of_the_wrong_shape_names_the_file_and_the_fix(tmp_path):
    from cbdm.features import extract_features
    from cbdm.io import InputError

    write_npz(tmp_path / "samples.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, np.int64))
    with pytest.raises(InputError, match=r"samples.npz: array 'images' has shape \(4, 8, 8\).*re-run its stage"):
        extract_features(features_cfg={"extractor": "classifier"}, classifier_path="unused.pt",
                         images_npz=str(tmp_path / "samples.npz"), prefix="", device="cpu",
                         out_npz=str(tmp_path / "features.npz"))
    assert not (tmp_path / "features.npz").exists()


def test_kid_sd_over_subsets_that_are_all_both_whole_sets_is_not_computed():
    """n_gen = n_ref <= kid_subset_size: every subset is the whole of both sets, so the sd is 0 by
    construction (3e-16 in the records before), not a spread."""
    same = by_metric(scope_records("class 0", arrays(40), arrays(40, seed=1), {}, CFG))  # subset size 50
    assert same["kid_mean"]["value"] is not None and same["kid_std"]["value"] is None
    assert same["kid_std"]["note"] == "not computed: every KID subset is both whole sets (n_gen = n_ref = 40)"
    assert by_metric(scope_records("class 0", arrays(60), arrays(40, seed=1), {}, CFG))["kid_std"]["value"] > 0


def test_an_imported_set_whose_labels_or_images_look_wrong_is_scored_with_a_warning(tmp_path):
    """Labels shifted by one class (or images the classifier cannot read, at chance) are scored
    without error: an imported set's records say so; a built-in set's, labelled by the suite's
    sampler, and an imported set at a realistic accuracy do not."""
    truth = np.repeat(np.arange(4), 30)
    rng = np.random.RandomState(0)
    realistic = np.where(rng.rand(120) < 0.9, truth, rng.randint(0, 4, 120))
    cases = {"shifted": ((truth + 1) % 4, truth, "imported", "4 of 4 classes are mostly classified as another class "
                         "\\(a permutation of the labels\\): 0 as 3, 1 as 0, 2 as 1, 3 as 2; check that the labels"),
             "chance": (truth, rng.randint(0, 4, 120), "imported", "accuracy on them is 0.\\d+, near or below chance "
                        "\\(0.25\\)"),
             "realistic": (truth, realistic, "imported", None),
             "built-in": ((truth + 1) % 4, truth, "", None)}
    write_npz(tmp_path / "ref.npz", **arrays(120, labels=truth, seed=2))
    for name, (labels, predicted, note, warning) in cases.items():
        note = f"imported from {name}.npz (guided_npz)" if note else ""
        write_npz(tmp_path / "gen.npz", **arrays(120, labels=labels, predicted=predicted), note=np.asarray(note))
        evaluate(generated_npz=tmp_path / "gen.npz", reference_npz=tmp_path / "ref.npz", groups={"head": [0, 1]},
                 num_classes=4, evaluation=CFG, cell={}, device="cpu", out_json=tmp_path / f"{name}.json")
        fid = next(r for r in json.loads((tmp_path / f"{name}.json").read_text())["records"]
                   if r["scope"] == "all" and r["metric"] == "fid")
        if warning is None:
            assert "WARNING" not in fid["note"], name
        else:
            assert re.search(f"imported from {name}.npz \\(guided_npz\\); WARNING: .*{warning}", fid["note"]), name


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_features_that_are_not_finite_are_refused_naming_the_file(tmp_path, bad):
    """A features file holding NaN or inf (a diverged classifier's features) stopped the metrics
    with torch's 'linalg.eigh: The algorithm failed to converge', naming no file."""
    from cbdm.io import InputError

    gen = arrays(40, labels=np.repeat([0, 1], 20))
    gen["features"][[3, 7], 1] = bad
    write_npz(tmp_path / "gen.npz", **gen)
    write_npz(tmp_path / "ref.npz", **arrays(40, labels=np.repeat([0, 1], 20), seed=2))
    with pytest.raises(InputError, match=r"gen.npz: 2 of 40 feature rows are not finite \(NaN or inf\).*classifier"):
        evaluate(generated_npz=tmp_path / "gen.npz", reference_npz=tmp_path / "ref.npz",
                 groups={"head": [0], "tail": [1]}, num_classes=2, evaluation=CFG,
                 cell={"variant": "v"}, device="cpu", out_json=tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_the_cbdm_evaluate_summary_says_what_a_dash_is_and_where_its_reason_is(tmp_path):
    """A class too small for the metrics printed '-' in cbdm evaluate's summary with no word on why."""
    from cbdm.external import summary
    from cbdm.io import write_json
    from cbdm.records import record

    why = "not computed: n_gen=3, n_ref=30, fewer than evaluation.min_samples=10"
    records = [record(s, m, None if s == "class 1" else 0.5, 3 if s == "class 1" else 30, 30, why if s == "class 1"
                      else "") for s in ("all", "head", "class 0", "class 1")
               for m in ("fid", "kid_mean", "precision", "recall")]
    records += [record(s, "accuracy", 1.0, 30, 0) for s in ("all", "head", "class 0", "class 1")]
    write_json(tmp_path / "m.json", {"records": records})
    text = summary(str(tmp_path / "m.json"), {"head": [0, 1]})
    assert re.search(r"class 1\s+-\s+-", text)
    assert f"-: not computed; class 1: {why}" in text
    assert "-: not computed" not in summary_without(tmp_path, records)


def summary_without(tmp_path, records):
    from cbdm.external import summary
    from cbdm.io import write_json

    write_json(tmp_path / "full.json", {"records": [{**r, "value": 0.5} for r in records]})
    return summary(str(tmp_path / "full.json"), {"head": [0, 1]})
