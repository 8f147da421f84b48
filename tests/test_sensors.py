"""Sensors that wait on ops-db: what "archived" means, the trigger, deferral, and the wait in a running triggerer.

The unit tests run the sensor's ``execute`` / ``execute_complete`` and the trigger's
``run()`` against a real ops-db of their own, changing it from the test while the trigger
polls. The last test starts Airflow as ``make up`` does (:class:`LocalAirflow`: api-server,
scheduler, dag-processor and triggerer, LocalExecutor with a single slot) and stages an
observation that is filed but not archived: the wait is deferred and frees the slot, and
the run finishes once the test archives the observation in-process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from ccat_dev.local_airflow import LocalAirflow
from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port
from ccat_dev.s3 import LocalS3
from ccat_operators import packaging, states, status
from ccat_operators.opsdb import OpsDb
from ccat_operators.sensors.ops_db import DEFERRAL_GRACE, ObservationsArchivedSensor
from ccat_operators.sensors.staging import StagingRequestSensor
from ccat_operators.triggers.ops_db import ObservationsArchivedTrigger, archive_state
from tests import pipeline
from tests.helpers import file_random_observation, location_row

pytestmark = pytest.mark.airflow

TRIGGER = "ccat_operators.triggers.ops_db.ObservationsArchivedTrigger"
#: Two files of one observation, each in a package of its own (package_size_limit 300KB).
SIZES = [200_000, 150_000]


# --- a world of filed observations ------------------------------------------------------


@pytest.fixture
def world(ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The local topology (no S3 needed: archive copies are recorded as the archive stage records them)."""
    pipeline.setup(ops_db, tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    return ops_db


def file_observation(db: OpsDb, minute: int = 0, obs_unit: str = "orion_map") -> int:
    source = Path(location_row(db, "ccat/telescope_computer").root_path)
    file_random_observation(db, source, SIZES, obs_unit=obs_unit, minute=minute)
    return db.conn.execute("SELECT max(id) AS id FROM executed_obs_unit").fetchone()["id"]


def package_all(db: OpsDb) -> None:
    source = location_row(db, "ccat/telescope_computer")
    packaging.plan_packages(db, source)
    assert packaging.write_packages(db, source).failed == {}


def packages_of(db: OpsDb, observation: int) -> list[dict]:
    return db.conn.execute(
        "SELECT id, name, relative_path, checksum FROM raw_data_package WHERE executed_obs_unit_id = %s ORDER BY id",
        (observation,),
    ).fetchall()


def record_archive_copies(db: OpsDb, observation: int, site: str, only: int | None = None) -> list[int]:
    """Verified copies at ``site``'s archive, recorded as the archive stage records an upload it verified."""
    lta = location_row(db, f"{site}/lta")
    packages = packages_of(db, observation)[:only]
    return [states.record_package_copy(db, lta.id, p["id"], p["relative_path"], p["checksum"]) for p in packages]


def test_an_observation_is_archived_only_when_every_file_has_verified_copies_in_enough_active_archives(
    world: OpsDb,
) -> None:
    db = world
    observation = file_observation(db)

    def state(min_archives: int = 1):
        return archive_state(db, [observation], min_archives)

    assert not state().archived and state().waiting_reason() == "waiting for 2 files to be packaged and archived"
    assert state().missing() == f"observation {observation}: 2 of 2 files not packaged yet"
    package_all(db)
    assert not state().archived and state().waiting_reason() == "waiting for 2 packages to be archived"

    record_archive_copies(db, observation, "cologne", only=1)
    assert state().waiting_reason() == "waiting for 1 package to be archived"
    cologne = record_archive_copies(db, observation, "cologne")
    assert state().archived and state().summary() == {
        "observations": [observation], "files": 2, "packages": 2, "min_archives": 1,
    }  # fmt: skip
    assert not state(2).archived and state(2).waiting_reason() == "waiting for 2 packages to be archived in 2 archives"
    assert "2 of 2 packages not in 2 archives yet" in state(2).missing()

    # Copies that do not count: lost, not verified, in an archive no longer active.
    states.move(db, states.COPY, cologne[0], "PRESENT", "LOST", "gone")
    assert not state().archived
    states.record_package_copy(db, location_row(db, "cologne/lta").id, packages_of(db, observation)[0]["id"], "x", None)
    db.conn.execute("UPDATE physical_copy SET verified_at = NULL WHERE id = %s", (cologne[1],))
    assert state().waiting_reason() == "waiting for 1 package to be archived"
    db.conn.execute("UPDATE physical_copy SET verified_at = now() WHERE id = %s", (cologne[1],))
    assert state().archived
    db.conn.execute("UPDATE data_location SET active = false WHERE name = 'lta' AND site_id = "
                    "(SELECT id FROM site WHERE short_name = 'cologne')")  # fmt: skip
    assert not state().archived and state().active_archives == 1

    # Files filed later into the same observation keep it waiting until they are packaged and archived too.
    record_archive_copies(db, observation, "us")
    assert state().archived
    source = Path(location_row(db, "ccat/telescope_computer").root_path)
    file_random_observation(db, source, SIZES, module="350GHz")
    assert archive_state(db, [observation], 1).waiting_reason() == "waiting for 2 files to be packaged and archived"
    assert "2 of 4 files not packaged yet" in state().missing()
    package_all(db)
    assert state().waiting_reason() == "waiting for 2 packages to be archived"
    record_archive_copies(db, observation, "us")
    assert state().archived and state().summary()["files"] == 4

    empty = db.conn.execute(
        "INSERT INTO executed_obs_unit (obs_unit_id, start_time) SELECT id, now() FROM obs_unit LIMIT 1 RETURNING id"
    ).fetchone()["id"]
    nothing = archive_state(db, [empty], 1)
    assert not nothing.archived and nothing.missing() == f"observation {empty}: no files filed"


# --- the trigger --------------------------------------------------------------------------


def a_trigger(observation_ids: list[int], deadline: datetime | None = None, **kwargs) -> ObservationsArchivedTrigger:
    return ObservationsArchivedTrigger(
        observation_ids=observation_ids,
        min_archives=kwargs.pop("min_archives", 1),
        poll_interval=kwargs.pop("poll_interval", 0.2),
        deadline=(deadline or datetime.now(UTC) + timedelta(minutes=2)).isoformat(),
        ccat_ops_db_conn_id=kwargs.pop("ccat_ops_db_conn_id", "ccat_ops_db"),
    )


def test_the_trigger_serializes_to_its_classpath_and_round_trips_through_airflow() -> None:
    from airflow._shared.module_loading import import_string
    from airflow.models.trigger import Trigger
    from airflow.serialization.decoders import smart_decode_trigger_kwargs

    trigger = a_trigger([12, 7], deadline=datetime(2026, 11, 21, 10, tzinfo=UTC), min_archives=2)
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER
    assert kwargs == {
        "observation_ids": [12, 7], "min_archives": 2, "poll_interval": 0.2,
        "deadline": "2026-11-21T10:00:00+00:00", "ccat_ops_db_conn_id": "ccat_ops_db",
    }  # fmt: skip
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    # What the triggerer gets: the row Airflow stores, decoded as the triggerer decodes it.
    row = Trigger.from_object(trigger)
    stored = {k: smart_decode_trigger_kwargs(v) for k, v in Trigger._decrypt_kwargs(row.encrypted_kwargs).items()}
    assert row.classpath == classpath and stored == kwargs


async def first_event(trigger: ObservationsArchivedTrigger, meanwhile=None, wait: float = 1.0, timeout: float = 30):
    """The trigger's first event; ``meanwhile()`` runs (in a thread) once the trigger has polled for ``wait`` s."""
    events = trigger.run()
    task = asyncio.create_task(anext(events))
    if meanwhile is not None:
        await asyncio.sleep(wait)
        assert not task.done(), f"the trigger fired too early: {task.result().payload}"
        await asyncio.to_thread(meanwhile)
    event = await asyncio.wait_for(task, timeout)
    await events.aclose()
    return event.payload


def test_the_trigger_fires_when_the_last_copy_is_recorded(world: OpsDb, ops_db_url: str) -> None:
    db = world
    observation = file_observation(db)
    package_all(db)
    record_archive_copies(db, observation, "cologne")

    def archive_at_us() -> None:
        with OpsDb.connect(ops_db_url) as other:  # another worker's connection, as the archive stage's
            record_archive_copies(other, observation, "us")

    payload = asyncio.run(first_event(a_trigger([observation], min_archives=2), meanwhile=archive_at_us))
    assert payload == {
        "status": "archived",
        "summary": {"observations": [observation], "files": 2, "packages": 2, "min_archives": 2},
    }


def test_the_trigger_waits_for_files_not_packaged_yet(world: OpsDb, ops_db_url: str) -> None:
    db = world
    observation = file_observation(db)

    def package_and_archive() -> None:
        with OpsDb.connect(ops_db_url) as other:
            package_all(other)
            record_archive_copies(other, observation, "cologne")

    payload = asyncio.run(first_event(a_trigger([observation]), meanwhile=package_and_archive))
    assert payload["status"] == "archived" and payload["summary"]["packages"] == 2


def test_the_trigger_gives_up_at_its_deadline_naming_what_is_missing(world: OpsDb) -> None:
    db = world
    observation = file_observation(db)
    package_all(db)
    record_archive_copies(db, observation, "cologne", only=1)
    names = [p["name"] for p in packages_of(db, observation)]
    payload = asyncio.run(first_event(a_trigger([observation], deadline=datetime.now(UTC) + timedelta(seconds=1))))
    assert payload["status"] == "timeout" and payload["last_error"] is None
    assert payload["missing"] == f"observation {observation}: 1 of 2 packages not in 1 archive yet ({names[1]})"
    assert payload["reason"] == "waiting for 1 package to be archived"


def test_an_undefined_connection_is_an_error_event_not_a_wait(world: OpsDb) -> None:
    payload = asyncio.run(first_event(a_trigger([1], ccat_ops_db_conn_id="no_such_connection")))
    assert payload["status"] == "error" and "no_such_connection" in payload["message"]


def test_an_unreachable_ops_db_is_waited_out_until_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OPS_DB_DOWN", f"postgresql://ccat@127.0.0.1:{free_port()}/ops")
    trigger = a_trigger([1], deadline=datetime.now(UTC) + timedelta(seconds=1), ccat_ops_db_conn_id="ops_db_down")
    payload = asyncio.run(first_event(trigger))
    assert payload["status"] == "timeout" and payload["missing"] == "unknown: ops-db never answered"
    assert "connection" in payload["last_error"].lower()
    assert "password" not in json.dumps(trigger.serialize())


# --- the sensor ---------------------------------------------------------------------------


def a_sensor(**kwargs) -> ObservationsArchivedSensor:
    return ObservationsArchivedSensor(task_id="wait_for_archive", poke_interval=5, timeout=3600, **kwargs)


def test_the_sensor_defers_to_the_trigger_when_not_archived(world: OpsDb) -> None:
    observation = file_observation(world)
    sensor = a_sensor(observations=[observation])
    assert "hook" not in vars(sensor), "the hook is built when the task runs, not when the DAG is parsed"
    before = datetime.now(UTC)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ObservationsArchivedTrigger) and deferred.value.method_name == "execute_complete"
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER and kwargs["observation_ids"] == [observation] and kwargs["poll_interval"] == 5
    assert kwargs["ccat_ops_db_conn_id"] == "ccat_ops_db"
    assert (
        before + timedelta(hours=1)
        <= datetime.fromisoformat(kwargs["deadline"])
        <= datetime.now(UTC) + timedelta(hours=1)
    )
    assert deferred.value.timeout == timedelta(hours=1) + DEFERRAL_GRACE
    assert deferred.value.kwargs == {"accepted": {}, "timeout": 3600}


def test_the_sensor_succeeds_at_once_when_already_archived(world: OpsDb) -> None:
    observation = file_observation(world)
    package_all(world)
    record_archive_copies(world, observation, "us")
    result = a_sensor(observations=[observation]).execute({})
    assert result == {"observations": [observation], "files": 2, "packages": 2, "min_archives": 1}


def test_the_sensor_names_observations_by_obs_unit_and_days(world: OpsDb) -> None:
    first = file_observation(world, minute=0, obs_unit="crab")
    second = file_observation(world, minute=5, obs_unit="crab")
    with pytest.raises(TaskDeferred) as deferred:
        a_sensor(obs_unit="crab", from_date="2026-11-20", to_date="2026-11-20").execute({})
    assert deferred.value.trigger.observation_ids == [first, second]
    with pytest.raises(AirflowFailException, match="no observation of obs unit 'crab' in the given dates"):
        a_sensor(obs_unit="crab", from_date="2026-11-21").execute({})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observations": [999_999]}, "unknown observation id(s): 999999"),
        ({"obs_unit": "nothing"}, "no observation of obs unit 'nothing'"),
        ({}, "name the observations"),
        ({"observations": "12"}, "is not a list of observation ids"),
        ({"observations": [1], "min_archives": 3}, "min_archives=3 can never be met: ops-db has 2 active"),
        ({"observations": [1], "min_archives": 0}, "min_archives: 0 must be at least 1"),
    ],
)
def test_the_sensor_fails_at_once_without_deferring(world: OpsDb, kwargs: dict, message: str) -> None:
    file_observation(world)  # id 1
    with pytest.raises(AirflowFailException) as failed:
        a_sensor(**kwargs).execute({})
    assert message in str(failed.value)


def test_execute_complete_returns_what_was_found_or_fails_saying_why() -> None:
    sensor = a_sensor(observations=[4])
    summary = {"observations": [4], "files": 2, "packages": 1, "min_archives": 1}
    assert sensor.execute_complete({}, {"status": "archived", "summary": summary}, {}, 60) == summary
    timeout = {"status": "timeout", "missing": "observation 4: 1 of 1 packages not in 1 archive yet (p)",
               "reason": "waiting for 1 package to be archived", "last_error": None}  # fmt: skip
    with pytest.raises(AirflowSensorTimeout, match=r"not archived after 1d: still missing: observation 4: 1 of 1"):
        sensor.execute_complete({}, timeout, {}, 86400)
    with pytest.raises(AirflowException, match="waiting for the observations failed: ops-db connection"):
        sensor.execute_complete({}, {"status": "error", "message": "ops-db connection 'x': not defined"})


# --- ccat_staging's wait ------------------------------------------------------------------


def staging_context(**params) -> dict:
    ti = SimpleNamespace(dag_id="ccat_staging", task_id="wait_for_archive_cologne_ramses", run_id="manual__1",
                         map_index=-1, try_number=1)  # fmt: skip
    return {"params": {"location": "cologne/ramses", "requested_by": "ada", **params}, "ti": ti}


def staging_sensor() -> StagingRequestSensor:
    return StagingRequestSensor(task_id="wait_for_archive_cologne_ramses", location="cologne/ramses", poke_interval=5)


def jobs(db: OpsDb) -> list[dict]:
    return db.conn.execute("SELECT id, name, status, failure_reason FROM staging_job ORDER BY id").fetchall()


def test_a_refused_staging_request_fails_at_once_and_records_nothing(world: OpsDb) -> None:
    file_observation(world)
    for params, message in [
        ({"observations": [999_999]}, "unknown observation id(s): 999999"),
        ({"observations": [1], "timeout": "99d"}, "timeout: '99d' is longer than the maximum of 30d"),
        ({"observations": [1], "location": "cologne/buffer"}, None),
    ]:
        context = staging_context(**params)
        if message is None:  # another location's task
            with pytest.raises(AirflowSkipException):
                staging_sensor().execute(context)
            continue
        with pytest.raises(AirflowFailException, match=re.escape(f"staging request refused: {message}")):
            staging_sensor().execute(context)
    assert jobs(world) == []


def test_a_staging_request_not_archived_yet_waits_as_a_job_and_fails_it_after_its_timeout(world: OpsDb) -> None:
    db = world
    observation = file_observation(db)
    package_all(db)
    context = staging_context(observations=[observation], timeout="2h")
    with pytest.raises(TaskDeferred) as deferred:
        staging_sensor().execute(context)
    (job,) = jobs(db)
    assert deferred.value.kwargs == {"accepted": {"job_id": job["id"], "job": job["name"]}, "timeout": 7200}
    assert datetime.fromisoformat(deferred.value.trigger.serialize()[1]["deadline"]) > datetime.now(UTC) + timedelta(
        minutes=119
    )
    assert job["status"] == "PENDING"
    assert job["failure_reason"].startswith("waiting for 2 packages to be archived (gives up at ")
    report = status.report(db)
    assert f"staging_job {job['name']}: waiting for 2 packages to be archived" in report
    assert "needing intervention: 0" in report

    # Asked again while it waits: the same job, still waiting.
    with pytest.raises(TaskDeferred):
        staging_sensor().execute(context)
    assert [j["id"] for j in jobs(db)] == [job["id"]]

    # The timeout: the job is FAILED with what is missing, and ccat status says what to do.
    event = {"status": "timeout", "missing": f"observation {observation}: 2 of 2 packages not in 1 archive yet",
             "reason": "waiting for 2 packages to be archived", "last_error": None}  # fmt: skip
    with pytest.raises(AirflowSensorTimeout, match="not archived after 2h"):
        staging_sensor().execute_complete(context, event, **deferred.value.kwargs)
    (failed,) = jobs(db)
    assert failed["status"] == "FAILED" and "2 of 2 packages not in 1 archive yet" in failed["failure_reason"]
    assert f"ccat retry staging {job['id']}" in status.report(db)

    # Asked again later: waiting again, then archived -> ready, and the result names the job for stage_to_*.
    with pytest.raises(TaskDeferred):
        staging_sensor().execute(context)
    assert jobs(db)[0]["status"] == "PENDING" and jobs(db)[0]["failure_reason"].startswith("waiting for 2 packages")
    record_archive_copies(db, observation, "cologne")
    result = staging_sensor().execute(context)
    assert result == {"observations": [observation], "files": 2, "packages": 2, "min_archives": 1,
                      "job_id": job["id"], "job": job["name"]}  # fmt: skip


# --- with the triggerer running, as `make up` runs Airflow ---------------------------------

WAIT_TASK = "wait_for_archive_cologne_ramses"
STAGE_TASK = "stage_to_cologne_ramses"


@pytest.fixture(scope="module")
def stack(postgres_server: LocalPostgres, migrated_template: str, tmp_path_factory: pytest.TempPathFactory):
    """LocalAirflow with one executor slot, its own ops-db, S3 as both archives; sites are local directories.

    Every port it listens on is a free one (api-server, the worker's and the triggerer's log
    servers), so it runs beside another engineer's stack. The test process takes part too:
    it runs the pipeline's stages in-process against the same ops-db, S3 and disks.
    """
    work = tmp_path_factory.mktemp("sensors")
    data_root = work / "data"
    s3 = LocalS3(work / "s3")
    s3.start()
    ops_db_url = postgres_server.create_database(f"sensors_{uuid.uuid4().hex[:8]}", template=migrated_template)
    metadata_url = postgres_server.create_database(f"airflow_{uuid.uuid4().hex[:8]}")
    airflow = None
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CCAT_DATA_ROOT", str(data_root))
            pipeline.s3_connections(patch, s3)
            with OpsDb.connect(ops_db_url) as db:
                _, topology_file = pipeline.setup(db, work, s3)
            env = {
                "CCAT_TOPOLOGY": str(topology_file),
                "CCAT_DATA_ROOT": str(data_root),
                "CCAT_TASK_RETRIES": "0",
                "CCAT_STAGING_POLL_INTERVAL": "2",
                "AIRFLOW_CONN_CCAT_OPS_DB": ops_db_url,
                "AIRFLOW__CORE__PARALLELISM": "1",  # one executor slot: a waiting task must not hold it
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                **{
                    f"AIRFLOW_CONN_CCAT_S3_{site}": os.environ[f"AIRFLOW_CONN_CCAT_S3_{site}"]
                    for site in ("COLOGNE", "US")
                },
            }
            airflow = LocalAirflow(work / "airflow", metadata_url.replace("postgresql://", "postgresql+psycopg://", 1),
                                   port=free_port(), env_overrides=env)  # fmt: skip
            airflow.start()
            with airflow.client("admin") as admin:
                airflow.wait_for_dags(admin, ["ccat_staging"])
                admin.patch("/dags/ccat_staging", json={"is_paused": False}).raise_for_status()
            yield SimpleNamespace(airflow=airflow, ops_db_url=ops_db_url)
    finally:
        if airflow is not None:
            airflow.stop()
        s3.stop()


def request_staging(client: httpx.Client, observation: int) -> str:
    conf = {"observations": [observation], "location": "cologne/ramses", "requested_by": "test", "timeout": "1h"}
    response = client.post("/dags/ccat_staging/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    return response.json()["dag_run_id"]


def task_state(client: httpx.Client, run_id: str, task_id: str) -> str | None:
    response = client.get(f"/dags/ccat_staging/dagRuns/{run_id}/taskInstances/{task_id}")
    response.raise_for_status()
    return response.json()["state"]


def wait_for(what: str, found, airflow: LocalAirflow, timeout: float = 180) -> None:
    """Poll ``found()`` until true; on timeout, fail with the scheduler's and triggerer's last words."""
    deadline = time.monotonic() + timeout
    while not found():
        airflow.check_alive()
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {name}\n{airflow.log(name)[-2000:]}" for name in ("scheduler", "triggerer"))
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{logs}")
        time.sleep(1)


def run_state(client: httpx.Client, run_id: str) -> str:
    return client.get(f"/dags/ccat_staging/dagRuns/{run_id}").json()["state"]


def newest_observation(db: OpsDb) -> int:
    return db.conn.execute("SELECT max(id) AS id FROM executed_obs_unit").fetchone()["id"]


def test_staging_waits_in_the_triggerer_holding_no_slot_then_stages_what_was_filed(stack) -> None:
    airflow = stack.airflow
    with OpsDb.connect(stack.ops_db_url) as db:
        source = Path(location_row(db, "ccat/telescope_computer").root_path)
        file_random_observation(db, source, [120_000, 40_000], obs_unit="ready", minute=0)
        ready = newest_observation(db)
        pipeline.archive_filed(db)
        later_files = file_random_observation(db, source, [90_000, 30_000], obs_unit="later", minute=10)
        later = newest_observation(db)
        processing_root = Path(location_row(db, "cologne/ramses").root_path)

    with airflow.client("admin") as admin:
        waiting = request_staging(admin, later)
        wait_for("the wait deferred", lambda: task_state(admin, waiting, WAIT_TASK) == "deferred", airflow)
        pool = admin.get("/pools/default_pool").json()
        assert (pool["running_slots"], pool["deferred_slots"]) == (0, 1), pool
        with OpsDb.connect(stack.ops_db_url) as db:
            (job,) = db.conn.execute("SELECT id, name, status, failure_reason FROM staging_job").fetchall()
            assert job["status"] == "PENDING"
            assert job["failure_reason"].startswith("waiting for 2 files to be packaged and archived (gives up at ")
            assert f"staging_job {job['name']}: waiting for 2 files to be packaged" in status.report(db)

        # The one executor slot is free: a request for archived data runs start to end meanwhile.
        ready_run = request_staging(admin, ready)
        wait_for("the archived observation staged", lambda: run_state(admin, ready_run) == "success", airflow)
        assert task_state(admin, waiting, WAIT_TASK) == "deferred"
        assert task_state(admin, waiting, STAGE_TASK) in (None, "no_status")

        with OpsDb.connect(stack.ops_db_url) as db:
            pipeline.archive_filed(db)  # packaged, bundled, sent, unpacked and archived by "other workers"
        wait_for("the waiting request staged", lambda: run_state(admin, waiting) in ("success", "failed"), airflow)
        assert run_state(admin, waiting) == "success"
        assert task_state(admin, waiting, WAIT_TASK) == "success"
        assert task_state(admin, waiting, STAGE_TASK) == "success"

    with OpsDb.connect(stack.ops_db_url) as db:
        row = db.conn.execute("SELECT status, failure_reason FROM staging_job WHERE id = %s", (job["id"],)).fetchone()
    assert (row["status"], row["failure_reason"]) == ("COMPLETED", None)
    for relative, content in later_files.items():
        assert (processing_root / job["name"] / relative).read_bytes() == content, relative
    assert not list(processing_root.rglob("*.part"))
