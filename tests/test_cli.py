"""Every user error of `ccat` is one line on stderr, exit 1, never a traceback, and fast."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port
from ccat_operators import opsdb, topology
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from ccat_operators.routing import Router, transfer_pool, transfer_site_pairs
from ccat_operators.rows import UnroutedBundleRow
from ccat_operators.states import LocationType
from tests.conftest import EXAMPLE_TOPOLOGY, REPO
from tests.helpers import write_file

FOREIGN_TOPOLOGY = REPO / "tests" / "foreign_topology.yaml"

CCAT = Path(sys.executable).parent / "ccat"
UNREACHABLE = "postgresql://ccat@127.0.0.1:9/nowhere"


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    """The message of the single ``ccat: error:`` line on stderr."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("ccat: error: ")
    return lines[0].removeprefix("ccat: error: ")


@pytest.fixture
def no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to connect to a database."""

    def refuse(*args, **kwargs):
        raise AssertionError("a connection was tried")

    monkeypatch.setattr(opsdb.psycopg, "connect", refuse)


BAD_URLS = [
    ("notaurl", "got 'notaurl'"),
    ("mysql://ccat:secret@db/ops", "got a mysql:// URL"),
    ("postgresql+psycopg://ccat:secret@db/ops", "got a postgresql+psycopg:// URL"),
    ("host=db nonsense=secret", 'invalid connection option "nonsense"'),
    ("postgresql://ccat:secret@db/ops?colour=blue", 'invalid URI query parameter: "colour"'),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_db_url_is_refused_before_connecting(url: str, message: str, no_connection, capsys) -> None:
    assert main(["status", "--db", url]) == 1
    error = one_line_error(capsys)
    assert error.startswith("--db: ")
    assert message in error
    assert "secret" not in error
    if "=" not in url and (not url.startswith("postgresql://")):
        assert "expected a postgresql://user@host:port/dbname URL" in error


@pytest.mark.parametrize("variable", opsdb.DSN_VARIABLES)
def test_bad_url_from_the_environment_names_the_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch, no_connection, capsys
) -> None:
    monkeypatch.setenv(variable, "mysql://x/y")
    assert main(["db", "status"]) == 1
    assert one_line_error(capsys) == (
        f"${variable}: expected a postgresql://user@host:port/dbname URL, got a mysql:// URL"
    )


def test_unconfigured_db_is_one_line(capsys) -> None:
    assert main(["queues"]) == 1
    assert one_line_error(capsys).startswith("ops-db is not configured: set CCAT_OPS_DB_URL")


def test_airflow_connection_uri_keeps_working(ops_db_url: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url.replace("postgresql://", "postgres://", 1))
    assert main(["db", "status"]) == 0
    assert "applied  0001_core_schema.sql" in capsys.readouterr().out


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_silent_server_times_out_in_one_line(silent_server: int, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CCAT_DB_CONNECT_TIMEOUT", "1")
    started = time.monotonic()
    assert main(["status", "--db", f"postgresql://ccat@127.0.0.1:{silent_server}/ops"]) == 1
    assert time.monotonic() - started < 4
    error = one_line_error(capsys)
    assert f"connection to 127.0.0.1 port {silent_server} timed out" in error
    assert "CCAT_DB_CONNECT_TIMEOUT" in error


def test_connect_timeout_defaults_to_ten_seconds_and_is_checked(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert opsdb.connect_timeout() == 10
    monkeypatch.setenv("CCAT_DB_CONNECT_TIMEOUT", "soon")
    assert main(["status", "--db", UNREACHABLE]) == 1
    assert one_line_error(capsys) == "$CCAT_DB_CONNECT_TIMEOUT: expected a whole number of seconds >= 1, got 'soon'"


def test_closed_port_is_one_line(capsys) -> None:
    assert main(["topology", "show", "--db", f"postgresql://ccat@127.0.0.1:{free_port()}/ops"]) == 1
    error = one_line_error(capsys)
    assert error.startswith("ops-db: connection failed:")
    assert "Connection refused" in error


def test_missing_database_is_one_line(empty_db_url: str, capsys) -> None:
    missing = empty_db_url.rsplit("/", 1)[0] + "/no_such_db"
    assert main(["status", "--db", missing]) == 1
    assert 'database "no_such_db" does not exist' in one_line_error(capsys)


def test_unmigrated_database_says_to_upgrade(empty_db_url: str, capsys) -> None:
    for argv in (["status"], ["topology", "show"], ["archive", "needs-intervention"]):
        assert main([*argv, "--db", empty_db_url]) == 1
        error = one_line_error(capsys)
        assert error.startswith("ops-db: relation ")
        assert error.endswith("does not exist: is its schema migrated? run `ccat db upgrade`")


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--observations", "-1"],
        ["status", "--observations", "0"],
        ["pools", "--slots", "0"],
        ["pools", "--slots", "-4"],
        ["pools", "--slots", "many"],
        ["archive", "clear", "--id", "-2"],
    ],
)
def test_counts_must_be_positive(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"error: argument {argv[-2]}: expected a whole number >= 1, got '{argv[-1]}'" in capsys.readouterr().err


def test_multi_problem_topology_error_is_one_line(tmp_path: Path, data_root: Path, capsys) -> None:
    document = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    document["sites"]["us"]["locations"]["lta"]["type"] = "ARCHIVE"
    document["sites"]["ccat"]["locations"]["buffer"]["type"] = "BUFFET"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    assert main(["topology", "check", str(bad)]) == 1
    error = one_line_error(capsys)
    assert f"{bad}: sites.ccat.locations.buffer.type: 'BUFFET' is not one of" in error
    assert f"; {bad}: sites.us.locations.lta.type: 'ARCHIVE' is not one of" in error


def manifest(path: str, **changes) -> dict:
    document = {
        "location": "ccat/telescope_computer",
        "instrument": "Prime-Cam",
        "program": "commissioning",
        "obs_unit": "orion_map",
        "start_time": "2026-11-20T03:00:00Z",
        "files": [{"path": path, "module": "280GHz"}],
    }
    return {**document, **changes}


def write_manifest(directory: Path, name: str, document: dict) -> Path:
    path = directory / name
    path.write_text(json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document))
    return path


def test_every_manifest_is_checked_before_connecting(tmp_path: Path, no_connection, capsys) -> None:
    bad_size = write_manifest(
        tmp_path, "a.yaml", manifest("a.dat", files=[{"path": "a.dat", "module": "280GHz", "size": "abc"}])
    )
    (tmp_path / "b.json").write_text('{"location": "ccat/telescope_computer",\n "files": [}')
    unknown_key = write_manifest(tmp_path, "c.yaml", {**manifest("c.dat"), "obs_unti": "x"})
    missing = tmp_path / "missing.yaml"
    argv = ["file", str(bad_size), str(tmp_path / "b.json"), str(unknown_key), str(missing), str(tmp_path)]
    assert main([*argv, "--db", UNREACHABLE]) == 1
    error = one_line_error(capsys)
    assert error.startswith("filing refused, nothing recorded: ")
    assert f"{bad_size}: files[0].size: expected a non-negative integer, got 'abc'" in error
    assert f"{tmp_path / 'b.json'}: line 2, column 12: not valid JSON: Expecting value" in error
    assert f"{unknown_key}: obs_unti: unknown key (did you mean 'obs_unit'?" in error
    assert f"{missing}: cannot read the manifest: No such file or directory" in error
    assert f"{tmp_path}: cannot read the manifest: Is a directory" in error


@pytest.fixture
def source_root(example_topology, data_root: Path) -> Path:
    root = data_root / "ccat" / "telescope_computer"
    root.mkdir(parents=True)
    return root


def test_one_command_is_one_transaction(
    ops_db_url: str, ops_db: OpsDb, source_root: Path, tmp_path: Path, capsys
) -> None:
    write_file(source_root, "a.dat", b"a" * 100)
    write_file(source_root, "b1.dat", b"b" * 100)
    good = write_manifest(tmp_path, "a.yaml", manifest("a.dat"))
    refused = write_manifest(
        tmp_path,
        "b.yaml",
        manifest(
            "b1.dat",
            obs_unit="m83",
            files=[{"path": "b1.dat", "module": "280GHz", "size": 7}, {"path": "b2.dat", "module": "280GHz"}],
        ),
    )
    assert main(["file", str(good), str(refused), "--db", ops_db_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing claims a.yaml was filed
    error = captured.err.splitlines()
    assert len(error) == 1
    assert f"{refused}: file 'b1.dat': size on disk is 100, filed as 7; {refused}: file 'b2.dat': " in error[0]
    for table in ("executed_obs_unit", "raw_data_file", "obs_unit"):
        assert ops_db.conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] == 0  # noqa: S608

    assert main(["file", str(good), "--db", ops_db_url]) == 0
    assert f"{good}: executed_obs_unit " in capsys.readouterr().out


def test_end_time_before_start_time_is_refused_not_a_constraint_error(tmp_path: Path, no_connection, capsys) -> None:
    path = write_manifest(tmp_path, "m.yaml", manifest("a.dat", end_time="2026-11-20T02:00:00Z"))
    assert main(["file", str(path), "--db", UNREACHABLE]) == 1
    assert one_line_error(capsys) == (
        f"filing refused, nothing recorded: {path}: end_time: 2026-11-20T02:00:00+00:00 "
        "is before start_time 2026-11-20T03:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--db", "notaurl"], "ccat: error: --db: expected a postgresql://"),
        (["status", "--db", UNREACHABLE], "ccat: error: ops-db: connection failed:"),
        (["file", "/nonexistent/m.yaml", "--db", UNREACHABLE], "/nonexistent/m.yaml: cannot read the manifest"),
    ],
)
def test_the_installed_command_prints_one_line(argv: list[str], message: str) -> None:
    started = time.monotonic()
    result = subprocess.run([str(CCAT), *argv], capture_output=True, text=True, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


# `ccat devdb`: the demo's server, found where `make demo`, `make up` and `make clean` find it ----------


def demo_settings(env: dict[str, str]) -> str:
    """Where scripts/demo.py (and so scripts/up.py, which imports it) puts its server in this environment."""
    code = "import demo; print(demo.STATE / 'postgres', demo.PORT)"
    result = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(REPO / "scripts")},
                            capture_output=True, text=True, check=True)  # fmt: skip
    return result.stdout.strip()


def test_devdb_honours_the_demo_state_dir_and_port(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    state = Path(tempfile.mkdtemp(prefix="ccat-test-devdb-")) / "state"
    state.parent.chmod(0o755)  # PostgreSQL runs as its own user
    port = free_port()
    monkeypatch.setenv("CCAT_STATE_DIR", str(state))
    monkeypatch.setenv("CCAT_DEMO_PORT", str(port))
    server = LocalPostgres(state / "postgres", port)
    try:
        assert demo_settings(dict(os.environ)) == f"{state / 'postgres'} {port}"
        assert main(["devdb", "start"]) == 0
        assert capsys.readouterr().out.strip() == f"postgresql://ccat@127.0.0.1:{port}/ccat_ops_db"
        assert server.is_running() and (state / "postgres" / "data" / "PG_VERSION").exists()
        assert main(["devdb", "stop"]) == 0
        assert not server.is_running()

        # `make clean` stops it wherever it is, and removes what the demo made there.
        assert main(["devdb", "start"]) == 0
        (state / "data").mkdir()
        (state / "topology.yaml").write_text("# the demo's adapted topology\n")
        cleaned = subprocess.run(["make", "clean"], cwd=REPO, env=dict(os.environ), capture_output=True, text=True)
        assert cleaned.returncode == 0, cleaned.stderr
        assert not server.is_running()
        assert not state.exists()
    finally:
        server.stop()
        shutil.rmtree(state.parent, ignore_errors=True)


def test_devdb_refuses_a_bad_demo_port_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CCAT_DEMO_PORT", "99999")
    assert main(["devdb", "stop"]) == 1
    assert one_line_error(capsys) == "$CCAT_DEMO_PORT: expected a TCP port number (1-65535), got '99999'"


# `ccat pools`: the pools of the legs routing makes, which are the transfer DAG's ------------------------

#: Expected (origin, destination) legs. The example: primary ccat -> cologne | us, secondary between those.
#: The foreign file: summit -> bonn; summit -> tokyo is relayed through bonn (summit -> bonn -> tokyo), and
#: after that relay tokyo -> bonn has nothing left to deliver (bonn's buffer already has the bundle).
LEGS = {
    EXAMPLE_TOPOLOGY: [("ccat", "cologne"), ("ccat", "us"), ("cologne", "us"), ("us", "cologne")],
    FOREIGN_TOPOLOGY: [("bonn", "tokyo"), ("summit", "bonn")],
}


@pytest.mark.airflow
@pytest.mark.parametrize("topology_file", list(LEGS), ids=["example", "foreign"])
def test_pools_are_the_pools_of_the_transfer_dags_sends(
    topology_file: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    assert main(["pools", "--topology", str(topology_file), "--slots", "2"]) == 0
    pools = json.loads(capsys.readouterr().out)
    assert sorted(pools) == sorted(transfer_pool(origin, destination) for origin, destination in LEGS[topology_file])
    assert {pool["slots"] for pool in pools.values()} == {2}

    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    dagbag = DagBag(dag_folder=str(REPO / "dags" / "ccat_transfer.py"))
    assert dagbag.import_errors == {}
    tasks = dagbag.dags["ccat_transfer"].tasks
    assert {task.pool for task in tasks if task.task_id.split(".")[-1].startswith("send_to_")} == set(pools)


@pytest.mark.parametrize("topology_file", list(LEGS), ids=["example", "foreign"])
def test_the_legs_of_the_pools_are_the_legs_the_router_makes(topology_file: Path, ops_db: OpsDb, data_root) -> None:
    loaded = topology.load(topology_file)
    topology.apply(ops_db, loaded)
    router = Router(ops_db)
    made = set()
    for location in loaded.locations:  # a bundle at every active buffer, once per round-robin position
        if location.active and location.type == LocationType.BUFFER:
            row = ops_db.fetch_one("data_location_by_key", site=location.site, name=location.name)
            for _ in router.lta_sites:
                bundle = UnroutedBundleRow(id=0, name="b", origin_location_id=row.id, origin_site_id=row.site_id)
                for leg in router.legs_for(bundle):
                    origin, destination = (router.location(leg.origin_location_id),
                                           router.location(leg.destination_location_id))  # fmt: skip
                    assert destination.active
                    made.add((origin.site, destination.site))
    assert sorted(made) == LEGS[topology_file] == transfer_site_pairs(loaded)
