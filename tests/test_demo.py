"""`make demo` on a topology other than the shipped one, and its refusals.

Runs ``scripts/demo.py`` (what ``make demo`` runs) in a fresh state directory on free
ports with ``CCAT_TOPOLOGY`` naming tests/foreign_topology.yaml: other site names, three
sites, two buffers at bonn (the preferred one inactive), a RELAY summit -> tokyo through
bonn, and production roots and S3 endpoints that the demo adapts to its machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port
from ccat_operators.opsdb import OpsDb
from tests.conftest import EXAMPLE_TOPOLOGY, REPO

pytestmark = pytest.mark.airflow

FOREIGN_TOPOLOGY = REPO / "tests" / "foreign_topology.yaml"


def demo_env(state: Path, ports: dict[str, int], topology_file: Path | None) -> dict[str, str]:
    """A newcomer's environment (no Airflow or ccat settings) with the state directory, ports and topology."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "CCAT_"))}
    env |= {"CCAT_STATE_DIR": str(state)} | {key: str(port) for key, port in ports.items()}
    if topology_file is not None:
        env["CCAT_TOPOLOGY"] = str(topology_file)
    return env


def run_demo(state: Path, ports: dict[str, int], topology_file: Path | None) -> subprocess.CompletedProcess:
    argv = [sys.executable, str(REPO / "scripts" / "demo.py")]
    env = demo_env(state, ports, topology_file)
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a refused demo prints (exit 1, nothing on stdout)."""
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def foreign_demo() -> Iterator[tuple[Path, dict[str, int], subprocess.CompletedProcess]]:
    """The demo, run once from nothing on the foreign topology; its database is stopped afterwards."""
    state = Path(tempfile.mkdtemp(prefix="ccat-test-demo-")) / "state"
    state.parent.chmod(0o755)  # PostgreSQL runs as its own user
    ports = {"CCAT_DEMO_PORT": free_port(), "CCAT_DEMO_S3_PORT": free_port()}
    try:
        yield state, ports, run_demo(state, ports, FOREIGN_TOPOLOGY)
    finally:
        LocalPostgres(state / "postgres", ports["CCAT_DEMO_PORT"]).stop()
        shutil.rmtree(state.parent, ignore_errors=True)


def ops_db(ports: dict[str, int]) -> OpsDb:
    return OpsDb.connect(f"postgresql://ccat@127.0.0.1:{ports['CCAT_DEMO_PORT']}/ccat_ops_db")


def test_demo_runs_on_a_foreign_topology_and_archives_everything(foreign_demo) -> None:
    state, ports, result = foreign_demo
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "ccat_staging (observation 1 -> bonn/cluster): success" in result.stdout
    with ops_db(ports) as db:
        packages = db.conn.execute("SELECT archived_at FROM raw_data_package").fetchall()
        assert packages and all(package["archived_at"] is not None for package in packages)
        archived = db.conn.execute(
            "SELECT l.name, count(*) AS copies FROM physical_copy AS c JOIN data_location AS l "
            "ON l.id = c.data_location_id WHERE l.location_type = 'LONG_TERM_ARCHIVE' AND c.status = 'PRESENT' "
            "GROUP BY l.name"
        ).fetchall()
        assert {row["name"]: row["copies"] for row in archived} == {"archive": len(packages), "vault": len(packages)}
        legs = db.conn.execute(
            "SELECT os.short_name || '/' || o.name AS origin, ds.short_name || '/' || d.name AS destination, "
            "r.name AS route, t.method, t.status FROM data_transfer AS t "
            "JOIN data_location AS o ON o.id = t.origin_location_id JOIN site AS os ON os.id = o.site_id "
            "JOIN data_location AS d ON d.id = t.destination_location_id JOIN site AS ds ON ds.id = d.site_id "
            "LEFT JOIN data_transfer_route AS r ON r.id = t.route_id"
        ).fetchall()
        staged = db.conn.execute("SELECT count(*) AS n FROM physical_copy WHERE status = 'STAGED'").fetchone()
    # Two bundles, round-robin: one to bonn (then on to tokyo), one relayed to tokyo through bonn's active buffer.
    assert {(leg["origin"], leg["destination"]) for leg in legs} == {
        ("summit/spool", "bonn/buffer"),
        ("bonn/buffer", "tokyo/inbox"),
    }
    assert "summit_to_tokyo_via_bonn" in {leg["route"] for leg in legs}
    assert {(leg["method"], leg["status"]) for leg in legs} == {("local", "COMPLETED")}
    assert staged["n"] > 0
    # Everything stayed inside the state directory: the file's own roots (/srv/ert/...) were never used.
    adapted = yaml.safe_load((state / "topology.yaml").read_text())
    assert adapted["sites"]["summit"]["locations"]["daq"]["root_path"] == str(state / "data" / "summit" / "daq")
    assert not Path("/srv/ert").exists()
    assert not (state / "data" / "bonn" / "old_buffer").exists()  # inactive: nothing runs there


def test_a_second_run_files_nothing_new(foreign_demo) -> None:
    state, ports, _ = foreign_demo
    result = run_demo(state, ports, FOREIGN_TOPOLOGY)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "already filed by an earlier run; nothing new to file" in result.stdout


def snapshot(ports: dict[str, int]) -> dict[str, list]:
    with ops_db(ports) as db:
        return {
            table: db.conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608 - fixed names
            for table in ("site", "data_location", "data_transfer_route", "raw_data_file", "raw_data_package")
        }


def tree(directory: Path) -> set[str]:
    return {str(path.relative_to(directory)) for path in directory.rglob("*") if "postgres" not in path.parts}


def test_another_topology_on_the_same_state_is_refused_without_a_change(foreign_demo) -> None:
    state, ports, _ = foreign_demo
    before, files, adapted = snapshot(ports), tree(state), (state / "topology.yaml").read_text()
    line = refusal(run_demo(state, ports, None))  # the shipped example
    assert line == (
        f"demo: cannot run on include/topology/ccat.yaml: the demo's state in {state} was made from "
        "tests/foreign_topology.yaml; to run on another topology start over with `make clean`, "
        "or give it its own CCAT_STATE_DIR"
    )
    assert snapshot(ports) == before
    assert tree(state) == files
    assert (state / "topology.yaml").read_text() == adapted


def without(document: dict, *location_types: str) -> dict:
    """The example topology without its locations of these types (and whatever then needs them)."""
    for site in document["sites"].values():
        site["locations"] = {
            name: spec for name, spec in site["locations"].items() if spec["type"] not in location_types
        }
    return document


REFUSED = {
    "no_source": (
        lambda document: without(document, "SOURCE"),
        "it has no active SOURCE location, where the demo files its observations",
    ),
    "no_archive": (
        lambda document: {**without(document, "LONG_TERM_ARCHIVE"), "routes": {}},
        "it has no active LONG_TERM_ARCHIVE location, where the demo archives its data",
    ),
    "no_instrument": (
        lambda document: {**document, "instruments": {}},
        "it declares no instrument, whose modules the demo's observations come from",
    ),
    "invalid": (
        lambda document: {**document, "telescope": None},
        "telescope: is required",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_topology_the_demo_cannot_run_is_refused_before_anything_is_written(case: str, tmp_path: Path) -> None:
    change, reason = REFUSED[case]
    topology_file = tmp_path / f"{case}.yaml"
    topology_file.write_text(yaml.safe_dump(change(yaml.safe_load(EXAMPLE_TOPOLOGY.read_text()))))
    state = tmp_path / "state"
    ports = {"CCAT_DEMO_PORT": free_port(), "CCAT_DEMO_S3_PORT": free_port()}
    line = refusal(run_demo(state, ports, topology_file))
    assert line == f"demo: cannot run on {topology_file}: {reason}"
    assert not state.exists()  # no database, no storage, no adapted topology
