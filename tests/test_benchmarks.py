"""The benchmarks stay runnable (each at a tiny size; not timed), and cover every work-finding query."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from tests.conftest import REPO


def test_every_work_finding_query_has_benchmark_parameters() -> None:
    spec = importlib.util.spec_from_file_location("opsdb_scale", REPO / "bench" / "opsdb_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    names = module.work_queries()
    assert "claim_unpackaged_files" in names and "find_deletable_package_copies" in names
    module.check_query_params(names)  # raises naming any query without realistic parameters


def run_bench(name: str, *args: str, timeout: float = 600) -> str:
    """Run ``bench/<name>.py`` at a tiny size the way a developer does; return what it printed."""
    result = subprocess.run([sys.executable, str(REPO / "bench" / f"{name}.py"), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, f"bench/{name}.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.stdout.startswith("machine: "), f"bench/{name}.py does not say what it ran on:\n{result.stdout}"
    return result.stdout


def test_the_packaging_benchmark_runs() -> None:
    assert "ratio" in run_bench("packaging", "--gigabytes", "0.02", "--runs", "1")


def test_the_unpack_benchmark_runs() -> None:
    assert "ratio" in run_bench("unpack", "--gigabytes", "0.02", "--runs", "1")


def test_the_scale_benchmark_runs() -> None:
    assert "ms" in run_bench("opsdb_scale", "--files", "10000", "--packages", "1000", "--runs", "1")


def test_the_pipeline_benchmark_runs() -> None:
    assert "MB/s" in run_bench("pipeline", "--gigabytes", "0.02", "--batch-gigabytes", "0.01")


def test_the_transfer_benchmark_runs() -> None:
    assert "rsync" in run_bench("transfer", "--gigabytes", "0.01", "--runs", "1", "--cpu-runs", "1")


def test_the_archive_benchmark_runs() -> None:
    assert "ratio" in run_bench("archive", "--packages", "1", "--package-gigabytes", "0.01", "--runs", "1")


def test_the_pipeline_benchmark_runs_through_airflow() -> None:
    printed = run_bench("pipeline", "--airflow", "--gigabytes", "0.02", "--batch-gigabytes", "0.01")
    assert "pipeline through Airflow" in printed and "ccat_archive" in printed, printed
