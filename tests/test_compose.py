"""docker-compose.yaml, checked structurally against the topology (no Docker engine here)."""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlparse

import pytest
import yaml

from ccat_operators import queues, topology
from ccat_operators.states import LocationType, StorageType
from tests.conftest import EXAMPLE_TOPOLOGY, REPO

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-init")  # fmt: skip


SHARED_ENVIRONMENT = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW_CONN_CCAT_OPS_DB",
    "CCAT_DATA_ROOT",
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def topo() -> topology.Topology:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CCAT_DATA_ROOT", "/data")  # what the compose environment sets
        return topology.load(EXAMPLE_TOPOLOGY)


def workers(compose: dict) -> dict[str, dict]:
    return {name: spec for name, spec in compose["services"].items() if name.startswith("airflow-worker-")}


def worker_queues(spec: dict) -> tuple[list[str], str]:
    argv = spec["command"].split()
    return argv[argv.index("--queues") + 1].split(","), argv[argv.index("--celery-hostname") + 1]


def test_the_usual_airflow_services_are_there(compose: dict) -> None:
    for name in (*AIRFLOW_SERVICES, "postgres", "redis", "s3", "influxdb", "grafana"):
        assert name in compose["services"], name
    assert compose["services"]["airflow-scheduler"]["command"] == "scheduler"
    assert compose["services"]["airflow-dag-processor"]["command"] == "dag-processor"


def test_every_location_queue_is_served_by_its_own_sites_worker_only(compose: dict, topo: topology.Topology) -> None:
    served: dict[str, list[str]] = {}
    for name, spec in workers(compose).items():
        names, hostname = worker_queues(spec)
        site = name.removeprefix("airflow-worker-")
        assert hostname == f"{site}@%h"
        for queue in names:
            served.setdefault(queue, []).append(site)
    expected: dict[str, str] = {}
    for location in topo.locations:
        if location.active:
            for queue in queues.queues_for_location(location.site, location.name, location.type):
                expected[queue.name] = location.site
    for queue, site in expected.items():
        assert served.get(queue) == [site], f"{queue} is served by {served.get(queue)}, expected [{site}]"
    assert served.pop("default") == ["cologne"]  # the central tasks (sweep, health summary)
    assert set(served) == set(expected), f"queues nobody routes to: {set(served) - set(expected)}"
    assert {name.removeprefix("airflow-worker-") for name in workers(compose)} == {s.short_name for s in topo.sites}


def test_each_worker_mounts_exactly_its_sites_storage(compose: dict, topo: topology.Topology) -> None:
    for name, spec in workers(compose).items():
        site = name.removeprefix("airflow-worker-")
        mounted = {volume.split(":")[1] for volume in spec["volumes"] if volume.split(":")[1].startswith("/data/")}
        wanted = {loc.storage_details["root_path"] for loc in topo.locations
                  if loc.site == site and loc.active and loc.storage == StorageType.DISK}  # fmt: skip
        assert mounted == wanted, name
    named = compose["volumes"]
    for spec in workers(compose).values():
        for volume in spec["volumes"]:
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, f"undeclared volume {source}"


def test_airflow_services_share_one_consistent_environment(compose: dict, topo: topology.Topology) -> None:
    services = {name: compose["services"][name] for name in AIRFLOW_SERVICES} | workers(compose)
    reference = services["airflow-scheduler"]["environment"]
    assert reference["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert len(reference["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 64
    api = urlparse(reference["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname in compose["services"] and api.port == 8080
    assert urlparse(reference["AIRFLOW__CELERY__BROKER_URL"]).hostname in compose["services"]
    for name, spec in services.items():
        environment = spec["environment"]
        for key in SHARED_ENVIRONMENT:
            assert environment[key] == reference[key], f"{name}: {key}"
    ops_db = urlparse(reference["AIRFLOW_CONN_CCAT_OPS_DB"])
    assert ops_db.hostname == "postgres" and ops_db.path == "/ccat_ops_db"
    assert "CREATE DATABASE ccat_ops_db" in (REPO / "include/compose/create-ops-db.sql").read_text()


def test_connections_point_at_services_that_exist(compose: dict, topo: topology.Topology) -> None:
    environment = compose["services"]["airflow-scheduler"]["environment"]
    for location in topo.locations:
        if location.type == LocationType.LONG_TERM_ARCHIVE:
            connection = json.loads(environment[f"AIRFLOW_CONN_{location.storage_details['conn_id'].upper()}"])
            assert urlparse(connection["extra"]["endpoint_url"]).hostname in compose["services"]
    receiving = {loc.site for loc in topo.locations if loc.type == LocationType.LONG_TERM_ARCHIVE}
    for site in receiving:
        connection = json.loads(environment[f"AIRFLOW_CONN_CCAT_SSH_{site.upper()}_BUFFER"])
        endpoint = compose["services"][connection["host"]]
        worker = compose["services"][f"airflow-worker-{site}"]
        buffer_volume = next(v for v in worker["volumes"] if v.endswith(f":/data/{site}/buffer"))
        assert buffer_volume in endpoint["volumes"], f"{site}: the SSH endpoint must write into the buffer volume"
    assert urlparse(environment["CCAT_S3_ENDPOINT"]).hostname in compose["services"]


def test_grafana_is_provisioned_with_the_dashboard(compose: dict) -> None:
    grafana = compose["services"]["grafana"]
    for volume in grafana["volumes"]:
        assert (REPO / volume.split(":")[0]).exists(), volume
    dashboard = json.loads((REPO / "include/grafana/dashboards/ccat.json").read_text())
    queries = " ".join(target["query"] for panel in dashboard["panels"] for target in panel["targets"])
    for measurement in ("transfer", "packaging", "archive", "disk_usage", "pipeline_state"):
        assert f'r._measurement == "{measurement}"' in queries


def test_the_deployment_uses_the_fab_roles(compose: dict) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
    script = compose["services"]["airflow-init"]["command"][-1].replace("$$", "$")  # compose's escaping
    assert "ccat auth sync" in script and "airflow users create --role Admin" in script
    syntax = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
