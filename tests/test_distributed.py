"""The whole pipeline on a real CeleryExecutor deployment, each site's worker in its own network.

Files filed at ``ccat`` end up archived in S3 through the real scheduler, and every task
that works on a location ran on that location's site worker (recorded in ops-db).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ccat_dev.postgres import LocalPostgres
from ccat_dev.s3 import LocalS3
from ccat_operators import queues
from ccat_operators.opsdb import OpsDb
from tests.cluster import AirflowCluster
from tests.helpers import apply_topology, file_random_observation, location_row
from tests.sitenet import SiteNetwork

pytestmark = pytest.mark.airflow

PIPELINE = ["ccat_packaging", "ccat_bundling", "ccat_transfer", "ccat_transfer", "ccat_unpacking", "ccat_archive"]


@pytest.fixture
def cluster(
    ops_db: OpsDb, ops_db_url: str, postgres_server: LocalPostgres, site_network: SiteNetwork, data_root: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):  # fmt: skip
    host = site_network.host_address()
    s3 = LocalS3(tmp_path / "s3", ip=host)
    s3.start()

    def settings(document: dict) -> None:
        locations = document["sites"]["ccat"]["locations"]
        locations["telescope_computer"]["settings"]["package_size_limit"] = "300KB"
        locations["buffer"]["settings"].update(bundle_max_age="0s", bundle_size_limit="1MB")
        for site in ("cologne", "us"):
            document["sites"][site]["locations"]["lta"]["endpoint_url"] = s3.endpoint_url

    loaded, topology_file = apply_topology(ops_db, tmp_path, settings)
    site_queues: dict[str, list[str]] = {}
    for location in loaded.locations:
        if location.active:
            served = queues.queues_for_location(location.site, location.name, location.type)
            site_queues.setdefault(location.site, []).extend(queue.name for queue in served)
    site_queues["cologne"].insert(0, "default")
    extra = {"CCAT_TOPOLOGY": str(topology_file), "CCAT_DATA_ROOT": str(data_root)}
    for site in ("cologne", "us"):
        extra[f"AIRFLOW_CONN_CCAT_SSH_{site.upper()}_BUFFER"] = site_network.ssh_connection(site)
        extra[f"AIRFLOW_CONN_CCAT_S3_{site.upper()}"] = json.dumps(
            {"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
             "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}
        )  # fmt: skip
    (tmp_path / "cluster").mkdir()
    cluster = AirflowCluster(tmp_path / "cluster", site_network, postgres_server, ops_db_url.rsplit("/", 1)[1],
                             site_queues, extra_env=extra)  # fmt: skip
    try:
        yield cluster.start(), s3
    finally:
        cluster.stop()
        s3.stop()


def test_files_filed_at_ccat_are_archived_by_the_site_workers(cluster, ops_db: OpsDb) -> None:
    airflow, s3 = cluster
    source = location_row(ops_db, "ccat/telescope_computer")
    filed = {}
    for minute in range(2):
        filed |= file_random_observation(ops_db, Path(source.root_path), [150_000, 90_000], minute=minute)
    airflow.wait_for_dags(sorted(set(PIPELINE)))
    for dag_id in PIPELINE:
        state = airflow.run_dag(dag_id)
        assert state == "success", f"{dag_id}: {state}\n{airflow.task_states(dag_id)}"

    packages = ops_db.conn.execute("SELECT * FROM raw_data_package").fetchall()
    assert packages and all(p["archived_at"] is not None for p in packages)
    client = s3.client()
    for package in packages:
        for site in ("cologne", "us"):
            bucket = location_row(ops_db, f"{site}/lta").s3_bucket
            head = client.head_object(Bucket=bucket, Key=package["relative_path"])
            assert head["ContentLength"] == package["size_bytes"]

    executions = ops_db.conn.execute("SELECT * FROM task_execution WHERE location IS NOT NULL").fetchall()
    assert {e["dag_id"] for e in executions} == set(PIPELINE)
    for execution in executions:
        assert execution["worker"] == execution["location"].split("/")[0], execution
    assert {e["worker"] for e in executions} == {"ccat", "cologne", "us"}

    costs = {row.dag_id: row for row in ops_db.fetch_all("task_cost_by_dag", since=datetime(2000, 1, 1, tzinfo=UTC))}
    assert set(costs) == set(PIPELINE), costs
    for cost in costs.values():
        assert cost.tasks > 0 and cost.cpu_seconds > 0 and cost.wall_seconds > 0, cost
    writes = [e for e in executions if "write_" in e["task_id"] and e["cpu_seconds"] is not None]
    assert writes and all(e["wall_seconds"] > 0 for e in writes), writes
