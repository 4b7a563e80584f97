"""Following the suite's advice after a damaged file ends in a complete rebuild (issue 10)."""
import json
from pathlib import Path

import pytest
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

from helpers import write_tiny_config

# The sample set reads the manifest: the run up to it takes 4 jobs where `all` takes 19, and a
# job's every start imports torch (about 3 s on the 2-core CI machine).
SAMPLES = "results/tiny/samples/digits/IF5/ddpm/seed0/w1-s0/exact-120.npz"


def run_all(repo: Path, workdir: Path, configfile: Path, forcerun=frozenset()):
    with SnakemakeApi(OutputSettings()) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=2),
                                config_settings=ConfigSettings(configfiles=[configfile]),
                                snakefile=repo / "Snakefile", workdir=workdir)
        workflow.dag(DAGSettings(targets={SAMPLES}, forcerun=forcerun)).execute_workflow(executor="local")


def outputs(workdir: Path) -> set[str]:
    results = workdir / "results/tiny"
    return {str(p.relative_to(results)) for p in results.rglob("*")
            if p.is_file() and p.parts[len(results.parts)] in ("data", "models", "samples", "metrics", "report")}


@pytest.mark.slow
def test_after_a_truncated_manifest_the_advice_ends_in_a_complete_rebuild(tmp_path, repo, caplog):
    # One variant, no augmentation: the manifest is upstream of every sample set, whatever the suite runs.
    path = write_tiny_config(repo, tmp_path / "tiny.yaml", extension=False, augmentation={"enabled": False},
                             variants={"ddpm": {"losses": [{"name": "eps_mse"}]}})
    run_all(repo, tmp_path, path)
    complete = outputs(tmp_path)
    assert SAMPLES.removeprefix("results/tiny/") in complete
    manifest = tmp_path / "results/tiny/data/digits/IF5/manifest.json"
    manifest.write_text(manifest.read_text()[:100])  # truncated
    damaged = manifest.stat().st_mtime

    with pytest.raises(Exception, match="At least one job did not complete successfully"):
        run_all(repo, tmp_path, path)
    logs = "".join(p.read_text() for p in (tmp_path / "results/tiny/logs").rglob("*.log"))
    relative = str(manifest.relative_to(tmp_path))
    assert f"{relative} is not valid JSON" in logs and f"add `--forcerun {relative}` to the same snakemake" in logs
    run_all(repo, tmp_path, path, forcerun={relative})  # the advice
    assert "Nothing to be done" not in caplog.text.split("not valid JSON")[-1]
    assert outputs(tmp_path) >= complete
    json.loads(manifest.read_text())  # rebuilt whole, and the sample set from it
    assert (tmp_path / SAMPLES).stat().st_mtime > manifest.stat().st_mtime > damaged
