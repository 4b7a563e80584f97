"""benchmarks/bench_default.py: the per-stage breakdown and the estimate from benchmark files."""
import sys

import pytest

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture
def bench_default(repo, monkeypatch):
    monkeypatch.syspath_prepend(str(repo / "benchmarks"))
    import bench_default
    return bench_default


def write(results, relative, wall, cpu):
    path = results / "benchmarks" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:00\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_stages_shares_and_the_critical_path(tmp_path, bench_default, capsys):
    results = tmp_path / "results/suite"
    write(results, "prepare_source/digits.tsv", 2, 1)
    write(results, "train_classifier/digits.tsv", 12, 10)
    write(results, "features/digits/IF10/reference-heldout.tsv", 3, 2)
    for variant, cpu in (("ddpm", 60), ("cbdm", 90)):
        write(results, f"train/digits/IF10/{variant}/seed0.tsv", 200, cpu)
        write(results, f"sample/digits/IF10/{variant}/seed0/w1-s0/exact-1000.tsv", 30, 20)
        write(results, f"features/digits/IF10/{variant}/seed0/w1-s0/exact-1000.tsv", 3, 2)
        write(results, f"diagnostics/digits/IF10/{variant}/seed0/w1-s0/exact-1000.tsv", 20, 15)
    log = tmp_path / "snakemake.log"
    log.write_text("[Thu Nov 26 07:00:00 2026]\nrule train:\n[Thu Nov 26 07:05:30 2026]\nFinished\n")
    figures = bench_default.report(results, cores=2, log=log)
    stages = {r["stage"]: r for r in figures["stages"]}
    assert stages["train"]["jobs"] == 2 and stages["train"]["cpu"] == 150 and stages["train"]["longest_cpu"] == 90
    assert stages["features (samples)"]["jobs"] == 2 and stages["features (reference)"]["jobs"] == 1
    assert figures["cpu_s"] == 1 + 10 + 2 + 150 + 40 + 4 + 30
    assert sum(r["share"] for r in figures["stages"]) == pytest.approx(1.0)
    # prepare_source 1 -> train 90 -> sample 20 -> diagnostics 15 beats -> features (samples) 2
    assert figures["chain"] == ["prepare_source", "train", "sample", "diagnostics"]
    assert figures["critical_path_s"] == 126
    assert figures["estimate_s"] == (max(237 / 2, 126), 237 / 2 + 126)
    assert figures["measured_s"] == 330
    out = capsys.readouterr().out
    assert "critical path" in out and "5.5 min" in out


def test_a_folder_without_benchmark_files_is_refused(tmp_path, bench_default):
    with pytest.raises(SystemExit, match="no benchmark files"):
        bench_default.main([str(tmp_path)])


def test_it_runs_as_a_script(repo, tmp_path):
    import subprocess
    write(tmp_path, "train/digits/IF10/ddpm/seed0.tsv", 10, 8)
    result = subprocess.run([sys.executable, str(repo / "benchmarks/bench_default.py"), str(tmp_path), "--cores", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "0.1 to 0.3 min" in result.stdout
