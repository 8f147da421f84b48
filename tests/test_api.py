"""The HTTP filing API: instruments file observations over HTTP and follow them, against a running api-server.

One deployment for the module (:class:`LocalAirflow`: LocalExecutor, FAB auth manager, the
roles of include/auth/roles.yaml, the plugin ``plugins/ccat_api.py``) on its own ops-db;
the SOURCE location is a directory of real files on this machine, checked by the worker
that runs ``ccat_filing`` (here the LocalExecutor's). Every port the stack listens on is
a free one. The first tests need only ops-db: the worker's side of a filing request.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from ccat_dev.local_airflow import LocalAirflow
from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port
from ccat_operators import filing, filing_requests
from ccat_operators.filing_requests import Outcome
from ccat_operators.opsdb import OpsDb
from ccat_operators.roles import OBSERVATIONS_RESOURCE
from tests.helpers import apply_topology, location_row, write_file

pytestmark = pytest.mark.airflow

API = "/ccat/api/v1"
SOURCE = "ccat/telescope_computer"
SOURCE_QUEUE = "ccat_telescope_computer_raw_data_package_creation"


def sha256(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def write_observation(root: Path, obs_unit: str, sizes: list[int], seed: int = 0) -> dict[str, bytes]:
    """Real raw files under ``root``: ``{relative path: content}``."""
    rng = random.Random(f"{obs_unit}/{seed}")
    files = {f"primecam/{obs_unit}/280GHz/scan_{i:04d}.dat": rng.randbytes(size) for i, size in enumerate(sizes)}
    for relative, content in files.items():
        write_file(root, relative, content)
    return files


def manifest(files: dict[str, bytes], obs_unit: str, /, minute: int = 0, **changes) -> dict:
    """A valid manifest of ``files`` (the first with its checksum, the second with its size), then ``changes``."""
    entries = [{"path": path, "module": "280GHz"} for path in files]
    contents = list(files.values())
    entries[0]["checksum"] = sha256(contents[0])
    if len(entries) > 1:
        entries[1]["size"] = len(contents[1])
    document = {
        "location": SOURCE, "instrument": "Prime-Cam", "program": "commissioning", "obs_unit": obs_unit,
        "start_time": f"2026-11-21T04:{minute:02d}:00Z", "end_time": f"2026-11-21T04:{minute:02d}:30Z",
        "files": entries,
    }  # fmt: skip
    return document | changes


def recorded(db: OpsDb) -> dict[str, int]:
    """How many filing requests, observations and raw files ops-db holds."""
    return {table: db.conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]  # noqa: S608 - fixed names
            for table in ("filing_request", "executed_obs_unit", "raw_data_file")}  # fmt: skip


# --- the worker's side, on ops-db alone ---------------------------------------------------


@pytest.fixture
def source_root(ops_db: OpsDb, example_topology) -> Path:
    root = Path(location_row(ops_db, SOURCE).root_path)
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_a_request_is_filed_with_its_outcome_in_one_transaction(ops_db: OpsDb, source_root: Path) -> None:
    files = write_observation(source_root, "unit_map", [3000, 2000])
    submitted = filing_requests.submit(ops_db, manifest(files, "unit_map"), requested_by="test")
    assert (submitted.location, submitted.queue) == (SOURCE, SOURCE_QUEUE)
    assert recorded(ops_db) == {"filing_request": 1, "executed_obs_unit": 0, "raw_data_file": 0}

    location = location_row(ops_db, SOURCE)
    decided = filing_requests.decide_open_requests(ops_db, location.id, worker="w1")
    assert list(decided.accepted) == [submitted.id] and decided.refused == {}
    state = filing_requests.request_state(ops_db, submitted.id)
    assert (state.state, state.request.new_files, state.request.already_filed, state.request.worker) == (
        "ACCEPTED", 2, 0, "w1"
    )  # fmt: skip
    checksums = {row["relative_path"]: row["checksum"] for row in ops_db.conn.execute(
        "SELECT relative_path, checksum FROM raw_data_file WHERE executed_obs_unit_id = %s",
        (state.request.executed_obs_unit_id,))}  # fmt: skip
    assert checksums == {path: sha256(content) for path, content in files.items()}

    # Decided once: nothing is left to decide, and ops-db refuses rewriting the outcome.
    assert len(filing_requests.decide_open_requests(ops_db, location.id, worker="w2")) == 0
    with pytest.raises(psycopg.errors.CheckViolation, match="already decided"):
        ops_db.conn.execute("UPDATE filing_request SET outcome = 'REFUSED' WHERE id = %s", (submitted.id,))


def test_a_worker_that_fails_half_way_leaves_the_request_open_and_nothing_recorded(
    ops_db: OpsDb, source_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_observation(source_root, "crash_map", [1000])
    submitted = filing_requests.submit(ops_db, manifest(files, "crash_map"), requested_by="test")
    location = location_row(ops_db, SOURCE)
    real_file_observation = filing.file_observation

    def recorded_then_lost(db, observation, progress=None):
        real_file_observation(db, observation)  # the rows are written in the request's transaction...
        raise psycopg.OperationalError("server closed the connection unexpectedly")  # ... which then dies

    monkeypatch.setattr(filing, "file_observation", recorded_then_lost)
    with pytest.raises(psycopg.OperationalError):
        filing_requests.decide_open_requests(ops_db, location.id, worker="w1")
    assert filing_requests.request_state(ops_db, submitted.id).state == "PENDING"
    assert recorded(ops_db) == {"filing_request": 1, "executed_obs_unit": 0, "raw_data_file": 0}

    monkeypatch.setattr(filing, "file_observation", real_file_observation)
    assert list(filing_requests.decide_open_requests(ops_db, location.id, worker="w1").accepted) == [submitted.id]


def test_a_request_another_worker_holds_is_left_to_it(ops_db: OpsDb, ops_db_url: str, source_root: Path) -> None:
    first = filing_requests.submit(ops_db, manifest(write_observation(source_root, "a_map", [10]), "a_map"), "t")
    second = filing_requests.submit(ops_db, manifest(write_observation(source_root, "b_map", [10]), "b_map"), "t")
    location = location_row(ops_db, SOURCE)
    with OpsDb.connect(ops_db_url) as other, other.transaction():
        held = other.fetch_one("claim_filing_request", location_id=location.id)
        assert held.id == first.id
        decided = filing_requests.decide_open_requests(ops_db, location.id, worker="w2")
        assert list(decided.accepted) == [second.id]
    assert filing_requests.request_state(ops_db, first.id).state == "PENDING"


def test_a_run_follows_its_locations_filing_task_or_every_one_when_it_names_none() -> None:
    from ccat_operators.operators.filing import ChooseFilingLocationsOperator

    tasks = {SOURCE: "file_at_ccat_telescope_computer", "lab/disk": "file_at_lab_disk"}
    choose = ChooseFilingLocationsOperator(task_id="choose_locations", task_ids=tasks)
    assert choose.choose_branch({"params": {"location": SOURCE}}) == ["file_at_ccat_telescope_computer"]
    assert choose.choose_branch({"params": {"location": None}}) == list(tasks.values())  # the hourly sweep
    assert choose.choose_branch({"params": {"location": "mars/x"}}) == []


# --- the running api-server -------------------------------------------------------------


class Deployment:
    def __init__(self, airflow: LocalAirflow, ops_db_url: str, source: Path) -> None:
        self.airflow, self.ops_db_url, self.source = airflow, ops_db_url, source

    def db(self) -> OpsDb:
        return OpsDb.connect(self.ops_db_url)

    def api(self, username: str | None) -> httpx.Client:
        """A client of the filing API, logged in as ``username`` (password = name), or anonymous."""
        headers = {} if username is None else {"Authorization": f"Bearer {self.airflow.token(username, username)}"}
        return httpx.Client(base_url=f"{self.airflow.url}{API}", headers=headers, timeout=180)


@pytest.fixture(scope="module")
def deployment(
    postgres_server: LocalPostgres, migrated_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    work = tmp_path_factory.mktemp("api")
    data_root = work / "data"
    ops_db_url = postgres_server.create_database(f"api_{uuid.uuid4().hex[:8]}", template=migrated_template)
    metadata_url = postgres_server.create_database(f"airflow_{uuid.uuid4().hex[:8]}")
    with pytest.MonkeyPatch.context() as patch, OpsDb.connect(ops_db_url) as db:
        patch.setenv("CCAT_DATA_ROOT", str(data_root))
        _, topology_file = apply_topology(db, work)
        source = Path(location_row(db, SOURCE).root_path)
    env = {
        "CCAT_TOPOLOGY": str(topology_file),
        "CCAT_DATA_ROOT": str(data_root),
        "CCAT_TASK_RETRIES": "0",
        "AIRFLOW_CONN_CCAT_OPS_DB": ops_db_url,
        # Another stack may run on this machine: every port this one listens on is free.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    airflow = LocalAirflow(work / "airflow", metadata_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           port=free_port(), env_overrides=env)  # fmt: skip
    try:
        airflow.start()
        with airflow.client("admin") as admin:
            airflow.wait_for_dags(admin, ["ccat_filing", "ccat_packaging"])
        yield Deployment(airflow, ops_db_url, source)
    finally:
        airflow.stop()


def wait_for_decision(client: httpx.Client, request_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/filings/{request_id}")
        assert response.status_code == 200, response.text
        if response.json()["state"] != "PENDING":
            return response.json()
        assert time.monotonic() < deadline, f"filing request {request_id} still open: {response.json()}"
        time.sleep(1)


def wait_for_runs(client: httpx.Client, dag_id: str, timeout: float = 180) -> list[dict]:
    """Wait until every run of ``dag_id`` finished; return them."""
    deadline = time.monotonic() + timeout
    while True:
        runs = client.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
        if runs and all(run["state"] in ("success", "failed") for run in runs):
            return runs
        assert time.monotonic() < deadline, f"{dag_id} runs still going: {runs}"
        time.sleep(1)


def test_an_instrument_files_an_observation_and_follows_its_progress(deployment: Deployment) -> None:
    files = write_observation(deployment.source, "http_map", [250_000, 60_000, 5_000])
    document = manifest(files, "http_map")
    with deployment.api("instrument") as instrument:
        response = instrument.post("/observations", json=document)
        assert response.status_code == 202, response.text
        request = response.json()
        assert (request["state"], request["location"], request["queue"]) == ("PENDING", SOURCE, SOURCE_QUEUE)
        assert request["requested_by"] == "instrument"
        assert response.headers["location"].endswith(f"{API}/filings/{request['id']}")

        decided = wait_for_decision(instrument, request["id"])
        assert (decided["state"], decided["new_files"], decided["already_filed"]) == ("ACCEPTED", 3, 0), decided
        observation = decided["executed_obs_unit_id"]
        with deployment.db() as db:
            rows = db.conn.execute("SELECT relative_path, size_bytes, checksum FROM raw_data_file "
                                   "WHERE executed_obs_unit_id = %s", (observation,)).fetchall()  # fmt: skip
            ran = db.conn.execute("SELECT DISTINCT task_id, location FROM task_execution "
                                  "WHERE dag_id = 'ccat_filing'").fetchall()  # fmt: skip
        # Recorded as the files are: every checksum is of the bytes on disk.
        assert {r["relative_path"]: (r["size_bytes"], r["checksum"]) for r in rows} == {
            path: (len(content), sha256(content)) for path, content in files.items()
        }
        # Checked by the SOURCE location's task, on its raw_data_package_creation queue.
        assert {(r["task_id"], r["location"]) for r in ran} == {("file_at_ccat_telescope_computer", SOURCE)}

        progress = instrument.get(f"/observations/{observation}").json()
        assert progress | {"start_time": None, "end_time": None, "size_bytes": None} == {
            "id": observation, "program": "commissioning", "obs_unit": "http_map", "start_time": None,
            "end_time": None, "files": 3, "size_bytes": None, "files_waiting_for_packaging": 3, "packages": [],
            "stages": {}, "archived": False,
            "summary": f"observation {observation} (http_map 2026-11-21 04:00): 3 files waiting for packaging",
        }  # fmt: skip
        assert progress["size_bytes"] == 315_000

        # Filed again, waiting for the worker: 201, nothing new.
        again = instrument.post("/observations", json=document, params={"wait": 120})
        assert again.status_code == 201, again.text
        assert (again.json()["executed_obs_unit_id"], again.json()["new_files"], again.json()["already_filed"]) == (
            observation, 0, 3
        )  # fmt: skip
        assert again.headers["location"].endswith(f"{API}/observations/{observation}")

    with deployment.airflow.client("operator") as operator:
        tasks = operator.get("/dags/ccat_filing/tasks").json()["tasks"]
        assert {t["task_id"]: t["queue"] for t in tasks}["file_at_ccat_telescope_computer"] == SOURCE_QUEUE
        operator.patch("/dags/ccat_packaging", json={"is_paused": False}).raise_for_status()
        operator.post("/dags/ccat_packaging/dagRuns", json={"logical_date": None}).raise_for_status()
        assert {run["state"] for run in wait_for_runs(operator, "ccat_packaging")} == {"success"}
        operator.patch("/dags/ccat_packaging", json={"is_paused": True}).raise_for_status()

    with deployment.api("instrument") as instrument:
        progress = instrument.get(f"/observations/{observation}").json()
    packages = len(progress["packages"])
    assert packages >= 1 and progress["files_waiting_for_packaging"] == 0
    assert progress["stages"] == {"waiting for a bundle": packages} and not progress["archived"]
    assert progress["summary"].startswith(
        f"observation {observation} (http_map 2026-11-21 04:00): 0/{packages} packages archived, "
        f"{packages} waiting for a bundle for "
    )


BAD_MANIFESTS = {
    "unknown key": ({"files": [{"path": "primecam/bad_map/280GHz/scan_0000.dat", "module": "280GHz", "sise": 5}]},
                    "manifest: files[0].sise: unknown key (did you mean 'size'?"),
    "wrong type": ({"files": [{"path": "primecam/bad_map/280GHz/scan_0000.dat", "module": "280GHz", "size": "abc"}]},
                   "manifest: files[0].size: expected a non-negative integer, got 'abc'"),
    "files not a list": ({"files": 5}, "manifest: files: expected a list of at least one file, got 5"),
    "module a number": ({"files": [{"path": "primecam/bad_map/280GHz/scan_0000.dat", "module": 850}]},
                        "manifest: files[0].module: expected a string, got 850"),
    "end before start": ({"end_time": "2026-11-21T03:00:00Z"}, "manifest: end_time: 2026-11-21T03:00:00+00:00 is "
                                                                "before start_time"),
    "no time zone": ({"start_time": "2026-11-21T04:00:00"}, "manifest: start_time: expected an ISO 8601 timestamp"),
    "unknown location": ({"location": "mars/x"}, "unknown location 'mars/x'"),
    "not a SOURCE": ({"location": "cologne/buffer"}, "location 'cologne/buffer' is BUFFER/DISK, not a SOURCE disk"),
    "unknown instrument": ({"instrument": "Hubble"}, "unknown instrument 'Hubble'"),
    "unknown module": ({"files": [{"path": "primecam/bad_map/280GHz/scan_0000.dat", "module": "999GHz"}]},
                       "file 'primecam/bad_map/280GHz/scan_0000.dat': unknown module '999GHz' of Prime-Cam"),
    "path leaving the root": ({"files": [{"path": "../../etc/passwd", "module": "280GHz"}]},
                              "file '../../etc/passwd': path must be relative to the location root"),
    "absolute path": ({"files": [{"path": "/etc/passwd", "module": "280GHz"}]},
                      "file '/etc/passwd': path must be relative to the location root"),
}  # fmt: skip
BAD_BODIES = {
    "not JSON": (b'{"location": ', "manifest: line 1, column 14: not valid JSON"),
    "duplicate key": (b'{"location": "a", "location": "b"}', "manifest: not valid JSON: duplicate key 'location'"),
    "not UTF-8": (b'{"obs_unit": "\xff"}', "manifest: line 1: not UTF-8 text (byte 0xff)"),
    "not a mapping": (b"[]", "manifest: expected a mapping of location, instrument"),
}


@pytest.mark.parametrize("body", [*BAD_MANIFESTS, *BAD_BODIES])
def test_a_bad_manifest_is_refused_naming_the_field_and_nothing_is_recorded(deployment: Deployment, body: str) -> None:
    files = write_observation(deployment.source, "bad_map", [100])
    if body in BAD_MANIFESTS:
        changes, message = BAD_MANIFESTS[body]
        content = json.dumps(manifest(files, "bad_map", **changes)).encode()
    else:
        content, message = BAD_BODIES[body]
    with deployment.db() as db:
        before = recorded(db)
    with deployment.api("instrument") as instrument:
        response = instrument.post("/observations", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    refusal = response.json()
    assert refusal["detail"] == "filing refused, nothing recorded" and refusal["request"] is None
    assert any(message in problem for problem in refusal["problems"]), refusal["problems"]
    with deployment.db() as db:
        assert recorded(db) == before


def test_files_that_fail_on_the_source_host_refuse_the_whole_filing(deployment: Deployment, tmp_path: Path) -> None:
    files = write_observation(deployment.source, "wall_map", [2_000, 3_000])
    outside = tmp_path / "outside"
    write_file(outside, "secret.dat", b"not the observatory's")
    os.symlink(outside, deployment.source / "primecam" / "wall_map" / "escape")
    good, changed = list(files)
    document = manifest(files, "wall_map")
    document["files"][1]["checksum"] = sha256(b"what was written before")
    document["files"] += [{"path": "primecam/wall_map/escape/secret.dat", "module": "280GHz"},
                          {"path": "primecam/wall_map/280GHz/missing.dat", "module": "280GHz"}]  # fmt: skip
    with deployment.db() as db:
        before = recorded(db)
    with deployment.api("instrument") as instrument:
        response = instrument.post("/observations", json=document, params={"wait": 120})
        assert response.status_code == 422, response.text
        refusal = response.json()
        assert refusal["detail"] == "filing refused on the SOURCE host, nothing recorded"
        problems = refusal["problems"]
        assert len(problems) == 3, problems
        assert problems[0].startswith(f"file {changed!r}: checksum on disk is {sha256(files[changed])}")
        assert "'primecam/wall_map/escape/secret.dat'" in problems[1] and "outside the root" in problems[1]
        assert problems[2].startswith("file 'primecam/wall_map/280GHz/missing.dat': not a regular file")
        decided = instrument.get(f"/filings/{refusal['request']}").json()
    assert (decided["state"], decided["problems"], decided["executed_obs_unit_id"]) == ("REFUSED", problems, None)
    with deployment.db() as db:
        # All or nothing: the good file is not recorded either; only the request (with its outcome) is.
        assert recorded(db) == before | {"filing_request": before["filing_request"] + 1}
        assert db.fetch_all("raw_data_files_by_path", source_location_id=location_row(db, SOURCE).id,
                            paths=[good]) == []  # fmt: skip
        outcome = db.conn.execute("SELECT outcome FROM filing_request WHERE id = %s", (refusal["request"],))
        assert outcome.fetchone()["outcome"] == Outcome.REFUSED


def test_anonymous_callers_and_scientists_are_refused(deployment: Deployment) -> None:
    document = manifest(write_observation(deployment.source, "auth_map", [10]), "auth_map")
    with deployment.db() as db:
        before = recorded(db)
    with deployment.api(None) as anonymous:
        assert anonymous.post("/observations", json=document).status_code == 401
        assert anonymous.get("/filings/1").status_code == 401
        assert anonymous.get("/observations/1").status_code == 401
    with deployment.api("scientist") as scientist:
        refused = scientist.post("/observations", json=document)
        assert refused.status_code == 403 and OBSERVATIONS_RESOURCE in refused.json()["detail"]
        assert scientist.get("/filings/1").status_code == 403
        assert scientist.get("/observations/1").status_code == 403
    with deployment.db() as db:
        assert recorded(db) == before
    with deployment.api("operator") as operator:
        assert operator.get("/observations/999999").status_code == 404
        assert operator.get("/filings/0").status_code == 422


def test_an_instrument_can_do_nothing_else_in_airflow(deployment: Deployment) -> None:
    with deployment.airflow.client("instrument") as instrument:
        for dag_id in ("ccat_transfer", "ccat_filing", "ccat_staging"):
            triggered = instrument.post(f"/dags/{dag_id}/dagRuns", json={"logical_date": None})
            assert triggered.status_code == 403, (dag_id, triggered.text)
            assert instrument.get(f"/dags/{dag_id}").status_code == 403
            assert instrument.get(f"/dags/{dag_id}/dagRuns").status_code == 403
        listed = instrument.get("/dags")
        assert listed.status_code == 403, listed.text
        assert instrument.get("/pools").status_code == 403
        assert instrument.get("/connections").status_code == 403


def test_the_openapi_schema_is_served_and_names_the_models(deployment: Deployment) -> None:
    with deployment.api(None) as anonymous:
        schema = anonymous.get("/openapi.json").json()
        docs = anonymous.get("/docs")
    assert schema["info"]["title"] == "CCAT filing API"
    assert {"FilingManifest", "ManifestFile", "FilingRequest", "Refusal", "ObservationProgress", "PackageProgress",
            "Message"} <= set(schema["components"]["schemas"])  # fmt: skip
    post = schema["paths"]["/observations"]["post"]
    body, refused = post["requestBody"]["content"], post["responses"]["422"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/FilingManifest"}
    assert refused["application/json"]["schema"] == {"$ref": "#/components/schemas/Refusal"}
    assert set(schema["paths"]) == {"/observations", "/filings/{request_id}", "/observations/{observation_id}"}
    assert schema["servers"] == [{"url": API}]
    assert docs.status_code == 200 and f"{API}/openapi.json" in docs.text
