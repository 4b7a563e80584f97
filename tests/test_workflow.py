"""The whole DAG through Snakemake's API on a tiny suite, with an extension-built variant."""
import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

from helpers import planned_jobs, planned_wildcards, run_workflow, write_tiny_config

VARIANTS = ["ddpm", "cbdm", "overlap", "cbdm_overlap", "ddpm_resampled"]



def test_dry_runs_plan_the_default_and_every_paper_config(repo):
    # In the repository, as a user runs them: their relative paths (registry, data roots) resolve there.
    for configfile in [repo / "config/config.yaml", *sorted((repo / "config/paper").glob("*.yaml"))]:
        run_workflow(repo, repo, configfile, executor="dryrun")


def test_the_longest_trainings_are_scheduled_first(repo):
    """Training priority follows steps x loss terms, so on the default the three-term variant
    starts first and plain DDPM last (a long training left alone at the end idles a core)."""
    jobs = planned_wildcards(repo, repo / "config/config.yaml", "train", with_priority=True)
    priority = {job["variant"]: job["priority"] for job in jobs}
    assert len(jobs) == 12 and priority == {"cbdm_overlap": 4500, "cbdm": 3000, "overlap": 3000, "ddpm": 1500}


@pytest.mark.parametrize("name", ["cifar10-lt", "cifar100-lt"])
def test_paper_configs_plan_every_method_under_the_fair_and_the_published_protocol(repo, name):
    configfile = repo / f"config/paper/{name}.yaml"
    config = yaml.safe_load(configfile.read_text())
    field = ["ddpm", "cbdm", "overlap", "cbdm_overlap", "t2h", "coral", "ccua", "cm"]
    assert list(config["variants"]) == field
    metrics = planned_wildcards(repo, configfile, "metrics")
    for protocol in ("paper", "ours", "published"):
        assert {m["variant"] for m in metrics if m["protocol"] == protocol} == set(field), protocol
    samples = planned_wildcards(repo, configfile, "sample")
    published = config["evaluation"]["protocols"]["published"]["sampling"]
    # A method with its own published sampler gets its own sample set, at its published guidance.
    for variant, own in published.items():
        sets = {(s["labelset"], float(s["guidance"])) for s in samples if s["variant"] == variant}
        assert ("uniform_random-50000-published", float(own["guidance"])) in sets
        fair = {float(g) for g in config["variants"]["ddpm"]["sampling"]["guidance"]}  # every variant's grid
        assert {g for ls, g in sets if ls == "uniform_random-50000"} == fair


def test_a_config_error_stops_the_workflow_with_the_fix(tmp_path, repo, tiny_config):
    config = yaml.safe_load(tiny_config.read_text())
    config["variants"]["cbdm"]["losses"][1]["name"] = "cbdn"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(Exception, match="unknown loss 'cbdn'; registered losses"):
        run_workflow(repo, tmp_path, bad, executor="dryrun")


def test_every_factor_of_the_config_expands_the_dag(tmp_path, repo):
    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    del config["variants"]["ddpm_resampled"]
    config["datasets"]["digits"]["longtail"]["imbalance_factor"] = [5, 10]
    config["seeds"] = [0, 1]
    config["sampling"]["seeds"] = [0, 1]
    config["variants"]["ddpm"]["sampling"] = {"guidance": [1.0, 2.0]}
    config["evaluation"]["protocols"] = {"ours": {"labels": "exact", "num_samples": 120},
                                        "paper": {"labels": "uniform_random", "num_samples": 100,
                                                  "reference": "balanced_train"},
                                        "same_samples": {"labels": "exact", "num_samples": 120,
                                                         "reference": "longtail_train"}}
    path = tmp_path / "factors.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = planned_jobs(repo, tmp_path, path)
    cells = 2 * 2 * (2 + 3) * 2  # IF x training seeds x guidance scales over variants x sampling seeds
    assert jobs["train"] == 2 * 4 * 2
    # two label sets ('same_samples' reuses the 'ours' samples), plus one augmentation fill per IF, variant
    # and training seed (the tiny suite's 2 classifier seeds use both)
    assert jobs["sample"] == cells * 2 + 2 * 4 * 2
    assert jobs["augment"] == 2 * (2 + 4)  # real only, real oversampled + every variant, per IF
    assert jobs["metrics"] == cells * 3
    assert jobs["diagnostics"] == cells
    assert jobs["features_reference"] == 2 * 3
    assert jobs["report"] == 2


def planned_dag_jobs(repo, workdir, configfile):
    """Every job of a dry run of `all` as Snakemake plans it (rule, wildcards, params, resources, ...)."""
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=2),
                                config_settings=ConfigSettings(configfiles=[configfile]),
                                snakefile=repo / "Snakefile", workdir=workdir)
        workflow.dag(DAGSettings(targets={"all"})).execute_workflow(executor="dryrun")
        return list(workflow._workflow.dag.jobs)  # the planned jobs; no public API lists them


def script_function(script: Path):
    """The package function a workflow script calls with **snakemake.params."""
    import importlib
    import re

    text = script.read_text()
    called = re.search(r"(\w+)\(\*\*snakemake\.params", text)
    assert called, f"{script.name} does not call its function with **snakemake.params"
    module = re.search(rf"from (\S+) import .*\b{called.group(1)}\b", text).group(1)
    return getattr(importlib.import_module(module), called.group(1))


def test_rule_params_are_the_arguments_of_the_function_their_script_calls(tmp_path, repo, tiny_config):
    import inspect

    checked = set()
    for job in planned_dag_jobs(repo, tmp_path, tiny_config):
        if not job.rule.script:
            continue
        script = (Path(job.rule.basedir.get_path_or_uri(secret_free=True)) / job.rule.script).resolve()
        # build_report takes its inputs by other names (cbdm/report.py); an extension's own script calls no stage
        if script.name == "report.py" or script.parent != repo / "workflow/scripts":
            continue
        params = dict(job.params.items())
        inspect.signature(script_function(script)).bind_partial(**params)  # raises on a name it does not take
        checked.add(job.rule.name)
    assert {"train", "train_ddpm_resampled", "sample", "metrics", "diagnostics", "augment", "features_samples",
            "reference_stats", "longtail", "leaderboard", "provenance"} <= checked


def test_jobs_get_the_config_numbers_and_the_extension_reuses_the_train_rule(tmp_path, repo, tiny_config):
    from cbdm.config import load_config
    from cbdm.external import suite_paths

    jobs = {}
    for job in planned_dag_jobs(repo, tmp_path, tiny_config):
        jobs.setdefault(job.rule.name, []).append(job)
    assert [j.params.imbalance_factor for j in jobs["longtail"]] == [5.0]
    assert {j.params.guidance for j in jobs["sample"]} == {1.0}
    assert all(type(j.params.cell["guidance"]) is float for j in jobs["metrics"])
    built_in, extension = jobs["train"][0], jobs["train_ddpm_resampled"][0]
    assert str(extension.input.train).endswith("train-resampled.npz")
    assert str(extension.log[0]) == "results/tiny/logs/train/digits/IF5/ddpm_resampled/seed0.log"
    assert str(extension.benchmark).endswith("benchmarks/train/digits/IF5/ddpm_resampled/seed0.tsv")
    assert extension.params.checkpoint_path == "results/tiny/models/digits/IF5/ddpm_resampled/seed0/checkpoint.pt"
    assert extension.params.settings["losses"] == [{"name": "eps_mse", "weight": 1.0, "options": {}}]
    assert extension.resources["mem_mb"] == built_in.resources["mem_mb"]  # the train stage's resources
    assert jobs["resample_balanced"][0].benchmark is not None
    # `cbdm evaluate` reads the files these rules write, at the same paths
    config = load_config(tiny_config)
    outputs = {str(f) for name in ("longtail", "prepare_source", "train_classifier", "features_reference",
                                   "reference_stats") for j in jobs[name] for f in j.output}
    assert set(suite_paths(config, "digits", "5", "heldout").values()) <= outputs


def test_a_sampling_job_expects_the_training_digest_its_training_job_writes(tmp_path, repo, tiny_config):
    """The sample rule's identity carries the digest cbdm.train.train computes from the train
    rule's own params; the train rule's identity carries none (the job computes it)."""
    from cbdm.train import training_digest

    jobs = planned_dag_jobs(repo, tmp_path, tiny_config)
    trained = {(j.wildcards["variant"], j.wildcards["seed"]): training_digest(j.params.settings, j.params.network,
                                                                             j.params.diffusion)
               for j in jobs if j.rule.name == "train"}
    samples = [j for j in jobs if j.rule.name == "sample" and (j.wildcards["variant"], j.wildcards["seed"]) in trained]
    assert trained and samples and all("training_digest" not in j.params.identity for j in jobs
                                       if j.rule.name == "train")
    for job in samples:
        assert job.params.identity["training_digest"] == trained[(job.wildcards["variant"], job.wildcards["seed"])]
    # the data digest: given to every training job (the extension's too), expected by every sample job
    data = {(j.wildcards["variant"], j.wildcards["seed"]): j.params.identity["data_digest"] for j in jobs
            if j.rule.name in ("train", "train_ddpm_resampled")}
    assert ("ddpm_resampled", "0") in data and len(set(data.values())) == 1
    assert all(j.params.identity["data_digest"] == data[(j.wildcards["variant"], j.wildcards["seed"])]
               for j in jobs if j.rule.name == "sample")


def test_adding_a_guidance_scale_or_a_sampling_seed_leaves_the_planned_sample_jobs_params_alone(tmp_path, repo,
                                                                                               tiny_config):
    """Snakemake reruns a job whose params change: a finished sample set must not be redrawn
    because the grid around it grew."""
    config = yaml.safe_load(open(tiny_config))

    def sample_params(sampling):
        path = tmp_path / f"c{len(list(tmp_path.glob('c*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump({**config, "sampling": {**config.get("sampling", {}), **sampling}}))
        jobs = planned_dag_jobs(repo, tmp_path, path)
        return {(j.wildcards["variant"], j.wildcards["guidance"], j.wildcards["sample_seed"], j.wildcards["labelset"]):
                dict(j.params) for j in jobs if j.rule.name == "sample"}

    before = sample_params({"guidance": [1.0], "seeds": [0]})
    after = sample_params({"guidance": [1.0, 2.0], "seeds": [0, 1]})
    assert before and set(before) < set(after)
    for cell, params in before.items():
        assert after[cell] == params, cell


def test_more_feature_threads_leave_the_feature_jobs_params_alone(tmp_path, repo, tiny_config):
    config = yaml.safe_load(open(tiny_config))
    params = []
    for threads in (1, 2):
        path = tmp_path / f"t{threads}.yaml"
        path.write_text(yaml.safe_dump({**config, "features": {**config["features"], "threads": threads}}))
        params.append({(j.rule.name, tuple(j.wildcards.items())): dict(j.params)
                       for j in planned_dag_jobs(repo, tmp_path, path) if j.rule.name.startswith("features_")})
    assert params[0] and params[0] == params[1]


def _planned_params(repo, tmp_path, config: dict, rules: tuple[str, ...]) -> dict:
    path = tmp_path / f"p{len(list(tmp_path.glob('p*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return {(j.rule.name, tuple(j.wildcards.items())): dict(j.params)
            for j in planned_dag_jobs(repo, tmp_path, path) if j.rule.name in rules}


def test_settings_a_job_does_not_read_leave_its_params_alone(tmp_path, repo, tiny_config):
    """Snakemake reruns a job whose params change, and everything downstream of it: new class
    groups used to retrain every model (prepare_source took the whole dataset entry), a second
    imbalance factor to rebuild the first, and Inception's keys to retrain the classifier that
    the classifier extractor uses."""
    config = yaml.safe_load(open(tiny_config))
    upstream = ("prepare_source", "longtail", "train", "sample", "train_classifier", "features_samples",
                "features_reference")
    before = _planned_params(repo, tmp_path, config, upstream)
    dataset = config["datasets"]["digits"]
    regrouped = {**config, "datasets": {"digits": {**dataset, "groups": {"head": [0, 1, 2],
                                                                        "tail": [3, 4, 5, 6, 7, 8, 9]}}}}
    two_factors = {**config, "datasets": {"digits": {**dataset, "longtail": {**dataset["longtail"],
                                                                              "imbalance_factor": [5, 10]}}}}
    inception_keys = {**config, "features": {**config["features"], "inception_preprocessing": "pytorch_fid"}}
    assert before
    assert _planned_params(repo, tmp_path, regrouped, upstream) == before
    assert _planned_params(repo, tmp_path, inception_keys, upstream + ("diagnostics",)) == \
        _planned_params(repo, tmp_path, config, upstream + ("diagnostics",))
    grown = _planned_params(repo, tmp_path, two_factors, upstream)
    assert {job: grown[job] for job in before} == before


def test_report_side_evaluation_settings_leave_the_metrics_jobs_params_alone(tmp_path, repo, tiny_config):
    """The metrics read a few `evaluation` keys (cbdm.evaluate.METRIC_SETTINGS); a new baseline,
    another guidance choice or a second protocol recomputed every metrics file."""
    config = yaml.safe_load(open(tiny_config))
    evaluation = config["evaluation"]
    before = _planned_params(repo, tmp_path, config, ("metrics",))
    after = _planned_params(repo, tmp_path, {**config, "evaluation": {
        **evaluation, "baseline": "cbdm", "guidance_choice": "best",
        "protocols": {**evaluation["protocols"], "more": {"labels": "exact", "num_samples": 240,
                                                          "reference": "heldout"}}}}, ("metrics",))
    assert before and {job: after[job] for job in before} == before


def test_every_job_reading_a_sample_set_expects_the_origin_its_sample_job_writes(tmp_path, repo, tiny_config):
    """The sample (or import) job writes sample_origin into the set; the features, diagnostics,
    metrics, augmentation and report jobs of that set check the same origin, and no two sets share one."""
    jobs = planned_dag_jobs(repo, tmp_path, tiny_config)
    written = {str(j.output.samples): j.params.origin for j in jobs if j.rule.name in ("sample", "import_samples")}
    assert len(written) == len({repr(origin) for origin in written.values()}) >= 10
    by_features = {str(j.output.features): written[str(j.input.images)] for j in jobs
                   if j.rule.name == "features_samples"}
    checked = [(j.params.origin, written[str(j.input.images)]) for j in jobs if j.rule.name == "features_samples"]
    checked += [(j.params.origin, by_features[str(j.input.generated)]) for j in jobs if j.rule.name == "metrics"]
    checked += [(j.params.origin, written[str(j.input.samples)]) for j in jobs if j.rule.name == "diagnostics"]
    checked += [(origin, written[str(path)]) for j in jobs if j.rule.name == "augment"
                for origin, path in zip(j.params.origin, j.input.samples, strict=True)]
    shown = [(j.params.sample_origins[variant], written[str(path)]) for j in jobs if j.rule.name == "report"
             for variant, path in zip(j.params.variants, j.input.samples, strict=True)]
    assert len(shown) == len(VARIANTS)
    checked += shown
    assert {j.rule.name for j in jobs} >= {"features_samples", "diagnostics", "metrics", "augment", "report"}
    assert len(checked) >= 20 and all(expected == made for expected, made in checked)


def test_a_finished_suites_reader_computes_the_origins_its_jobs_used_from_the_recorded_config(tmp_path, repo):
    """cbdm.phenomenon reads a finished suite with only its config.yaml (the resolved config, as the
    provenance job dumps it) and the paths' labels: from them, cbdm.origins gives every sample set's
    origin and every model's identity exactly as the rules gave them to the jobs. The grid has two
    training and sampling seeds, two guidance scales, an external variant and a protocol with its
    own sampling (an 'exact-120-<protocol>' set)."""
    from cbdm.origins import model_identity, sample_origin

    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    protocols = {**config["evaluation"]["protocols"],
                 "own": {"labels": "exact", "num_samples": 120, "reference": "heldout",
                         "sampling": {"cbdm": {"sampler": "ancestral", "steps": 100}}}}
    configfile = write_tiny_config(repo, tmp_path / "grid.yaml", seeds=[0, 1],
                                   sampling={**config["sampling"], "guidance": [1.0, 2.5], "seeds": [0, 3]},
                                   evaluation={**config["evaluation"], "protocols": protocols})
    jobs = planned_dag_jobs(repo, tmp_path, configfile)
    [provenance] = [j for j in jobs if j.rule.name == "provenance"]
    recorded = yaml.safe_load(yaml.safe_dump(provenance.params.config, sort_keys=False))  # cbdm.provenance
    origins = [(j.params.origin, dict(j.wildcards)) for j in jobs
               if j.rule.name in ("sample", "features_samples", "diagnostics")]
    identities = [(j.params.identity, dict(j.wildcards)) for j in jobs if j.rule.name == "sample"]
    assert {cell["labelset"] for _, cell in origins} == {"exact-120", "exact-120-own", "fill-100"}
    assert {cell["variant"] for _, cell in identities} >= {"ddpm", "ddpm_resampled"} and len(origins) > 40
    for origin, cell in origins:
        assert sample_origin(recorded, **cell) == origin, cell
    for identity, cell in identities:
        fields = {key: cell[key] for key in ("dataset", "imb", "variant", "seed")}
        assert model_identity(recorded, **fields) == identity, cell


def _planned_with_longtail(repo, tmp_path, tiny_config, longtail: dict, rule: str, variant: str = "ddpm"):
    """The first job of `rule` (for `variant` where it has one) planned for the tiny config with
    these long-tail settings merged into its dataset."""
    config = yaml.safe_load(open(tiny_config))
    digits = config["datasets"]["digits"]
    path = tmp_path / f"lt{len(list(tmp_path.glob('lt*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**config, "datasets": {"digits": {**digits, "longtail": {
        **digits["longtail"], **longtail}}}}))
    return next(j for j in planned_dag_jobs(repo, tmp_path, path)
                if j.rule.name == rule and j.wildcards.get("variant", variant) == variant)


@pytest.mark.parametrize("other", [{"n_max": 50}, {"seed": 1}], ids=["n_max", "longtail-seed"])
def test_a_model_file_trained_on_other_data_is_refused_by_the_sampling_job(tmp_path, repo, tiny_config, other):
    """A model file trained for a dataset that differs only in longtail.n_max or the long tail's
    seed (copied from another suite, or kept under --rerun-triggers mtime) was sampled as this
    suite's without a word: its identity named no training data. The train job's file is sampled
    by its own config's sample job, and refused by the other config's, in one line with the fix."""
    from cbdm.dataset import build_longtail, prepare_source
    from cbdm.io import InputError
    from cbdm.sample import sample
    from cbdm.train import train

    own = _first_jobs(repo, tmp_path, tiny_config, {})  # the training set as this config's jobs make it
    source, train_npz, manifest = tmp_path / "source.npz", tmp_path / "train.npz", tmp_path / "manifest.json"
    prepare_source(**dict(own[("prepare_source", None)].params), out_npz=source, out_json=tmp_path / "source.json")
    build_longtail(**dict(own[("longtail", None)].params), source_npz=source, source_json=tmp_path / "source.json",
                   out_npz=train_npz, out_manifest=manifest)
    model = tmp_path / "model.pt"
    train(**{**dict(own[("train", None)].params), "checkpoint_path": str(tmp_path / "checkpoint.pt")},
          train_npz=str(train_npz), init_model=None, out_model=str(model), out_log=str(tmp_path / "loss.csv"))
    counts = json.loads(manifest.read_text())["class_counts"]
    for longtail, out in (({}, "own.npz"), (other, "other.npz")):
        job = _planned_with_longtail(repo, tmp_path, tiny_config, longtail, "sample")
        draw = functools.partial(sample, **dict(job.params), model_path=str(model), class_counts=counts,
                                 out_npz=str(tmp_path / out))
        if not longtail:
            draw()
            continue
        with pytest.raises(InputError, match=r"model\.pt was trained with the training data of data digest "
                                             r"[0-9a-f]{16}, but this config's training data are of data "
                                             r"digest [0-9a-f]{16}: it was copied from another suite.*--forcerun"):
            draw()
        assert not (tmp_path / out).exists()


def _first_jobs(repo, tmp_path, tiny_config, dataset: dict) -> dict:
    """(rule, reference or row) -> the first planned job of the tiny config with `dataset` merged
    into its dataset entry; of the rules with a {variant}, ddpm's."""
    config = yaml.safe_load(open(tiny_config))
    path = tmp_path / f"ref{len(list(tmp_path.glob('ref*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**config, "datasets": {"digits": {**config["datasets"]["digits"], **dataset}}}))
    jobs = {}
    for j in planned_dag_jobs(repo, tmp_path, path):
        if j.wildcards.get("variant", "ddpm") == "ddpm":
            jobs.setdefault((j.rule.name, j.wildcards.get("reference") or j.wildcards.get("row")), j)
    return jobs


def _featurise(job, folder, images_npz) -> str:
    """Run a planned features job on `images_npz` with a small untrained classifier, recording no
    source: the job's expectation of it (source_origin) is left out, its check tested apart."""
    from cbdm.classifier import CLASSIFIER_FORMAT, FeatureClassifier
    from cbdm.features import extract_features

    classifier = folder / "classifier.pt"
    if not classifier.exists():
        model = FeatureClassifier(1, 10, 8)
        torch.save({"format": CLASSIFIER_FORMAT, "hparams": model.hparams, "state_dict": model.state_dict()},
                   classifier)
    out = folder / f"{job.rule.name}-{len(list(folder.glob('*.f.npz')))}.f.npz"
    params = {key: value for key, value in job.params.items() if key != "source_origin"}
    extract_features(**params, classifier_path=str(classifier), images_npz=str(images_npz),
                     source_json=str(folder / "source.json"), out_npz=str(out))
    return str(out)


@pytest.mark.parametrize("made_by", ["other heldout size", "balanced_train"])
def test_reference_features_of_another_reference_set_are_refused_by_their_readers(tmp_path, repo, tiny_config,
                                                                                  made_by):
    """Reference features recorded their extractor but not which set they are: the held-out
    features of a suite with 20 held-out images per class (copied over this one's 30), or the
    training pool's features copied over the held-out set's, were scored against by the metrics
    job, summarised by the reference statistics job and counted by the held-out rates job without
    a word. Each refuses them in one line naming the file, what differs and --forcerun."""
    from cbdm.evaluate import evaluate
    from cbdm.fingerprint import origin_array
    from cbdm.io import InputError, read_npz, write_npz
    from cbdm.phenomenon import write_heldout_rates
    from cbdm.refstats import evaluate_against_stats, write_reference_stats

    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)  # noqa: E731
    labels = lambda n: np.arange(n) % 10  # noqa: E731
    (tmp_path / "source.json").write_text(json.dumps({"num_classes": 10, "image_shape": [1, 8, 8]}))
    own = _first_jobs(repo, tmp_path, tiny_config, {})
    other, reference = ((_first_jobs(repo, tmp_path, tiny_config, {"heldout_per_class": 20}), "heldout")
                        if made_by == "other heldout size" else (own, "balanced_train"))
    maker = other[("features_reference", reference)]

    def source(job, name):  # the prepared source a reference job reads, recording the job's data settings
        write_npz(tmp_path / name, pool_images=images(400), pool_labels=labels(400), heldout_images=images(300),
                  heldout_labels=labels(300), **origin_array(job.params.origin))
        return tmp_path / name

    samples = own[("features_samples", None)]
    write_npz(tmp_path / "samples.npz", images=images(120), labels=labels(120), **origin_array(samples.params.origin))
    generated = _featurise(samples, tmp_path, tmp_path / "samples.npz")
    right = _featurise(own[("features_reference", "heldout")], tmp_path,
                       source(own[("features_reference", "heldout")], "source.npz"))
    wrong = _featurise(maker, tmp_path, source(maker, "other-source.npz"))

    metrics, stats, rates = own[("metrics", None)], own[("reference_stats", "heldout")], own[("heldout_rates", None)]
    write_reference_stats(**dict(other[("reference_stats", reference)].params), reference_npz=wrong,
                          out_npz=str(tmp_path / "wrong.stats.npz"))
    write_reference_stats(**dict(stats.params), reference_npz=right, out_npz=str(tmp_path / "right.stats.npz"))
    readers = {
        "metrics": lambda reference: evaluate(**dict(metrics.params), generated_npz=generated,
                                              reference_npz=reference, out_json=str(tmp_path / "m.json")),
        "stats": lambda reference: write_reference_stats(**dict(stats.params), reference_npz=reference,
                                                         out_npz=str(tmp_path / "s.npz")),
        "rates": lambda reference: write_heldout_rates(**dict(rates.params), reference_npz=reference,
                                                       out_json=str(tmp_path / "h.json")),
        # cbdm evaluate --ref-stats, on the statistics the reference_stats job wrote of each file
        "ref-stats": lambda features: evaluate_against_stats(
            read_npz(generated), features.replace(".f.npz", ".stats.npz"), metrics.params.groups, 10,
            metrics.params.evaluation, extractor=metrics.params.cell["features"], reference="heldout",
            reference_origin=metrics.params.reference_origin),
    }
    (tmp_path / "wrong.f.npz").write_bytes(Path(wrong).read_bytes())
    (tmp_path / "right.f.npz").write_bytes(Path(right).read_bytes())
    differs = "data_digest" if made_by == "other heldout size" else "reference"
    for name, read in readers.items():
        read(str(tmp_path / "right.f.npz"))
        # a job's input is the workflow's to remake; --ref-stats is a file the user gave
        fix = "give --ref-stats the statistics of this suite's heldout" if name == "ref-stats" else "--forcerun"
        with pytest.raises(InputError, match=rf"wrong\.(f|stats)\.npz was made for .*{differs} .*, but this job "
                                             rf"needs .*{differs} .*{fix}"):
            read(str(tmp_path / "wrong.f.npz"))


@pytest.mark.parametrize("made_with", ["longtail n_max 50", "longtail seed 1", "heldout_per_class 20", "no origin"])
def test_prepared_data_of_other_settings_is_refused_by_every_job_that_reads_it(tmp_path, repo, tiny_config,
                                                                              made_with):
    """source.npz, source.json and train.npz recorded nothing of the settings they were made with: a training set
    drawn with another n_max or long-tail seed, or a source split with another held-out size (kept
    under --rerun-triggers mtime, or copied from another suite), was trained on, featurised,
    diagnosed and learnt from as this config's, and the model file claimed this config's data
    digest. Every job reading them refuses such a file in one line naming it, what differs and
    --forcerun, before writing anything; so is a file of an older cbdm, which records nothing."""
    from cbdm.augment import run_augmentation
    from cbdm.classifier import train_classifier
    from cbdm.dataset import build_longtail, prepare_source
    from cbdm.diagnose import diagnose
    from cbdm.features import extract_features
    from cbdm.fingerprint import ORIGIN, origin_array
    from cbdm.io import InputError, read_json, read_npz, write_json, write_npz
    from cbdm.train import train

    longtail = yaml.safe_load(open(tiny_config))["datasets"]["digits"]["longtail"]
    change = {"longtail n_max 50": {"longtail": {**longtail, "n_max": 50}},
              "longtail seed 1": {"longtail": {**longtail, "seed": 1}},
              "heldout_per_class 20": {"heldout_per_class": 20}, "no origin": {}}[made_with]
    own = _first_jobs(repo, tmp_path, tiny_config, {})
    maker = _first_jobs(repo, tmp_path, tiny_config, change) if change else own
    source, source_json, train_npz = tmp_path / "source.npz", str(tmp_path / "source.json"), tmp_path / "train.npz"
    prepare_source(**dict(maker[("prepare_source", None)].params), out_npz=str(source), out_json=source_json)
    build_longtail(**dict(maker[("longtail", None)].params), source_npz=str(source), source_json=source_json,
                   out_npz=str(train_npz), out_manifest=str(tmp_path / "manifest.json"))
    if made_with == "no origin":  # as cbdm wrote them before they recorded one
        for path in (source, train_npz):
            write_npz(path, **{k: v for k, v in read_npz(path).items() if k != ORIGIN})
        write_json(source_json, {k: v for k, v in read_json(source_json).items() if k != ORIGIN})
    wrong = [train_npz] if made_with.startswith("longtail") else [source, Path(source_json), train_npz]

    params = lambda rule, key=None: dict(own[(rule, key)].params)  # noqa: E731
    out = lambda name: str(tmp_path / "out" / name)  # noqa: E731
    samples = tmp_path / "samples.npz"  # a sample set of the diagnosed cell, as its sample job writes it
    write_npz(samples, images=np.zeros((120, 1, 8, 8), np.uint8), labels=np.arange(120) % 10,
              **origin_array(params("diagnostics")["origin"]))
    images_of = {"heldout": source, "balanced_train": source, "longtail_train": train_npz}
    readers = {
        "longtail": ([source, Path(source_json)], lambda: build_longtail(
            **params("longtail"), source_npz=str(source), source_json=source_json, out_npz=out("train.npz"),
            out_manifest=out("manifest.json"))),
        "train": ([train_npz], lambda: train(
            **{**params("train"), "checkpoint_path": out("checkpoint.pt")}, train_npz=str(train_npz),
            out_model=out("model.pt"), out_log=out("loss.csv"))),
        "train_classifier": ([source], lambda: train_classifier(
            **params("train_classifier"), source_npz=str(source), out_model=out("classifier.pt"),
            out_report=out("classifier.json"))),
        **{f"features_reference {r}": ([images_of[r], Path(source_json)], lambda r=r: extract_features(
            **params("features_reference", r), classifier_path=out("unused.pt"), images_npz=str(images_of[r]),
            source_json=source_json, out_npz=out("features.npz"))) for r in images_of},
        "diagnostics": ([source, train_npz], lambda: diagnose(
            **params("diagnostics"), samples_npz=str(samples), train_npz=str(train_npz), source_npz=str(source),
            out_json=out("diagnostics.json"))),
        "augment": ([source, train_npz], lambda: run_augmentation(
            **params("augment", "real_only"), train_npz=str(train_npz), source_npz=str(source), samples_npz=[],
            out_json=out("augment.json"))),
    }
    files = "|".join(re.escape(str(path)) for path in wrong)
    refusal = (rf"({files}) records no origin .*--forcerun" if made_with == "no origin" else
               rf"({files}) was made for .*data_digest [0-9a-f]{{16}}.*, but this job needs .*data_digest "
               rf"[0-9a-f]{{16}}.*: it was copied or moved, or kept from other settings; .*--forcerun")
    refused = []
    for name, (reads, read) in readers.items():
        if set(reads) & set(wrong):
            with pytest.raises(InputError, match=refusal):
                read()
            refused.append(name)
    assert len(refused) == (len(readers) if source in wrong else 4)  # train, its features, diagnostics, augment
    assert not (tmp_path / "out").exists()  # nothing written
    if source not in wrong:  # the source this config's long tail is drawn from is taken
        build_longtail(**params("longtail"), source_npz=str(source), source_json=source_json,
                       out_npz=out("train.npz"), out_manifest=out("manifest.json"))


@pytest.mark.parametrize("made_with", ["heldout_per_class 20", "longtail seed 1", "no origin"])
def test_a_classifier_or_manifest_of_other_data_settings_is_refused_by_its_readers(tmp_path, repo, tiny_config,
                                                                                    made_with):
    """classifier.pt recorded its recipe but not the source it was trained on, and manifest.json
    nothing: a classifier trained on a source split with another held-out size, or the manifest of
    a long tail drawn with another seed (kept under --rerun-triggers mtime, or copied from another
    suite), gave this config's features and class counts without a word. Each features job refuses
    such a classifier, and the sample and import jobs such a manifest, in one line naming the file,
    what differs and --forcerun; so is a file of an older cbdm, which records neither."""
    import shutil

    from cbdm.classifier import train_classifier
    from cbdm.dataset import build_longtail, prepare_source, read_manifest
    from cbdm.features import extract_features
    from cbdm.fingerprint import ORIGIN, origin_array
    from cbdm.io import InputError, read_json, write_json, write_npz
    from cbdm.origins import training_origin

    longtail = yaml.safe_load(open(tiny_config))["datasets"]["digits"]["longtail"]
    change = {"heldout_per_class 20": {"heldout_per_class": 20},
              "longtail seed 1": {"longtail": {**longtail, "seed": 1}}, "no origin": {}}[made_with]
    own = _first_jobs(repo, tmp_path, tiny_config, {})
    params = lambda rule, key=None, jobs=own: dict(jobs[(rule, key)].params)  # noqa: E731

    def made(jobs, folder):  # a prepared source, its long tail and classifier, as the jobs write them
        folder.mkdir()
        prepare_source(**params("prepare_source", jobs=jobs), out_npz=str(folder / "source.npz"),
                       out_json=str(folder / "source.json"))
        build_longtail(**params("longtail", jobs=jobs), source_npz=str(folder / "source.npz"),
                       source_json=str(folder / "source.json"), out_npz=str(folder / "train.npz"),
                       out_manifest=str(folder / "manifest.json"))
        train_classifier(**params("train_classifier", jobs=jobs), source_npz=str(folder / "source.npz"),
                         out_model=str(folder / "classifier.pt"), out_report=str(folder / "classifier.json"))
        return folder

    mine = made(own, tmp_path / "own")
    if change:
        theirs = made(_first_jobs(repo, tmp_path, tiny_config, change), tmp_path / "theirs")
    else:  # as cbdm wrote them before they recorded their data
        theirs = Path(shutil.copytree(mine, tmp_path / "theirs"))
        write_json(theirs / "manifest.json", {k: v for k, v in read_json(theirs / "manifest.json").items()
                                              if k != ORIGIN})
        payload = torch.load(theirs / "classifier.pt", weights_only=True)
        torch.save({k: v for k, v in payload.items() if k != "source"}, theirs / "classifier.pt")
    classifier, manifest = theirs / "classifier.pt", theirs / "manifest.json"
    samples = tmp_path / "samples.npz"  # a sample set of the featurised cell, as its sample job writes it
    write_npz(samples, images=np.zeros((120, 1, 8, 8), np.uint8), labels=np.arange(120) % 10,
              **origin_array(params("features_samples")["origin"]))

    out = tmp_path / "features.npz"
    images_of = {"heldout": mine / "source.npz", "balanced_train": mine / "source.npz",
                 "longtail_train": mine / "train.npz", None: samples}
    featurise = lambda rule, r, path: extract_features(  # noqa: E731
        **params(rule, r), classifier_path=str(path), images_npz=str(images_of[r]),
        source_json=str(mine / "source.json"), out_npz=str(out))
    classifier_readers = {f"{rule} {r}": functools.partial(featurise, rule, r) for rule, r in
                          [("features_reference", r) for r in images_of if r] + [("features_samples", None)]}
    # the sample and import scripts read the manifest so, expecting the training set of the cell they make
    manifest_readers = {rule: functools.partial(read_manifest, origin=training_origin(params(rule)["origin"]))
                        for rule in ("sample", "import_samples") if (rule, None) in own}
    assert "sample" in manifest_readers
    for read in classifier_readers.values():  # this config's own files are taken
        read(mine / "classifier.pt")
    for read in manifest_readers.values():
        assert read(mine / "manifest.json")["class_counts"] == read_json(mine / "manifest.json")["class_counts"]
    out.unlink()

    differs = "data_digest [0-9a-f]{16}.*, but .* data_digest [0-9a-f]{16}.*"
    for name, read in classifier_readers.items():
        if made_with == "longtail seed 1":  # the same source: the same classifier, taken
            read(classifier)
            out.unlink()
            continue
        with pytest.raises(InputError, match=rf"{re.escape(str(classifier))} was trained with "
                                             rf"{'.*data_digest [(]absent[)].*' if not change else differs}: "
                                             rf".*--forcerun"):
            read(classifier)
    refusal = ("records no origin .*--forcerun" if not change else
               f"was made for {differs}: it was copied or moved, or kept from other settings; .*--forcerun")
    for read in manifest_readers.values():
        with pytest.raises(InputError, match=rf"{re.escape(str(manifest))} {refusal}"):
            read(manifest)
    assert not out.exists()  # nothing written
