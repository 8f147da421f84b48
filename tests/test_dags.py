"""Airflow wiring: the dags folder parses cleanly, offline, and DAGs run against ops-db."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from ccat_operators.opsdb import OpsDb
from tests.conftest import EXAMPLE_TOPOLOGY, REPO

pytestmark = pytest.mark.airflow

#: DAGs that lay out their tasks per data location from the topology file.
TOPOLOGY_DAGS = {
    "ccat_packaging", "ccat_bundling", "ccat_transfer", "ccat_unpacking",
    "ccat_archive", "ccat_staging", "ccat_deletion", "ccat_audit", "ccat_filing",
}  # fmt: skip
#: DAGs that load whatever the topology file holds.
INDEPENDENT_DAGS = {"ccat_topology", "ccat_monitoring"}


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """Airflow's own metadata database (SQLite in the test AIRFLOW_HOME)."""
    from airflow.utils import db

    db.resetdb()


def load_dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dags_folder_parses_without_network_or_database(monkeypatch: pytest.MonkeyPatch) -> None:
    # ops-db "down": the connection points at a closed port, and any socket use fails.
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", "postgresql://ccat@127.0.0.1:9/nowhere")

    def refuse(*args, **kwargs):
        raise AssertionError(f"DAG parsing opened a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    dagbag = load_dagbag()
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == TOPOLOGY_DAGS | INDEPENDENT_DAGS


def test_topology_dag_migrates_and_applies(
    airflow_db, empty_db_url: str, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", empty_db_url)
    dag = load_dagbag().get_dag("ccat_topology")
    run = dag.test(run_conf={"topology_file": str(EXAMPLE_TOPOLOGY)})
    assert run.state == "success"
    with OpsDb.connect(empty_db_url) as db:
        assert db.fetch_one("data_location_by_key", site="cologne", name="lta").s3_bucket == "ccat-lta-cologne"
        assert len(db.fetch_all("active_locations", site=None, location=None)) == 7

    # Cleared and run again: same result, nothing changed.
    again = dag.test(run_conf={"topology_file": str(EXAMPLE_TOPOLOGY)})
    assert again.state == "success"


def test_topology_dag_fails_on_a_bad_file_and_applies_nothing(
    airflow_db, ops_db: OpsDb, ops_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    bad = tmp_path / "bad.yaml"
    bad.write_text("observatory: X\ntelescope: Y\nsites:\n  ccat:\n    locations:\n      b: {type: NOPE}\n")
    run = load_dagbag().get_dag("ccat_topology").test(run_conf={"topology_file": str(bad)})
    assert run.state == "failed"
    assert ops_db.fetch_all("sites") == []


def test_packaging_and_bundling_dags_run_through_airflow(
    airflow_db, ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import apply_topology, file_random_observation

    def fast_bundles(document: dict) -> None:
        document["sites"]["ccat"]["locations"]["buffer"]["settings"]["bundle_max_age"] = "0s"

    _, topology_file = apply_topology(ops_db, tmp_path, fast_bundles)
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    source = data_root / "ccat" / "telescope_computer"
    file_random_observation(ops_db, source, [10_000, 20_000], minute=0)
    file_random_observation(ops_db, source, [30_000], module="350GHz", minute=0)
    broken = file_random_observation(ops_db, source, [5_000, 5_000], minute=30)
    (source / sorted(broken)[0]).unlink()

    dagbag = load_dagbag()
    packaging_run = dagbag.get_dag("ccat_packaging").test()
    # The broken observation fails its own package (and so the task, without retries) ...
    assert packaging_run.state == "failed"
    statuses = ops_db.conn.execute("SELECT status, count(*) AS n FROM raw_data_package GROUP BY 1 ORDER BY 1")
    assert {r["status"]: r["n"] for r in statuses.fetchall()} == {"COMPLETED": 2, "FAILED": 1}

    # ... while the completed packages move on to bundling.
    bundling_run = dagbag.get_dag("ccat_bundling").test()
    assert bundling_run.state == "success"
    bundle = ops_db.conn.execute("SELECT * FROM data_transfer_package").fetchall()
    assert [b["status"] for b in bundle] == ["COMPLETED"]
    inner = ops_db.conn.execute(
        "SELECT count(*) AS n FROM raw_data_package WHERE data_transfer_package_id = %s", (bundle[0]["id"],)
    )
    assert inner.fetchone()["n"] == 2


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"location": "mars/base"}, "'mars/base' is not one of"),
        ({"observations": ["seven"]}, "'seven' is not of type 'integer'"),
        ({"start_date": "21/11/2026"}, "'21/11/2026' is not a 'date'"),
        ({"retention": "forever"}, "does not match"),
    ],
)
def test_staging_form_refuses_bad_params_clearly(airflow_db, conf: dict, message: str) -> None:
    dag = load_dagbag().get_dag("ccat_staging")
    with pytest.raises(Exception, match=message) as caught:
        dag.test(run_conf=conf)
    assert "ParamValidationError" in type(caught.value).__name__


def test_every_dag_is_documented_and_tagged() -> None:
    dagbag = load_dagbag()
    assert set(dagbag.dag_ids) == TOPOLOGY_DAGS | INDEPENDENT_DAGS
    for dag in dagbag.dags.values():
        assert dag.doc_md, f"{dag.dag_id} has no doc_md"
        assert "ccat" in dag.tags
    staging = dagbag.dags["ccat_staging"]  # get_dag() would ask the metadata DB
    assert staging.params.get_param("location").schema["enum"] == ["cologne/ramses"]


def test_a_stage_publishes_its_asset_only_when_it_finished_work(
    airflow_db, ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.sdk import AssetOrTimeSchedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    from ccat_operators.assets import PACKAGES_BUFFERED
    from tests.helpers import apply_topology, file_random_observation

    _, topology_file = apply_topology(ops_db, tmp_path)
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [10_000, 20_000], minute=0)

    def events() -> int:
        with create_session() as session:
            query = select(func.count()).select_from(AssetEvent).where(AssetEvent.source_dag_id == "ccat_packaging")
            return session.scalar(query)

    dagbag = load_dagbag()
    packaging = dagbag.get_dag("ccat_packaging")
    before = events()
    first = packaging.test()
    assert first.state == "success"
    announce = first.get_task_instance("announce_packages_buffered")
    assert announce.state == "success"
    assert events() == before + 1

    # Nothing new to package: the run succeeds, the announcement is skipped, no event.
    second = packaging.test()
    assert second.state == "success"
    assert second.get_task_instance("announce_packages_buffered").state == "skipped"
    assert events() == before + 1

    # The next stage listens: bundling runs on the asset or hourly, whichever is first.
    bundling = dagbag.get_dag("ccat_bundling")
    assert isinstance(bundling.timetable, AssetOrTimeSchedule)
    assert bundling.timetable.asset_condition.uri == PACKAGES_BUFFERED.uri


def test_observations_filed_over_http_start_packaging(
    airflow_db, ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    from ccat_operators import filing_requests
    from ccat_operators.assets import OBSERVATIONS_FILED
    from tests.helpers import apply_topology, file_random_observation
    from tests.test_api import manifest, write_observation

    _, topology_file = apply_topology(ops_db, tmp_path)
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    source = data_root / "ccat" / "telescope_computer"
    source.mkdir(parents=True, exist_ok=True)

    def events() -> int:
        with create_session() as session:
            query = select(func.count()).select_from(AssetEvent).where(AssetEvent.source_dag_id == "ccat_filing")
            return session.scalar(query)

    filing = load_dagbag().get_dag("ccat_filing")
    before = events()
    filing_requests.submit(ops_db, manifest(write_observation(source, "announced", [3000]), "announced"), "test")
    first = filing.test()
    assert first.get_task_instance("announce_observations_filed").state == "success"
    assert events() == before + 1

    # Filed by other means (ccat file), or the same request again: nothing new over HTTP, no event.
    file_random_observation(ops_db, source, [1000], minute=5)
    filing_requests.submit(ops_db, manifest(write_observation(source, "announced", [3000]), "announced"), "test")
    second = filing.test()
    assert second.get_task_instance("announce_observations_filed").state == "skipped"
    assert events() == before + 1
    assert load_dagbag().get_dag("ccat_packaging").timetable.asset_condition.uri == OBSERVATIONS_FILED.uri


def test_an_invalid_topology_fails_the_dags_laid_out_from_it_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    document["sites"]["cologne"]["locations"]["lta"]["type"] = "ARCHIVE"
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    at_fault = f"{topology_file}: sites.cologne.locations.lta.type: 'ARCHIVE' is not one of"

    dagbag = load_dagbag()
    # One import error per DAG file that lays out per location, each naming the file and key ...
    assert {Path(path).stem for path in dagbag.import_errors} == TOPOLOGY_DAGS
    for path, message in dagbag.import_errors.items():
        assert at_fault in message, path
    # ... while the DAGs that need no topology still load, documented and tagged.
    assert set(dagbag.dag_ids) == INDEPENDENT_DAGS
    for dag in dagbag.dags.values():
        assert dag.doc_md and "ccat" in dag.tags
    # Monitoring keeps its central tasks and says why the per-location ones are missing.
    monitoring = dagbag.dags["ccat_monitoring"]
    assert {task.task_id for task in monitoring.tasks} == {"sweep_stuck_work", "summarize_health"}
    assert at_fault in monitoring.doc_md

    # Fixed in place: every DAG loads again, with its per-location tasks.
    topology_file.write_text(EXAMPLE_TOPOLOGY.read_text())
    dagbag = load_dagbag()
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == TOPOLOGY_DAGS | INDEPENDENT_DAGS
    monitoring = dagbag.dags["ccat_monitoring"]
    assert "measure_disk_usage_cologne_buffer" in monitoring.task_ids
    assert str(topology_file) not in monitoring.doc_md


@pytest.mark.parametrize("archive_sites", [("cologne", "us"), ("cologne",)], ids=["two-archives", "one-archive"])
def test_bundling_and_transfer_lay_out_tasks_only_where_a_leg_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive_sites: tuple[str, ...]
) -> None:
    """A buffer no leg leaves from gets no bundling or transfer tasks; arrivals restart
    ccat_transfer only where they route onwards (secondary legs between archive sites)."""
    document = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    for site in set(document["sites"]) - {"ccat", *archive_sites}:
        del document["sites"][site]
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))

    dagbag = load_dagbag()
    assert dagbag.import_errors == {}
    bundling, transfer = dagbag.dags["ccat_bundling"], dagbag.dags["ccat_transfer"]
    onward = len(archive_sites) > 1  # a bundle reaching one archive site goes on to the other
    origins = {"ccat", *archive_sites} if onward else {"ccat"}
    assert {task.task_id.split(".")[0] for task in bundling.tasks} - {"announce_bundles_written"} == {
        f"{site}_buffer" for site in origins
    }
    assert {task.task_id for task in transfer.tasks if task.task_id.endswith("route_bundles")} == {
        f"{site}_buffer.route_bundles" for site in origins
    }
    condition = transfer.timetable.asset_condition  # an Asset, or AssetAny of several
    assets = {asset.name for asset in getattr(condition, "objects", [condition])}
    assert assets == ({"ccat_bundles_written", "ccat_bundles_transferred"} if onward else {"ccat_bundles_written"})
