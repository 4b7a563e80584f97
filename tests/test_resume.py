"""Kill -9 the whole workflow during training, run snakemake again: it resumes from the last
checkpoint and ends with the weights of an uninterrupted run, bit for bit."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

TARGET = "results/tiny/models/digits/IF5/ddpm/seed0/model.pt"


def snakemake(repo, workdir, *args, wait=True):
    command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), TARGET, "--cores", "1",
               "--configfile", "tiny.yaml", *args]
    if not wait:
        return subprocess.Popen(command, cwd=workdir, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_killing_the_workflow_mid_training_loses_nothing(tmp_path, repo):
    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    config["variants"] = {"ddpm": {"losses": [{"name": "eps_mse"}]}}
    config["training"].update(steps=300, checkpoint_every=20)
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(repo, tmp_path / "whole")

    killed = tmp_path / "killed"
    checkpoint = killed / TARGET.replace("model.pt", "checkpoint.pt")
    proc = snakemake(repo, killed, wait=False)
    deadline = time.time() + 300
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its running job, at once
    proc.wait()
    assert checkpoint.exists() and not (killed / TARGET).exists()
    assert 0 < torch.load(checkpoint, weights_only=True)["step"] < 300

    snakemake(repo, killed, "--unlock")
    snakemake(repo, killed)
    log = (killed / "results/tiny/logs/train/digits/IF5/ddpm/seed0.log").read_text()
    assert "resumed from" in log
    whole = torch.load(tmp_path / "whole" / TARGET, weights_only=True)["state_dict"]
    resumed = torch.load(killed / TARGET, weights_only=True)["state_dict"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
