"""`make up` from nothing: the UI comes up, the documented logins work, and the pipeline runs.

Runs ``scripts/up.py`` (what ``make up`` runs) in a fresh state directory on free ports,
as a newcomer would, and watches it through the REST API until the demo observations are
archived; then stops it with SIGTERM (Ctrl-C) and checks it stopped cleanly. Once on the
shipped topology, once with ``CCAT_TOPOLOGY`` naming tests/foreign_topology.yaml (other
site names, an inactive preferred buffer, a RELAY route).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port
from ccat_operators.opsdb import OpsDb
from tests.conftest import REPO

pytestmark = pytest.mark.airflow


def wait_for_line(process: subprocess.Popen, log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} from make up:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(1)


#: The topologies `make up` runs on, and the transfer pools it must create for each (`ccat pools`).
TOPOLOGIES = {
    "example": (None, {"ccat_to_cologne", "ccat_to_us", "cologne_to_us", "us_to_cologne"}),
    "foreign": (REPO / "tests" / "foreign_topology.yaml", {"summit_to_bonn", "bonn_to_tokyo"}),
}


@pytest.mark.parametrize("case", list(TOPOLOGIES))
def test_make_up_serves_the_ui_and_runs_the_pipeline(case: str) -> None:
    topology_file, pools = TOPOLOGIES[case]
    state = Path(tempfile.mkdtemp(prefix="ccat-test-up-"))
    state.chmod(0o755)  # PostgreSQL runs as its own user
    ports = {"CCAT_DEMO_PORT": free_port(), "CCAT_DEMO_S3_PORT": free_port(), "CCAT_UI_PORT": free_port()}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "CCAT_"))}
    env |= {"CCAT_STATE_DIR": str(state)} | {key: str(port) for key, port in ports.items()}
    if topology_file is not None:
        env["CCAT_TOPOLOGY"] = str(topology_file)
    log = state / "up.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "up.py")], env=env, cwd=REPO,
                                   stdout=output, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{ports['CCAT_UI_PORT']}"
    try:
        wait_for_line(process, log, f"Airflow UI: {url}", timeout=300)
        for user in ("admin", "operator", "scientist"):  # the documented logins
            response = httpx.post(f"{url}/auth/token", json={"username": user, "password": user}, timeout=30)
            assert response.status_code == 201, (user, response.text)
        token = httpx.post(f"{url}/auth/token", json={"username": "operator", "password": "operator"}).json()
        api = httpx.Client(base_url=f"{url}/api/v2", headers={"Authorization": f"Bearer {token['access_token']}"})
        dags = {dag["dag_id"]: dag for dag in api.get("/dags", params={"limit": 100}).json()["dags"]}
        assert not dags["ccat_packaging"]["is_paused"] and not dags["ccat_staging"]["is_paused"]
        imported = {pool["name"] for pool in api.get("/pools", params={"limit": 100}).json()["pools"]}
        assert {name for name in imported if name.startswith("ccat_transfer_")} == {
            f"ccat_transfer_{pair}" for pair in pools
        }

        # The demo observations flow to both archives on their own: packaging was triggered, assets do the rest.
        ops_db_url = f"postgresql://ccat@127.0.0.1:{ports['CCAT_DEMO_PORT']}/ccat_ops_db"
        deadline = time.monotonic() + 400
        while True:
            with OpsDb.connect(ops_db_url) as db:
                packages = db.conn.execute("SELECT archived_at FROM raw_data_package").fetchall()
            if packages and all(p["archived_at"] is not None for p in packages):
                break
            failed = {dag: [r["dag_run_id"] for r in api.get(f"/dags/{dag}/dagRuns").json()["dag_runs"]
                            if r["state"] == "failed"] for dag in dags}  # fmt: skip
            assert not any(failed.values()), failed
            assert time.monotonic() < deadline, f"not archived in time: {packages}"
            time.sleep(3)
        archive_runs = api.get("/dags/ccat_archive/dagRuns").json()["dag_runs"]
        assert "asset_triggered" in {run["run_type"] for run in archive_runs}
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        finally:
            LocalPostgres(state / "postgres", ports["CCAT_DEMO_PORT"]).stop()
    assert process.returncode == 0, log.read_text(errors="replace")[-3000:]
    assert "stopping Airflow and S3" in log.read_text()
    shutil.rmtree(state, ignore_errors=True)
