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
