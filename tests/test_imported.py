"""Imported variants (`samples:`) in the config and the DAG, and `cbdm evaluate` on the tiny suite."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from cbdm.config import ConfigError, variant_settings

from helpers import minimal_config, planned_jobs, planned_wildcards, readme_blocks, write_tiny_config


def config_with(variant: dict, **top):
    return minimal_config(variants={"mine": variant}, **top)


def test_a_samples_variant_resolves_to_guidance_seed_and_path(in_tmp):
    (in_tmp / "a.npz").write_bytes(b"")
    (in_tmp / "b").mkdir()
    settings = variant_settings(config_with({"samples": "a.npz"}, seeds=[3, 4]), "mine")
    assert settings["samples"] == {"1": {3: "a.npz"}} and settings["seeds"] == [3]
    assert settings["losses"] == [] and settings["sampling"]["sampler"] == "imported"
    (in_tmp / "c.npz").write_bytes(b"")
    (in_tmp / "d").mkdir()
    settings = variant_settings(config_with({"samples": {1.5: {0: "a.npz", 1: "b"}, 2: {0: "d", 1: "c.npz"}}}), "mine")
    assert settings["samples"] == {"1.5": {0: "a.npz", 1: "b"}, "2": {0: "d", 1: "c.npz"}}
    assert settings["guidance"] == [1.5, 2.0] and settings["seeds"] == [0, 1]
    assert settings["sampling"]["guidance"] == [1.5, 2.0]  # what the DAG's cells expand over


@pytest.mark.parametrize("variant, message", [
    ({"samples": "missing.npz"}, "variants.mine.samples: 'missing.npz' does not exist"),
    ({"samples": "a.npz", "losses": [{"name": "eps_mse"}]}, "declares `samples` .* and \\['losses'\\]: remove"),
    ({"samples": "a.npz", "external": True}, "and \\['external'\\]: remove"),
    ({"samples": {1.0: {0: "a.npz"}, 2.0: {1: "a.npz"}}}, "give every guidance scale the same seeds"),
    ({"samples": {"high": {0: "a.npz"}}}, "keys are guidance scales, then training seeds"),
])
def test_a_bad_samples_entry_is_a_named_config_error(in_tmp, variant, message):
    (in_tmp / "a.npz").write_bytes(b"")
    with pytest.raises(ConfigError, match=message):
        config_with(variant)


def tiny_with_import(repo, tmp_path, samples) -> "Path":  # noqa: F821
    """The tiny suite with its extension variant and an imported one, `oracle`."""
    path = write_tiny_config(repo, tmp_path / "tiny-import.yaml")
    config = yaml.safe_load(path.read_text())
    config["variants"]["oracle"] = {"samples": str(samples), "description": "the balanced pool's real images"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_oracle(path, per_class=12):
    """Real digits (not the suite's held-out ones) as a guided-diffusion .npz."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.concatenate([np.where(digits.target == c)[0][-per_class:] for c in range(10)])
    images = np.rint(digits.images[keep] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    np.savez(path, arr_0=images, arr_1=digits.target[keep])
    return path


def test_an_imported_variant_is_neither_trained_nor_sampled(tmp_path, repo):
    configfile = tiny_with_import(repo, tmp_path, write_oracle(tmp_path / "oracle.npz"))
    jobs = planned_jobs(repo, tmp_path, configfile)
    assert jobs["import_samples"] == 1
    # the four built-in variants and the extension's: their protocol sample set and their augmentation fill
    assert jobs["train"] == 4 and jobs["sample"] == 5 * 2
    assert jobs["reference_stats"] == 3 and jobs["leaderboard"] == 1


def test_an_imported_variant_is_planned_at_the_guidance_scales_of_its_files(tmp_path, repo):
    oracle = str(write_oracle(tmp_path / "oracle.npz"))
    configfile = tiny_with_import(repo, tmp_path, oracle)
    config = yaml.safe_load(configfile.read_text())
    other = str(write_oracle(tmp_path / "oracle-2.npz"))  # each run its own file
    config["variants"]["oracle"]["samples"] = {1.5: {0: oracle}, 2: {0: other}}
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    imports = planned_wildcards(repo, configfile, "import_samples")
    assert sorted(w["guidance"] for w in imports) == ["1.5", "2"]


@pytest.mark.slow
def test_the_readme_score_your_own_samples_example_runs(tmp_path, repo):
    """The README's worked example, on the tiny suite instead of the default one (slow: snakemake
    and the feature classifier; tests/test_samplesets.py covers the scoring itself)."""
    import subprocess

    block = next(b for b in readme_blocks(repo, "bash") if "cbdm evaluate --config config/config.yaml" in b)
    configfile = write_tiny_config(repo, tmp_path / "tiny.yaml", extension=False)  # no extension rule needed
    script = (block.replace("config/config.yaml", str(configfile)).replace("digits-lt", "tiny")
              .replace("snakemake ", f"snakemake -s {repo / 'Snakefile'} --configfile {configfile} "))
    result = subprocess.run(["bash", "-ec", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "oracle on digits IF 5, protocol ours:" in result.stdout
    summary = result.stdout.split("protocol ours:")[1]
    assert "class 9" in summary and "12 vs 30" in summary and "120 vs 300" in summary
    board = pd.read_csv(tmp_path / "results/tiny/leaderboard.csv")
    assert board["entry"].tolist() == ["oracle"] and board["kind"].tolist() == ["external (cbdm evaluate)"]
    assert 0 < board["fid"].iloc[0] < 1  # real images against other real images of the same classes
    assert len(list((tmp_path / "oracle-png" / "3").glob("*.png"))) > 12

    # the same samples against the travelling statistics of the same reference: the same FID
    stats = "results/tiny/features/digits/IF5/reference-heldout.stats.npz"
    steps = (f"snakemake -s {repo / 'Snakefile'} --configfile {configfile} --cores 1 {stats}\n"
             f"cbdm evaluate --config {configfile} --samples oracle-png --name oracle-stats --ref-stats {stats}")
    result = subprocess.run(["bash", "-ec", steps], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    board = pd.read_csv(tmp_path / "results/tiny/leaderboard.csv").set_index("entry")
    assert board.loc["oracle-stats", "fid"] == pytest.approx(board.loc["oracle", "fid"], rel=1e-8)
    assert board.loc["oracle-stats", "reference"] == f"statistics {stats}"
    assert math.isnan(board.loc["oracle-stats", "recall"])  # needs the reference images
    markdown = (tmp_path / "results/tiny/leaderboard.md").read_text()
    assert "## Card 2:" in markdown  # measured against statistics: its own table


def test_images_replaced_inside_an_imported_folder_change_the_import_jobs_params(tmp_path, repo):
    """Snakemake reads a folder input's own timestamp, which a file replaced or added inside a
    class sub-folder does not change: the files' state is a param, so the import reruns."""
    import os

    from test_workflow import planned_dag_jobs

    folder = tmp_path / "samples"
    for c in range(10):
        (folder / str(c)).mkdir(parents=True)
        (folder / str(c) / "a.png").write_bytes(b"x")
    configfile = tiny_with_import(repo, tmp_path, folder)

    def import_params():
        return [dict(j.params) for j in planned_dag_jobs(repo, tmp_path, configfile) if j.rule.name == "import_samples"]

    before, stamp = import_params(), folder.stat().st_mtime_ns
    (folder / "3" / "a.png").write_bytes(b"other image")
    os.utime(folder, ns=(stamp, stamp))
    after = import_params()
    assert before and before[0]["source_state"] != after[0]["source_state"]
    assert {k: v for k, v in before[0].items() if k != "source_state"} == \
        {k: v for k, v in after[0].items() if k != "source_state"}


def test_a_set_changed_since_its_entry_scored_it_loses_its_scores_under_every_protocol(in_tmp, monkeypatch, capsys):
    """The same file, rewritten and scored again under one protocol, left its entry's scores of the
    old images under the other protocols in place: the leaderboard showed both, one of each file,
    under one name. The entry is now cleared when the set's files changed since it was scored."""
    from cbdm import cli, external
    from cbdm.config import load_config
    from cbdm.samplesets import source_state

    from helpers import MINIMAL

    samples = in_tmp / "mine.npz"
    samples.write_bytes(b"first")
    (in_tmp / "config.yaml").write_text(yaml.safe_dump(MINIMAL))
    dataset, imb, _ = external.choose(load_config("config.yaml"), None, None, None)
    entry = in_tmp / f"results/t/external/mine/{dataset}-IF{imb}"
    entry.mkdir(parents=True)
    (entry / "card.json").write_text(json.dumps({"source": "mine.npz", "source_path": str(samples), "note": "",
                                                 "kind": "external", "source_state": source_state(str(samples))}))
    (entry / "other.json").write_text("{}")  # its scores under another protocol
    scored = []

    class Scored(Exception):
        pass

    def score(**kwargs):
        scored.append((entry / "other.json").exists())
        raise Scored

    monkeypatch.setattr(external, "build_inputs", lambda *a, **k: None)
    monkeypatch.setattr(external, "precheck_samples", lambda *a, **k: None)  # the files are stand-ins
    monkeypatch.setattr(external, "score", score)
    for content, kept in ((None, True), (b"second, longer", False)):
        if content:
            samples.write_bytes(content)
        with pytest.raises(Scored):
            cli.main(["evaluate", "--config", "config.yaml", "--samples", "mine.npz", "--name", "mine"])
        assert scored.pop() is kept, content
    assert ("mine.npz changed since entry 'mine' scored it: its scores under protocol(s) other are removed before "
            "this one is stored") in capsys.readouterr().out


def test_a_set_its_import_would_refuse_is_refused_before_the_suites_inputs_are_built(in_tmp, monkeypatch, capsys):
    """Float images, or too few of a class, were refused only after the dataset, classifier and
    reference-features jobs of a new suite had run (21 s on the tiny suite; Inception features of
    a paper suite take far longer)."""
    from cbdm import cli, external

    from helpers import MINIMAL

    (in_tmp / "config.yaml").write_text(yaml.safe_dump(MINIMAL))  # protocol ours: 100 of each class
    labels = np.repeat(np.arange(10), 100)
    np.savez("float.npz", arr_0=np.random.RandomState(0).rand(1000, 8, 8, 1), arr_1=labels)
    np.savez("few.npz", arr_0=np.full((990, 8, 8, 1), 200, np.uint8), arr_1=labels[10:])
    built = []
    monkeypatch.setattr(external, "build_inputs", lambda *a, **k: built.append(a))
    for name, message in (("float", "float.npz: images are float64, expected uint8"),
                          ("few", "class 0 has 90 samples in few.npz, fewer than the 100 the protocol needs")):
        assert cli.main(["evaluate", "--config", "config.yaml", "--samples", f"{name}.npz"]) == 1
        assert message in capsys.readouterr().err and not built


def test_a_second_sample_set_under_an_entry_name_in_use_is_refused_unless_overwrite(in_tmp, monkeypatch, capsys):
    """Without --name an entry is named by the file: ext/runA/samples.npz, then ext/runB/samples.npz,
    both 'samples'. The second is refused before anything is built; the same set again is scored;
    --overwrite replaces the entry (after the suite's inputs are built)."""
    from cbdm import cli, external
    from cbdm.config import load_config

    from helpers import MINIMAL

    for run in ("runA", "runB"):
        (in_tmp / "ext" / run).mkdir(parents=True)
        (in_tmp / "ext" / run / "samples.npz").write_bytes(b"")
    (in_tmp / "config.yaml").write_text(yaml.safe_dump(MINIMAL))
    dataset, imb, _ = external.choose(load_config("config.yaml"), None, None, None)
    entry = in_tmp / f"results/t/external/samples/{dataset}-IF{imb}"
    entry.mkdir(parents=True)  # runA's scores, its card as cbdm evaluate wrote it before `source_path`
    (entry / "card.json").write_text(json.dumps({"source": "ext/runA/samples.npz", "note": "", "kind": "external"}))
    built, scored = [], []

    class Scored(Exception):
        pass

    def score(**kwargs):  # stands in for import, features and metrics: says whether runA's entry was kept
        scored.append(entry.exists())
        raise Scored

    monkeypatch.setattr(external, "build_inputs", lambda *a, **k: built.append(a))
    monkeypatch.setattr(external, "precheck_samples", lambda *a, **k: None)  # the files are stand-ins
    monkeypatch.setattr(external, "score", score)

    def evaluate(*args):
        return cli.main(["evaluate", "--config", "config.yaml", "--samples", *args])

    assert evaluate("ext/runB/samples.npz") == 1 and not built
    assert capsys.readouterr().err.strip() == (
        f"cbdm evaluate: entry 'samples' (results/t/external/samples/{dataset}-IF{imb}) holds the scores of "
        f"ext/runA/samples.npz, not of ext/runB/samples.npz: give this set its own --name, or pass --overwrite "
        f"to replace that entry")
    for args, kept in ((["ext/runA/samples.npz"], True), ([str(in_tmp / "ext/runA/samples.npz")], True),
                       (["ext/runB/samples.npz", "--overwrite"], False)):
        with pytest.raises(Scored):
            evaluate(*args)
        assert scored.pop() is kept, args
