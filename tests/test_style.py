"""The code passes the project's lint rules (pyproject.toml, [tool.ruff]) and Snakemake's linter."""
import subprocess
import sys


def test_ruff(repo):
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "cbdm", "tests", "benchmarks", "workflow"],
                            cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]


def test_snakemake_lint(repo):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=repo, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "in a good condition" in result.stdout + result.stderr, result.stdout[-3000:]
