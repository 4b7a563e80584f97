"""The benchmark scripts run (CPU, CI-sized) and print both paths with their ratio; the figures
that count are taken on a GPU (benchmarks/README.md)."""
import json
import subprocess
import sys

import pytest

SMOKE = {
    "bench_train.py": ["--size", "small", "--device", "cpu", "--steps", "2", "--warmup", "1", "--batch", "8",
                       "--no-compile"],
    "bench_sample.py": ["--size", "small", "--device", "cpu", "--steps", "2", "--warmup", "0", "--batch", "4",
                        "--fast-batch", "8", "--no-compile"],
    "bench_features.py": ["--device", "cpu", "--images", "4", "--batch", "4", "--cleanfid-batch", "4",
                          "--workers", "0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", SMOKE)
def test_benchmark_scripts_run_and_compare_both_paths(script, repo, tmp_path):
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(repo / "benchmarks" / script), *SMOKE[script], "--json", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=repo / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert len(figures["rows"]) == 2 and all(row["rate"] > 0 and row["peak_mb"] > 0 for row in figures["rows"])
    assert " x 1.00" in result.stdout and "images/s" in result.stdout
