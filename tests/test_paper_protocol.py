"""The paper configs resolve to the reference protocol (issue: parity with the CBDM reference code)."""
import pytest

from cbdm.config import imbalance_factors, load_config, load_published


@pytest.mark.parametrize("name", ["cifar10-lt", "cifar100-lt"])
def test_paper_configs_resolve_to_the_reference_settings(repo, monkeypatch, name):
    monkeypatch.chdir(repo)  # the registry path is relative to the repository
    config = load_config(repo / f"config/paper/{name}.yaml")
    assert config["evaluation"]["pr_neighborhood"] == 5
    assert config["features"]["extractor"] == "inception"
    assert config["features"]["inception_preprocessing"] == "pytorch_fid"
    assert config["network"]["init"] == "reference" and config["network"]["null_label"] == "zero"
    assert config["augmentation"]["enabled"] and config["augmentation"]["classifier"]["architecture"] == "resnet18"
    (dataset,) = config["datasets"].values()
    factors = imbalance_factors(dataset)
    assert factors == ([100, 1000] if name == "cifar10-lt" else [100])


def test_the_registry_holds_the_coral_table_with_status_and_protocol(repo):
    entries = load_published(str(repo / "config/published.yaml"))
    coral = {(e["source"], e["imbalance_factor"], e["method"], e["metric"]): e for e in entries}
    assert coral[("cifar10", 100, "CORAL", "is_mean")]["value"] == 9.69
    assert coral[("cifar10", 100, "CBDM", "recall")]["value"] == 0.57
    assert coral[("cifar10", 1000, "DDPM", "fid")]["value"] == 13.05
    assert coral[("cifar100", 100, "T2H", "is_mean")]["value"] == 12.97
    assert coral[("cifar100", 100, "CORAL", "recall")]["value"] == 0.59
    assert all(e["status"] for e in entries)
    assert coral[("cifar10", 100, "DiffROP (overlap optimization)", "fid")]["value"] is None
