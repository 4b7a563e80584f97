"""Provenance records the exact-version lock: its digest and whether the installed versions match."""
import hashlib
import importlib.metadata

from cbdm.provenance import lock_status, provenance_html


def test_lock_status_names_every_mismatch(tmp_path):
    numpy = importlib.metadata.version("numpy")
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# a comment\nnumpy=={numpy}\npandas==0.0.1\nno-such-package-cbdm==1.0\n")
    status = lock_status(lock)
    assert status["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert status["matches"] is False
    assert status["mismatches"] == {"pandas": {"pinned": "0.0.1", "installed": importlib.metadata.version("pandas")},
                                    "no-such-package-cbdm": {"pinned": "1.0", "installed": None}}
    lock.write_text(f"numpy=={numpy}\n")
    assert lock_status(lock)["matches"] is True
    assert lock_status(tmp_path / "absent.lock") == {"file": str(tmp_path / "absent.lock"), "sha256": None,
                                                     "matches": False, "note": "no lock file"}


def test_the_repository_lock_pins_what_the_package_needs(repo):
    lines = (repo / "requirements.lock").read_text().splitlines()
    pinned = {line.split("==")[0].lower().replace("_", "-") for line in lines if "==" in line and line[0] != "#"}
    assert {"torch", "torchvision", "numpy", "snakemake", "clean-fid", "torch-fidelity", "pytest"} <= pinned
    assert "cbdm" not in pinned


def test_provenance_page_shows_the_lock():
    info = {"suite": "s", "code": {"commit": "abc"}, "packages": {"numpy": "2"}, "machine": {"python": "3"},
            "seeds": {"training": [0]}, "training_runs": [{"variant": "ddpm", "seed": 0}],
            "lock": {"file": "requirements.lock", "sha256": "f00", "matches": False,
                     "mismatches": {"torch": {"pinned": "2.14.1", "installed": "2.15.0"}}}}
    page = provenance_html(info)
    assert "f00" in page and "NO" in page and "pinned 2.14.1, installed 2.15.0" in page


def test_provenance_refuses_a_model_file_trained_for_another_cell(tmp_path):
    """cbdm's model file copied over ddpm's (or a file another suite trained) was listed among this
    suite's training runs under the path's cell, with the other run's steps, device and time."""
    import pytest

    from cbdm.io import InputError, rebuild
    from cbdm.modelfile import save_model
    from cbdm.networks import build_unet
    from cbdm.provenance import write_provenance

    identity = {"variant": "ddpm", "dataset": "digits", "imbalance_factor": "10", "seed": 0,
                "training_digest": "t", "data_digest": "d"}
    model = build_unet({"base_channels": 8, "channel_mult": [1], "attention_levels": [], "num_res_blocks": 1,
                        "dropout": 0.0, "norm_groups": 4}, image_channels=1, image_size=8, num_classes=2,
                       num_timesteps=20)
    path = tmp_path / "model.pt"
    save_model(path, model, {"num_timesteps": 20, "beta_start": 1e-4, "beta_end": 0.02}, meta={"steps": 5},
               identity={**identity, "variant": "cbdm"})
    out = {name: str(tmp_path / name) for name in ("out_json", "out_html", "out_config")}
    with pytest.raises(InputError) as refused:
        write_provenance(config={"suite": "s"}, seeds={}, code_dir=str(tmp_path), model_files=[str(path)],
                         identities=[identity], **out)
    assert str(refused.value) == (f"{path} was trained for variant cbdm, but this job needs variant ddpm: "
                                  f"the file was copied or moved; {rebuild(path)}")
    assert not any((tmp_path / name).exists() for name in out.values())
