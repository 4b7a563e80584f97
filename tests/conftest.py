from pathlib import Path

import pytest
import torch

from helpers import cpu_placement_kept, run_workflow, write_tiny_config

REPO = Path(__file__).resolve().parents[1]

# The suite runs on a 2-core CI machine; one torch thread per test process avoids oversubscription.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Only tests/test_tiny_suite.py may read the tiny suite: `pytest` gives each worker whole
    modules (`--dist loadfile`), so one module builds it once; a second module asking for it
    would build it again in the other worker (minutes on the 2-core CI machine). pytest-xdist's
    `xdist_group` would say this per test, but with pytest 9.2 it groups nothing
    (pytest-dev/pytest-xdist#1386)."""
    elsewhere = [item.nodeid for item in items if "tiny_suite" in getattr(item, "fixturenames", ())
                 and item.path.name != "test_tiny_suite.py"]
    if elsewhere:
        raise pytest.UsageError(f"{', '.join(elsewhere)} read(s) the tiny suite: move the test into "
                                f"tests/test_tiny_suite.py, the one module that builds it")


@pytest.fixture(autouse=True)
def _cpu_placement_restored():
    """Every test leaves the process on the cores and threads it found (see cpu_placement_kept)."""
    with cpu_placement_kept():
        yield


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def loss_registry():
    """The global loss registry; the losses a test registers in it are removed after the test."""
    from cbdm.losses import LOSSES

    before = dict(LOSSES)
    yield LOSSES
    LOSSES.clear()
    LOSSES.update(before)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """tests/data/tiny.yaml with its extension rule, in this test's folder."""
    return write_tiny_config(REPO, tmp_path / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> Path:
    """The folder where the tiny suite (tests/data/tiny.yaml with its extension variant) ran end to
    end, Snakemake's HTML report of it at report.html. Built once a session and shared: tests only
    read it (copy it to change anything)."""
    workdir = tmp_path_factory.mktemp("tiny-suite")
    configfile = write_tiny_config(REPO, workdir / "tiny.yaml")
    run_workflow(REPO, workdir, configfile)
    run_workflow(REPO, workdir, configfile, html_report=workdir / "report.html")
    return workdir


@pytest.fixture(scope="session")
def longtail_digits(tmp_path_factory) -> Path:
    """A small long-tailed digits training set (train.npz; 20 held out per class, n_max 40, IF 5)."""
    from cbdm.dataset import build_longtail, prepare_source

    folder = tmp_path_factory.mktemp("longtail-digits")
    source, manifest = folder / "source.npz", folder / "manifest.json"
    prepare_source({"source": "sklearn_digits", "heldout_per_class": 20, "split_seed": 0}, source,
                   folder / "source.json")
    build_longtail({"profile": "exponential", "n_max": 40, "seed": 0}, 5.0, source, folder / "source.json",
                   folder / "train.npz", manifest)
    return folder / "train.npz"


@pytest.fixture
def report_inputs(tmp_path):
    """A synthetic report's inputs (tests/report_helpers.py): files, settings and output paths."""
    from report_helpers import synthetic_report_inputs
    return synthetic_report_inputs(tmp_path)
