"""The operator's and the scientist's Airflow: roles, clearing, the UI, against a running api-server.

One deployment for the module (:class:`LocalAirflow`: LocalExecutor, FAB auth manager,
the roles of include/auth/roles.yaml), on its own ops-db, with SeaweedFS as both archives
and every "site" a directory on this machine (``local`` transfers). ``CCAT_TASK_RETRIES=0``:
a fault fails its task at once, as the operator would then see it in the UI.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ccat_dev.local_airflow import LocalAirflow
from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port
from ccat_dev.s3 import LocalS3
from ccat_operators.opsdb import OpsDb
from tests.helpers import apply_topology, file_random_observation, location_row

pytestmark = pytest.mark.airflow

ALL_DAGS = ["ccat_archive", "ccat_audit", "ccat_bundling", "ccat_deletion", "ccat_filing", "ccat_monitoring",
            "ccat_packaging", "ccat_staging", "ccat_topology", "ccat_transfer", "ccat_unpacking"]  # fmt: skip
#: Unpaused for the clearing test: each stage's asset starts the next.
PIPELINE = ["ccat_packaging", "ccat_bundling", "ccat_transfer", "ccat_unpacking", "ccat_archive"]
TERMINAL = {"success", "failed"}


class Deployment:
    def __init__(self, airflow: LocalAirflow, ops_db_url: str, s3: LocalS3, data_root: Path) -> None:
        self.airflow, self.ops_db_url, self.s3, self.data_root = airflow, ops_db_url, s3, data_root

    def db(self) -> OpsDb:
        return OpsDb.connect(self.ops_db_url)


@pytest.fixture(scope="module")
def deployment(postgres_server: LocalPostgres, migrated_template: str, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("ui")
    data_root = work / "data"
    s3 = LocalS3(work / "s3")
    s3.start()
    ops_db_url = postgres_server.create_database(f"ui_{uuid.uuid4().hex[:8]}", template=migrated_template)
    metadata_url = postgres_server.create_database(f"airflow_{uuid.uuid4().hex[:8]}")

    def small_and_local(document: dict) -> None:
        ccat = document["sites"]["ccat"]["locations"]
        ccat["telescope_computer"]["settings"]["package_size_limit"] = "300KB"
        ccat["buffer"]["settings"].update(bundle_max_age="0s", bundle_size_limit="1MB")
        for site in ("ccat", "cologne", "us"):
            document["sites"][site]["locations"]["buffer"]["settings"]["transfer_method"] = "local"
        for site in ("cologne", "us"):
            document["sites"][site]["locations"]["lta"]["endpoint_url"] = s3.endpoint_url

    with pytest.MonkeyPatch.context() as patch, OpsDb.connect(ops_db_url) as db:
        patch.setenv("CCAT_DATA_ROOT", str(data_root))
        _, topology_file = apply_topology(db, work, small_and_local)
    env = {
        "CCAT_TOPOLOGY": str(topology_file),
        "CCAT_DATA_ROOT": str(data_root),
        "CCAT_TASK_RETRIES": "0",
        "AIRFLOW_CONN_CCAT_OPS_DB": ops_db_url,
    }
    for site in ("cologne", "us"):
        env[f"AIRFLOW_CONN_CCAT_S3_{site.upper()}"] = json.dumps(
            {"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
             "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}
        )  # fmt: skip
    airflow = LocalAirflow(work / "airflow", metadata_url.replace("postgresql://", "postgresql+psycopg://", 1),
                           port=free_port(), env_overrides=env)  # fmt: skip
    try:
        airflow.start()
        with airflow.client("admin") as admin:
            airflow.wait_for_dags(admin, ALL_DAGS)
        yield Deployment(airflow, ops_db_url, s3, data_root)
    finally:
        airflow.stop()
        s3.stop()


# --- roles -------------------------------------------------------------------------------


def test_a_scientist_may_trigger_staging_and_nothing_else(deployment: Deployment) -> None:
    with deployment.airflow.client("scientist") as scientist:
        listed = scientist.get("/dags").json()
        assert [dag["dag_id"] for dag in listed["dags"]] == ["ccat_staging"]

        refused = scientist.post("/dags/ccat_transfer/dagRuns", json={"logical_date": None})
        assert refused.status_code == 403, refused.text
        assert scientist.get("/dags/ccat_transfer/dagRuns").status_code == 403
        clear = scientist.post("/dags/ccat_staging/clearTaskInstances", json={"dry_run": True})
        assert clear.status_code == 403, "a scientist cannot clear tasks, not even staging's"

        conf = {"observations": [1], "location": "cologne/ramses", "requested_by": "test"}
        triggered = scientist.post("/dags/ccat_staging/dagRuns", json={"logical_date": None, "conf": conf})
        assert triggered.status_code == 200, triggered.text
        runs = scientist.get("/dags/ccat_staging/dagRuns").json()["dag_runs"]
        assert triggered.json()["dag_run_id"] in {run["dag_run_id"] for run in runs}


def test_an_operator_sees_and_runs_every_dag(deployment: Deployment) -> None:
    with deployment.airflow.client("operator") as operator:
        listed = operator.get("/dags", params={"limit": 100}).json()
        assert sorted(dag["dag_id"] for dag in listed["dags"]) == ALL_DAGS
        for dag_id in ALL_DAGS:
            dry = operator.post(f"/dags/{dag_id}/clearTaskInstances", json={"dry_run": True})
            assert dry.status_code == 200, (dag_id, dry.text)
        assert operator.get("/pools").status_code == 200
        assert operator.get("/users").status_code in (403, 404), "managing users is the admin's"


def test_a_wrong_password_gets_no_token(deployment: Deployment) -> None:
    response = httpx.post(f"{deployment.airflow.url}/auth/token",
                          json={"username": "scientist", "password": "operator"}, timeout=30)  # fmt: skip
    assert response.status_code == 401


# --- clearing ----------------------------------------------------------------------------


def runs_of(client: httpx.Client, dag_id: str) -> list[dict]:
    response = client.get(f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 100})
    response.raise_for_status()
    return response.json()["dag_runs"]


def wait_until_quiet(client: httpx.Client, dag_ids: list[str], quiet: float = 6, timeout: float = 300) -> None:
    """Wait until no run of ``dag_ids`` is queued or running for ``quiet`` seconds (assets start runs)."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        busy = [(dag_id, run["state"]) for dag_id in dag_ids for run in runs_of(client, dag_id)
                if run["state"] not in TERMINAL]  # fmt: skip
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet:
            return
        if now > deadline:
            raise TimeoutError(f"still busy after {timeout:.0f} s: {busy}")
        time.sleep(1)


def failed_runs(client: httpx.Client, dag_id: str) -> list[str]:
    return [run["dag_run_id"] for run in runs_of(client, dag_id) if run["state"] == "failed"]


def task_states(client: httpx.Client, dag_id: str, run_id: str) -> dict[str, str]:
    instances = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
    return {f"{ti['task_id']}[{ti['map_index']}]": ti["state"] for ti in instances["task_instances"]}


def clear_failed(client: httpx.Client, dag_id: str, run_id: str) -> list[str]:
    """What the UI's "Clear" on a failed run does: failed tasks and what follows them."""
    body = {"dag_run_id": run_id, "only_failed": True, "include_downstream": True, "dry_run": False}
    response = client.post(f"/dags/{dag_id}/clearTaskInstances", json=body)
    assert response.status_code == 200, response.text
    return sorted(ti["task_id"] for ti in response.json()["task_instances"])


#: The ops-db side of a pipeline run's result (ids and timestamps left out: they differ between runs).
RESULT_QUERIES = {
    "packages": """SELECT name, status, checksum, size_bytes, archived_at IS NOT NULL AS archived
                   FROM raw_data_package ORDER BY name""",
    "bundles": "SELECT name, status, checksum FROM data_transfer_package ORDER BY name",
    "transfers": """SELECT d.name AS bundle, t.destination_location_id, t.status, t.unpack_status
                    FROM data_transfer t JOIN data_transfer_package d ON d.id = t.data_transfer_package_id
                    ORDER BY 1, 2""",
    "archive": """SELECT p.name, a.destination_location_id, a.status FROM long_term_archive_transfer a
                  JOIN raw_data_package p ON p.id = a.raw_data_package_id ORDER BY 1, 2""",
    "copies": "SELECT data_location_id, status, count(*) AS n FROM physical_copy GROUP BY 1, 2 ORDER BY 1, 2",
}


def pipeline_result(deployment: Deployment) -> dict:
    """Everything a run leaves behind that must not depend on how it got there."""
    with deployment.db() as db:
        result = {name: db.conn.execute(query).fetchall() for name, query in RESULT_QUERIES.items()}
        buckets = [location_row(db, f"{site}/lta").s3_bucket for site in ("cologne", "us")]
    client = deployment.s3.client()
    objects = {}
    for bucket in buckets:
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            objects[f"{bucket}/{item['Key']}"] = f"sha256:{hashlib.sha256(body).hexdigest()}"
    result["objects"] = objects
    parts = sorted(str(p.relative_to(deployment.data_root)) for p in deployment.data_root.rglob("*.part"))
    result["leftover_parts"] = parts
    return result


def test_clearing_failed_tasks_gives_the_result_of_a_first_run(deployment: Deployment) -> None:
    airflow = deployment.airflow
    with deployment.db() as db:
        source = Path(location_row(db, "ccat/telescope_computer").root_path)
        for minute in range(2):
            file_random_observation(db, source, [150_000, 90_000], minute=minute, seed=7)
    cologne_buffer = deployment.data_root / "cologne" / "buffer"

    with airflow.client("operator") as operator:
        for dag_id in PIPELINE:
            operator.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

        # Fault 1: cologne's buffer is not mounted (a file where its directory should be).
        shutil.rmtree(cologne_buffer)
        cologne_buffer.write_text("not mounted")
        operator.post("/dags/ccat_packaging/dagRuns", json={"logical_date": None}).raise_for_status()
        wait_until_quiet(operator, PIPELINE)  # packaging's asset starts bundling, bundling's starts transfer ...
        bundling_runs = runs_of(operator, "ccat_bundling")
        assert {run["state"] for run in bundling_runs} == {"success"}
        assert "asset_triggered" in {run["run_type"] for run in bundling_runs}, "packaging's asset started bundling"
        failed_transfers = failed_runs(operator, "ccat_transfer")
        assert failed_transfers
        states = {}
        for run_id in failed_transfers:
            states |= task_states(operator, "ccat_transfer", run_id)
        assert "failed" in {s for t, s in states.items() if "send_to_cologne" in t}, states
        assert states["announce_bundles_transferred[-1]"] == "upstream_failed"
        with deployment.db() as db:
            waiting = db.conn.execute(
                "SELECT status, failure_reason FROM data_transfer WHERE failure_reason IS NOT NULL"
            ).fetchall()
        # An unmounted buffer is not the bundle's fault: the transfer waits (PENDING), uncounted.
        assert [w["status"] for w in waiting] == ["PENDING"] and "not counted" in waiting[0]["failure_reason"]

        # Fault 2, before the fix lets the pipeline go on: the S3 archive is down.
        deployment.s3.stop()
        cologne_buffer.unlink()
        cologne_buffer.mkdir()
        cleared = [task for run_id in failed_transfers for task in clear_failed(operator, "ccat_transfer", run_id)]
        assert "announce_bundles_transferred" in cleared and any(t.endswith("send_to_cologne") for t in cleared)
        wait_until_quiet(operator, PIPELINE)
        assert failed_runs(operator, "ccat_transfer") == []
        assert runs_of(operator, "ccat_unpacking"), "the transfers' asset started unpacking"
        failed_archives = failed_runs(operator, "ccat_archive")
        assert failed_archives

        deployment.s3.start()
        for run_id in failed_archives:
            clear_failed(operator, "ccat_archive", run_id)
        wait_until_quiet(operator, PIPELINE)
        assert {run["state"] for dag_id in PIPELINE for run in runs_of(operator, dag_id)} == {"success"}

        result = pipeline_result(deployment)
        packages = result["packages"]
        assert len(packages) >= 2 and all(p["status"] == "COMPLETED" and p["archived"] for p in packages)
        assert all(t["status"] == "COMPLETED" and t["unpack_status"] == "COMPLETED" for t in result["transfers"])
        assert len(result["transfers"]) == 2 * len(result["bundles"])  # every bundle to both archive sites, once
        assert [a["status"] for a in result["archive"]] == ["COMPLETED"] * 2 * len(packages)
        # What each archive holds is exactly what packaging wrote: same bytes, same checksums.
        assert sorted(result["objects"].values()) == sorted([p["checksum"] for p in packages] * 2)
        assert result["leftover_parts"] == []
        # The UI labels each mapped send with its bundle's name (map_index_template), not a number.
        instances = operator.get("/dags/ccat_transfer/dagRuns/~/taskInstances", params={"limit": 200}).json()
        sends = [ti for ti in instances["task_instances"] if ".send_to_" in ti["task_id"] and ti["map_index"] >= 0]
        assert sends and {ti["rendered_map_index"] for ti in sends} <= {b["name"] for b in result["bundles"]}

        # Clearing tasks that succeeded runs them again: nothing changes.
        for dag_id in ("ccat_transfer", "ccat_archive"):
            run_id = runs_of(operator, dag_id)[-1]["dag_run_id"]  # the first run
            body = {"dag_run_id": run_id, "only_failed": False, "dry_run": False}
            operator.post(f"/dags/{dag_id}/clearTaskInstances", json=body).raise_for_status()
        wait_until_quiet(operator, PIPELINE)
        assert {run["state"] for dag_id in PIPELINE for run in runs_of(operator, dag_id)} == {"success"}
        assert pipeline_result(deployment) == result


# --- the browser -------------------------------------------------------------------------

SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture
def browser():
    """Debian's chromium, headless, driven by its chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--lang=en-US"):  # fmt: skip
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def test_a_scientist_stages_data_through_the_trigger_form(deployment: Deployment, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    airflow = deployment.airflow
    with deployment.db() as db:
        source = Path(location_row(db, "ccat/telescope_computer").root_path)
        filed = file_random_observation(db, source, [120_000, 40_000], obs_unit="browser_demo", minute=40, seed=3)
        processing_root = Path(location_row(db, "cologne/ramses").root_path)
    with airflow.client("operator") as operator:  # the pipeline archives the observation first
        for dag_id in PIPELINE:
            operator.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        operator.post("/dags/ccat_packaging/dagRuns", json={"logical_date": None}).raise_for_status()
        wait_until_quiet(operator, PIPELINE)

    wait = WebDriverWait(browser, 60)
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.get(f"{airflow.url}/")
    wait.until(shown.presence_of_element_located((By.ID, "username"))).send_keys("scientist")
    browser.find_element(By.ID, "password").send_keys("scientist")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(lambda page: "/auth/login" not in page.current_url)

    browser.get(f"{airflow.url}/dags")
    wait.until(shown.presence_of_element_located((By.CSS_SELECTOR, "a[href='/dags/ccat_staging']")))
    links = [link.get_attribute("href") for link in browser.find_elements(By.CSS_SELECTOR, "a[href*='/dags/ccat_']")]
    shown_dags = {re.search(r"/dags/(ccat_\w+)", href).group(1) for href in links}
    assert shown_dags == {"ccat_staging"}, "a scientist sees only the staging DAG"
    browser.save_screenshot(str(SCREENSHOTS / "scientist-dags.png"))

    browser.get(f"{airflow.url}/dags/ccat_staging")
    wait.until(shown.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))).click()
    wait.until(shown.element_to_be_clickable((By.ID, "element_obs_unit"))).send_keys("browser_demo")
    browser.find_element(By.ID, "element_start_date").send_keys("11202026")  # the date picker, en-US order
    browser.find_element(By.ID, "element_end_date").send_keys("11202026")
    requested_by = browser.find_element(By.ID, "element_requested_by")
    requested_by.clear()
    requested_by.send_keys("Dr. Browser")
    assert browser.find_element(By.CSS_SELECTOR, "input[name=element_location]").get_attribute("value") == (
        "cologne/ramses"
    )
    browser.save_screenshot(str(SCREENSHOTS / "staging-form.png"))
    browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]").click()

    with airflow.client("admin") as admin:
        deadline = time.monotonic() + 60
        while not (
            runs := [r for r in runs_of(admin, "ccat_staging") if r["conf"].get("requested_by") == "Dr. Browser"]
        ):
            assert time.monotonic() < deadline, "the form created no run"
            time.sleep(1)
        assert runs[0]["conf"] | {"observations": []} == {
            "observations": [], "obs_unit": "browser_demo", "start_date": "2026-11-20", "end_date": "2026-11-20",
            "location": "cologne/ramses", "requested_by": "Dr. Browser", "retention": "14d", "timeout": "24h",
        }  # fmt: skip
        wait_until_quiet(admin, ["ccat_staging"])
        assert runs_of(admin, "ccat_staging")[0]["state"] == "success"
    browser.get(f"{airflow.url}/dags/ccat_staging")
    time.sleep(2)  # let the grid draw the run
    browser.save_screenshot(str(SCREENSHOTS / "staging-run.png"))

    # The scientist's data is in the processing location, byte for byte.
    for relative, content in filed.items():
        staged = [path for path in processing_root.rglob("*.dat") if str(path).endswith(relative)]
        assert len(staged) == 1 and staged[0].read_bytes() == content, relative
    for name in ("scientist-dags.png", "staging-form.png", "staging-run.png"):
        assert (SCREENSHOTS / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
