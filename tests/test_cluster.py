"""The SLURM profile against a fake cluster: sbatch, sacct and friends on PATH record what
Snakemake submits; nothing is run, every job is reported failed, and the test reads the
sbatch lines."""
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

FAKE_SLURM = """#!{python}
import json, os, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_DIR"])
name, args = Path(sys.argv[0]).name, sys.argv[1:]
submitted = state / "sbatch.jsonl"
if name == "sbatch":
    job_id = 1000 + (len(submitted.read_text().splitlines()) if submitted.exists() else 0)
    with open(submitted, "a") as f:
        f.write(json.dumps({{"id": job_id, "args": args}}) + "\\n")
    print(job_id)
elif name == "sacct" and any("JobIdRaw,State" in a for a in args):
    for line in submitted.read_text().splitlines() if submitted.exists() else []:
        print(f"{{json.loads(line)['id']}}|FAILED")
elif name == "scontrol":
    print("MinJobAge = 300 sec")
elif name in ("sacctmgr", "sshare"):
    print("testaccount")
"""


@pytest.fixture
def fake_cluster(tmp_path):
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    state.mkdir()
    script = bin_dir / "fake_slurm"
    script.write_text(FAKE_SLURM.format(python=sys.executable))
    script.chmod(0o755)
    for name in ("sbatch", "sacct", "squeue", "sinfo", "scontrol", "sacctmgr", "sshare", "scancel"):
        (bin_dir / name).symlink_to(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "FAKE_SLURM_DIR": str(state)}
    return env, state / "sbatch.jsonl"


def snakemake(repo, workdir, env, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), *args],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_slurm_profile_submits_gpu_jobs_with_their_resources(tmp_path, repo, fake_cluster):
    env, submissions = fake_cluster
    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    del config["variants"]["ddpm_resampled"]
    config["resources"] = {"gpus_per_job": 1}  # as the paper configs: planned on a node without a GPU
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    profile = ("--workflow-profile", str(repo / "profiles/slurm"), "--slurm-init-seconds-before-status-checks", "1")
    train_npz = "results/tiny/data/digits/IF5/train.npz"
    local = snakemake(repo, tmp_path, env, train_npz, *profile, "--configfile", "tiny.yaml")
    assert local.returncode == 0, local.stderr[-2000:]
    assert not submissions.exists()  # prepare_source and longtail are localrules: no sbatch job

    target = "results/tiny/models/digits/IF5/cbdm/seed0/model.pt"
    cluster = snakemake(repo, tmp_path, env, target, *profile, "--configfile", "tiny.yaml")
    assert cluster.returncode != 0  # the fake cluster fails every job
    assert submissions.exists(), f"nothing was submitted to sbatch:\n{cluster.stderr[-3000:]}"
    lines = [json.loads(line)["args"] for line in submissions.read_text().splitlines()]
    assert len(lines) == 2  # the job and its one retry (profile: retries: 1)
    call = " ".join(lines[0])
    for expected in ("--parsable", "-p gpu", "-t 2880", "--mem 16000", "--gpus=1", "--wrap="):
        assert expected in call, (expected, call)
    assert "rule_train_wildcards_" in call and "--executor slurm-jobstep" in call


def test_the_cluster_profiles_name_rules_that_exist_and_leave_the_training_gpus_to_the_rule(repo):
    import re

    rules = set(re.findall(r"^rule (\w+):", "".join(p.read_text() for p in (repo / "workflow").rglob("*.smk")), re.M))
    for profile in ("slurm", "kubernetes"):
        text = (repo / "profiles" / profile / "config.yaml").read_text()
        settings = yaml.safe_load(text)
        assert set(settings["set-resources"]) <= rules, profile
        assert {"features_samples", "features_reference", "metrics"} <= set(settings["set-resources"])
        assert all("gpu" not in settings["set-resources"].get(rule, {}) for rule in ("train", "sample")), profile
        usage = [line for line in text.splitlines() if "snakemake " in line and "profiles/" in line]
        assert usage and all("--workflow-profile profiles/" in line for line in usage), profile


def test_placeholders_of_a_profile_stop_the_run_in_one_line(repo):
    from cbdm.workflow import check_profile_placeholders

    settings = yaml.safe_load((repo / "profiles/kubernetes/config.yaml").read_text())
    shipped = {key: settings[key] for key in ("default-storage-prefix", "container-image")}
    with pytest.raises(ValueError, match="YOUR-BUCKET.*YOUR-REGISTRY") as refused:
        check_profile_placeholders(shipped)
    assert "\n" not in str(refused.value)
    check_profile_placeholders({"default-storage-prefix": "s3://lab-bucket/cbdm", "container-image": None})


@pytest.mark.slow
def test_the_workflow_refuses_a_profile_with_placeholders_before_planning(tmp_path, repo):
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n",
                             "--configfile", str(repo / "tests/data/tiny.yaml"),
                             "--default-storage-prefix", "s3://YOUR-BUCKET/cbdm"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "still holds placeholder(s) default-storage-prefix: s3://YOUR-BUCKET/cbdm" in output
    assert len(output.splitlines()) < 6 and "Traceback" not in output


@pytest.mark.slow
def test_a_dry_run_through_the_slurm_profile_gives_a_ddp_training_its_gpus(tmp_path, repo):
    jobs = ddp_dry_run(tmp_path, repo, "--workflow-profile", str(repo / "profiles/slurm"))
    assert any("variant=cbdm," in w and "gpu=2," in r and "slurm_partition=gpu" in r for w, r in jobs["train"])
    assert any("variant=ddpm," in w and "gpu=1," in r for w, r in jobs["train"])
    assert all("gpu=1," in r for _, r in jobs["metrics"] + jobs["features_samples"])  # a whole GPU on SLURM


def ddp_dry_run(tmp_path, repo, *options: str) -> dict[str, list[tuple[str, str]]]:
    """The jobs a dry run plans for the tiny suite on GPUs, cbdm trained by 2 DDP processes."""
    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    del config["variants"]["ddpm_resampled"]
    config["resources"] = {"gpus_per_job": 1}
    config["variants"]["cbdm"]["training"] = {"processes": 2}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-n",
                             "--configfile", "gpu.yaml", *options],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return planned_jobs(result.stdout + result.stderr)


def planned_jobs(output: str) -> dict[str, list[tuple[str, str]]]:
    """rule -> [(wildcards line, resources line)] of a dry run's printed jobs."""
    jobs = {}
    for block in output.split("rule ")[1:]:
        name = block.split(":")[0]
        resources = next((line for line in block.splitlines() if "resources:" in line), "")
        wildcards = next((line for line in block.splitlines() if "wildcards:" in line), "")
        jobs.setdefault(name, []).append((wildcards, resources + ","))
    return jobs


def test_concurrent_jobs_claim_different_gpus(tmp_path):
    from cbdm.workflow import claim_gpus

    first, held_first = claim_gpus(1, ["0", "1", "2"], tmp_path)
    second, held_second = claim_gpus(2, ["0", "1", "2"], tmp_path)
    assert first == ["0"] and second == ["1", "2"]
    with pytest.raises(RuntimeError, match="--resources gpu=3"):
        claim_gpus(1, ["0", "1", "2"], tmp_path)  # every GPU is held
    for handle in held_first:
        handle.close()
    assert claim_gpus(1, ["0", "1", "2"], tmp_path)[0] == ["0"]  # freed when the job ends
    assert (tmp_path / "gpu0.lock").stat().st_mode & 0o777 == 0o666  # other users' jobs open it too
    assert tmp_path.stat().st_mode & 0o1777 == 0o1777  # and create theirs beside it


def test_jobs_inside_an_allocation_claim_among_the_gpus_it_lists(tmp_path, monkeypatch):
    """With CUDA_VISIBLE_DEVICES=4,5,6,7 already set (salloc, a container), every job kept all four
    and ran on the first; and a job taking every GPU took no lock, so another job got one of them."""
    import cbdm.workflow as wf

    monkeypatch.setattr(wf, "GPU_LOCKS", tmp_path)
    monkeypatch.setattr(wf.claim_gpus, "__defaults__", (tmp_path,))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")

    class Job:
        def __init__(self, gpus):
            self.resources, self.threads, self.log = {"gpu": gpus}, 1, [str(tmp_path / f"job{gpus}.log")]

    def start(stack, gpus):  # each job is its own process, started with the allocation's list
        os.environ["CUDA_VISIBLE_DEVICES"] = "4,5,6,7"
        stack.enter_context(wf.job(Job(gpus)))
        return os.environ["CUDA_VISIBLE_DEVICES"]

    with contextlib.ExitStack() as stack:
        assert (start(stack, 1), start(stack, 2)) == ("4", "5,6")
        with pytest.raises(RuntimeError, match="no 4 free GPU"):
            start(stack, 4)  # a job taking every GPU waits for none of them to be held
    with contextlib.ExitStack() as stack:
        assert start(stack, 4) == "4,5,6,7"
        with pytest.raises(RuntimeError, match="no 1 free GPU"):
            start(stack, 1)


def test_gpu_rules_declare_their_gpus_memory_and_runtime(tmp_path, repo):
    jobs = ddp_dry_run(tmp_path, repo, "--resources", "gpu=4")
    train = {w: r for w, r in jobs["train"]}
    assert any("variant=cbdm," in w and "gpu=2" in r for w, r in train.items())  # one GPU per DDP process
    assert any("variant=ddpm," in w and "gpu=1" in r for w, r in train.items())
    assert all("gpu=1" in r and "runtime=1440" in r and "mem_mb=16000" in r for _, r in jobs["sample"])
    assert all("gpu=0" in r for _, r in jobs["prepare_source"])
    # small GPU jobs share a GPU on one machine (the default profile limits gpu_shared)
    assert all("gpu=0," in r and "gpu_shared=1," in r for _, r in jobs["metrics"] + jobs["features_samples"])


@pytest.mark.slow
def test_the_workflow_refuses_a_placeholder_container_image_before_any_job(tmp_path, repo):
    """Snakemake fills the container image in after parsing, where the check used to look: the
    shipped YOUR-REGISTRY image passed, and pods would have pulled it."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--cores", "1",
                             "--configfile", str(repo / "tests/data/tiny.yaml"), "--config",
                             f"extensions=[{repo / 'workflow/extensions/balanced_resampling.smk'}]",
                             "--container-image", "YOUR-REGISTRY/cbdm:latest"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "still holds placeholder(s) container-image: YOUR-REGISTRY/cbdm:latest" in output
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.npz"))
