"""Metrics to an InfluxDB-v2-compatible server, the stuck-work sweep, and the health summary."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from pathlib import Path

import pytest

from ccat_operators import metrics, monitoring, packaging, states
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import Status
from tests import pipeline
from tests.helpers import (
    apply_topology,
    ensure_obs_unit,
    file_random_observation,
    insert_pending_packages,
    location_row,
)


def exported(url: str, metric: str, expect=lambda series: bool(series), timeout: float = 15.0) -> list[dict]:
    """The series of ``metric``, polled until ``expect(series)`` (new series take a moment to be searchable)."""
    deadline = time.monotonic() + timeout
    while True:
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=5).read()  # noqa: S310 - loopback test server
        with urllib.request.urlopen(f"{url}/api/v1/export?match[]={metric}", timeout=5) as response:  # noqa: S310
            series = [json.loads(line) for line in response.read().decode().splitlines() if line]
        if expect(series) or time.monotonic() > deadline:
            return series
        time.sleep(0.2)


@pytest.fixture
def metrics_to(monkeypatch: pytest.MonkeyPatch):
    def configure(url: str) -> None:
        monkeypatch.setenv("CCAT_METRICS_URL", url)
        metrics.writer.cache_clear()

    yield configure
    metrics.writer.cache_clear()


def test_packaging_and_transfer_metrics_reach_the_server(
    ops_db: OpsDb, data_root: Path, tmp_path: Path, victoria_metrics: str, metrics_to
) -> None:
    metrics_to(victoria_metrics)
    pipeline.setup(ops_db, tmp_path)
    pipeline.deliver(ops_db, observations=1)
    sizes = sorted(row["size_bytes"] for row in ops_db.conn.execute("SELECT size_bytes FROM raw_data_package"))
    series = exported(
        victoria_metrics, "packaging_bytes", lambda found: sum(len(x["values"]) for x in found) == len(sizes)
    )
    assert series and series[0]["metric"]["site"] == "ccat" and series[0]["metric"]["checksum_algorithm"] == "sha256"
    assert sorted(v for s in series for v in s["values"]) == sizes
    transfers = exported(victoria_metrics, "transfer_rate_mb_s", lambda found: len(found) == 2)
    assert {s["metric"]["route"] for s in transfers} in (
        {"ccat_to_cologne", "cologne_to_us"},
        {"ccat_to_us", "us_to_cologne"},
    )
    assert all(s["metric"]["method"] == "local" for s in transfers)


def test_a_metrics_server_that_is_down_never_fails_the_work(
    ops_db: OpsDb, data_root: Path, tmp_path: Path, metrics_to, caplog: pytest.LogCaptureFixture
) -> None:
    metrics_to("http://127.0.0.1:9")  # nothing listens there
    apply_topology(ops_db, tmp_path)
    source = location_row(ops_db, "ccat/telescope_computer")
    file_random_observation(ops_db, Path(source.root_path), [1000, 2000])
    packaging.plan_packages(ops_db, source)
    with caplog.at_level(logging.WARNING, logger="ccat_operators.metrics"):
        result = packaging.write_packages(ops_db, source)
    assert result.failed == {} and len(result.completed) == 1
    assert "metrics: could not write packaging" in caplog.text


def test_disk_usage_is_measured(ops_db: OpsDb, data_root: Path, tmp_path: Path, victoria_metrics: str,
                                metrics_to) -> None:  # fmt: skip
    metrics_to(victoria_metrics)
    apply_topology(ops_db, tmp_path)
    usage = monitoring.disk_usage(location_row(ops_db, "cologne/buffer"))
    assert 0 < usage["used_fraction"] < 1 and usage["total_bytes"] > usage["used_bytes"]
    series = exported(
        victoria_metrics,
        "disk_usage_used_fraction",
        lambda found: any(x["metric"].get("site") == "cologne" for x in found),
    )
    assert any(s["metric"]["location"] == "buffer" and s["metric"]["site"] == "cologne" for s in series)


def test_sweep_returns_only_abandoned_work(ops_db: OpsDb, ops_db_url: str, example_topology) -> None:
    ensure_obs_unit(ops_db)
    abandoned, alive, recent = insert_pending_packages(ops_db, 3)
    for package in (abandoned, alive, recent):
        assert states.start(ops_db, states.PACKAGE, package)
    ops_db.conn.execute(
        "UPDATE raw_data_package SET status_changed_at = now() - interval '5 hours' WHERE id = ANY(%s)",
        ([abandoned, alive],),
    )
    from datetime import timedelta

    with OpsDb.connect(ops_db_url) as worker, states.lease(worker, states.PACKAGE, alive) as held:
        assert held
        lines = monitoring.sweep_stuck(ops_db, timedelta(hours=2))
    assert lines == [lines[0]] and f"raw_data_package {abandoned}: IN_PROGRESS since" in lines[0]
    assert states.status_of(ops_db, states.PACKAGE, abandoned) == Status.PENDING
    assert states.status_of(ops_db, states.PACKAGE, alive) == Status.IN_PROGRESS  # its worker is alive
    assert states.status_of(ops_db, states.PACKAGE, recent) == Status.IN_PROGRESS  # not stuck yet


def test_health_summary(ops_db: OpsDb, example_topology) -> None:
    ensure_obs_unit(ops_db)
    insert_pending_packages(ops_db, 4)
    health = monitoring.health_summary(ops_db)
    assert health.counts["raw_data_package"] == {"PENDING": 4}
    assert health.oldest_waiting[0] == "raw_data_package PENDING"
    assert health.lines()[-1] == "needing intervention: 0"


def test_stale_incomplete_uploads_under_the_prefix_are_aborted_and_fresh_ones_left_alone(
    ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server, victoria_metrics: str, metrics_to,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from datetime import timedelta

    metrics_to(victoria_metrics)
    pipeline.setup(ops_db, tmp_path, s3_server)
    pipeline.s3_connections(monkeypatch, s3_server)
    bucket = f"ccat-sweep-{tmp_path.name[-8:].lower().replace('_', '-')}"
    ops_db.conn.execute("UPDATE data_location SET s3_bucket = %s, s3_prefix = 'archive/' WHERE name = 'lta'", (bucket,))
    lta = location_row(ops_db, "cologne/lta")
    client = s3_server.client()
    assert monitoring.sweep_stale_uploads(lta, timedelta(0)) == []  # no bucket yet: nothing to sweep
    client.create_bucket(Bucket=bucket)
    # Someone's upload under the archive's prefix, with a part; another outside the prefix.
    uploads = {}
    for key in ("archive/raw_data_packages/x.tar", "elsewhere/y.tar"):
        uploads[key] = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        client.upload_part(Bucket=bucket, Key=key, UploadId=uploads[key], PartNumber=1, Body=b"p" * 6000)

    def incomplete() -> set[str]:
        return {upload["Key"] for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}

    assert monitoring.sweep_stale_uploads(lta, timedelta(days=1)) == []  # still fresh
    assert incomplete() == set(uploads)
    lines = monitoring.sweep_stale_uploads(lta, timedelta(0))
    assert len(lines) == 1 and lines[0].startswith(f"s3://{bucket}/archive/raw_data_packages/x.tar upload ")
    assert lines[0].endswith("6000 bytes in parts -> aborted")
    assert incomplete() == {"elsewhere/y.tar"}  # not under the location's prefix: not ours to judge
    series = exported(victoria_metrics, "s3_stale_uploads_aborted_bytes",
                      lambda found: any(6000 in s["values"] for s in found))  # fmt: skip
    assert any(s["metric"] == {"__name__": "s3_stale_uploads_aborted_bytes", "site": "cologne", "location": "lta"}
               and 6000 in s["values"] for s in series)  # fmt: skip


@pytest.mark.airflow
def test_monitoring_dag_sweeps_each_archive_on_its_queue_and_leaves_fresh_uploads(
    airflow_db, ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, s3_server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    _, topology_file = pipeline.setup(ops_db, tmp_path, s3_server)
    pipeline.s3_connections(monkeypatch, s3_server)
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    bucket = f"ccat-dag-sweep-{tmp_path.name[-8:].lower().replace('_', '-')}"
    ops_db.conn.execute("UPDATE data_location SET s3_bucket = %s WHERE name = 'lta'", (bucket,))
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    upload = client.create_multipart_upload(Bucket=bucket, Key="raw_data_packages/running.tar")["UploadId"]

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("ccat_monitoring")
    sweeps = {task.task_id: task for task in dag.tasks if task.task_id.startswith("sweep_stale_uploads_")}
    assert {task_id: (task.queue, task.older_than_hours) for task_id, task in sweeps.items()} == {
        "sweep_stale_uploads_cologne_lta": ("cologne_lta_monitoring", 24),
        "sweep_stale_uploads_us_lta": ("us_lta_monitoring", 24),
    }
    run = dag.test()
    assert run.state == "success"
    states_of = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert {states_of[task_id] for task_id in sweeps} == {"success"}  # ran, not skipped
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [found["UploadId"] for found in left] == [upload]  # younger than 24 hours: left alone
