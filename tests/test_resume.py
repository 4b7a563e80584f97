"""A run killed -9 at a fixed step (cbdm.train's CBDM_KILL_AT_STEP hook), started again, resumes from
its last checkpoint and ends with the weights and the loss log of an uninterrupted run, bit for bit:
the trainer alone (fast) and the whole workflow killed with it (slow)."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from cbdm.modelfile import load_model
from cbdm.train import train

from helpers import TINY_DIFFUSION, TINY_NETWORK, training_settings

# Every random stream the trainer restores: batches, flips, label drops (the coin), CBDM's target
# labels and the overlap loss's negatives, and (dropout > 0) the global generators dropout draws from.
NETWORK = {**TINY_NETWORK, "dropout": 0.1}
LOSSES = [{"name": "eps_mse"}, {"name": "cbdm"},
          {"name": "overlap_hinge", "weight": 0.1, "margin": 0.1, "num_negatives": 2}]
TRAIN_IN_A_PROCESS = "import json, sys, torch; torch.set_num_threads(1); from cbdm.train import train; " \
                     "train(**json.loads(sys.argv[1]))"


def train_arguments(folder, train_npz, tag: str, steps: int = 30, **training) -> dict:
    settings = training_settings(LOSSES, steps=steps, batch_size=16, lr=2e-3, warmup_steps=5, ema_decay=0.9,
                                 hflip=True, label_drop={"policy": "sample", "probability": 0.2},
                                 **{"checkpoint_every": 10, "log_every": 5, **training})
    return dict(settings=settings, network=NETWORK, diffusion=TINY_DIFFUSION, train_npz=str(train_npz),
                num_classes=10, seed=3, device="cpu", out_model=str(folder / f"{tag}.pt"),
                out_log=str(folder / f"{tag}.csv"), checkpoint_path=str(folder / f"{tag}.ckpt"))


def killed_at(step: int, arguments: dict, repo) -> dict:
    """Train with `arguments` in a subprocess killed -9 after `step`; the checkpoint it leaves."""
    process = subprocess.run([sys.executable, "-c", TRAIN_IN_A_PROCESS, json.dumps(arguments)], timeout=300,
                             env={**os.environ, "CBDM_KILL_AT_STEP": str(step), "PYTHONPATH": str(repo)},
                             start_new_session=True, capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert not os.path.exists(arguments["out_model"])
    return torch.load(arguments["checkpoint_path"], weights_only=True)


def test_a_run_killed_between_checkpoints_resumes_to_the_same_weights_and_log(tmp_path, repo, longtail_digits,
                                                                              capsys):
    whole = train_arguments(tmp_path, longtail_digits, "whole")
    train(**whole)
    killed = train_arguments(tmp_path, longtail_digits, "killed")
    # Killed after step 25: the checkpoint of step 20 survives and steps 21-25 are redone on resuming.
    assert killed_at(25, killed, repo)["step"] == 20

    capsys.readouterr()
    train(**killed)
    assert f"resumed from {killed['checkpoint_path']} at step 20" in capsys.readouterr().out
    expected, resumed = load_model(whole["out_model"])[0].state_dict(), load_model(killed["out_model"])[0].state_dict()
    assert resumed.keys() == expected.keys()
    assert [name for name in expected if not torch.equal(resumed[name], expected[name])] == []
    assert open(killed["out_log"]).read() == open(whole["out_log"]).read()
    assert not os.path.exists(killed["checkpoint_path"])  # removed once the model is written


def test_data_parallel_processes_resume_each_its_own_dropout_stream(tmp_path, repo, longtail_digits):
    """Two gloo processes draw different dropout masks; the checkpoint holds both streams, and
    each process resumes its own, so the result equals an uninterrupted 2-process run."""
    whole = train_arguments(tmp_path, longtail_digits, "whole", steps=10, processes=2, checkpoint_every=5)
    train(**whole)
    killed = train_arguments(tmp_path, longtail_digits, "killed", steps=10, processes=2, checkpoint_every=5)
    streams = killed_at(7, killed, repo)["process_rng"]
    assert len(streams) == 2 and not torch.equal(streams[0]["cpu"], streams[1]["cpu"])
    train(**killed)
    expected, resumed = load_model(whole["out_model"])[0].state_dict(), load_model(killed["out_model"])[0].state_dict()
    assert [name for name in expected if not torch.equal(resumed[name], expected[name])] == []
    assert open(killed["out_log"]).read() == open(whole["out_log"]).read()


TARGET = "results/tiny/models/digits/IF5/ddpm/seed0/model.pt"


def snakemake(repo, workdir, *args, kill_at_step: int | None = None) -> subprocess.CompletedProcess:
    """Snakemake for TARGET in its own process group; with `kill_at_step`, the training job kills -9
    that whole group (snakemake included) after that step."""
    env = {**os.environ, **({"CBDM_KILL_AT_STEP": str(kill_at_step)} if kill_at_step else {})}
    command = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), TARGET, "--cores", "1",
               "--configfile", "tiny.yaml", *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, env=env,
                            start_new_session=True)
    expected = -signal.SIGKILL if kill_at_step else 0
    assert result.returncode == expected, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_killing_the_workflow_mid_training_loses_nothing(tmp_path, repo):
    config = yaml.safe_load((repo / "tests/data/tiny.yaml").read_text())
    config["variants"] = {"ddpm": {"losses": [{"name": "eps_mse"}]}}
    config["training"].update(steps=30, checkpoint_every=10)
    for name in ("whole", "killed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(repo, tmp_path / "whole")

    killed = tmp_path / "killed"
    snakemake(repo, killed, kill_at_step=25)  # snakemake and its running job, at once
    checkpoint = killed / TARGET.replace("model.pt", "checkpoint.pt")
    assert not (killed / TARGET).exists()
    assert torch.load(checkpoint, weights_only=True)["step"] == 20

    snakemake(repo, killed, "--unlock")
    snakemake(repo, killed)
    log = (killed / "results/tiny/logs/train/digits/IF5/ddpm/seed0.log").read_text()
    assert "resumed from" in log and "at step 20" in log
    whole = torch.load(tmp_path / "whole" / TARGET, weights_only=True)["state_dict"]
    resumed = torch.load(killed / TARGET, weights_only=True)["state_dict"]
    assert [name for name in whole if not torch.equal(whole[name], resumed[name])] == []
