"""Test harness: a private PostgreSQL for the whole session, a fresh database per test.

The server is started here from the machine's PostgreSQL binaries (it assumes no server
is running) on a free loopback port, with durability switched off for speed. Every test
that asks for ``ops_db`` gets its own database cloned from a migrated template, so tests
are independent and can run in any order.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Airflow reads its configuration at import time: point it at a throw-away home before
# any test module imports it.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ccat-test-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    }
)
os.environ.pop("CCAT_OPS_DB_URL", None)
os.environ.pop("AIRFLOW_CONN_CCAT_OPS_DB", None)

from ccat_dev.postgres import FAST_TEST_SETTINGS, LocalPostgres  # noqa: E402
from ccat_dev.processes import free_port  # noqa: E402
from ccat_operators import migrations, topology  # noqa: E402
from ccat_operators.opsdb import OpsDb  # noqa: E402

EXAMPLE_TOPOLOGY = REPO / "include" / "topology" / "ccat.yaml"
TEMPLATE_DB = "ccat_test_template"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    directory = Path(tempfile.mkdtemp(prefix="ccat-test-pg-"))
    server = LocalPostgres(directory, free_port(), settings=FAST_TEST_SETTINGS)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_template(postgres_server: LocalPostgres) -> str:
    with OpsDb.connect(postgres_server.create_database(TEMPLATE_DB)) as db:
        migrations.upgrade(db)
    return TEMPLATE_DB


@pytest.fixture
def ops_db_url(postgres_server: LocalPostgres, migrated_template: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test only."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield postgres_server.create_database(name, template=migrated_template)
    postgres_server.drop_database(name)


@pytest.fixture
def ops_db(ops_db_url: str) -> Iterator[OpsDb]:
    with OpsDb.connect(ops_db_url) as db:
        yield db


@pytest.fixture
def empty_db_url(postgres_server: LocalPostgres) -> Iterator[str]:
    """URL of a fresh database with no schema at all."""
    name = f"empty_{uuid.uuid4().hex[:12]}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Storage root the example topology expands ``${CCAT_DATA_ROOT}`` to."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("CCAT_DATA_ROOT", str(root))
    return root


@pytest.fixture
def example_topology(ops_db: OpsDb, data_root: Path) -> topology.Topology:
    """The shipped example topology, applied to this test's database."""
    loaded = topology.load(EXAMPLE_TOPOLOGY)
    topology.apply(ops_db, loaded)
    return loaded


@pytest.fixture(scope="module")
def site_network(tmp_path_factory: pytest.TempPathFactory):
    """Namespaces ccat, cologne and us on a private bridge; sshd (with rsync) at cologne and us."""
    from tests.sitenet import SiteNetwork

    network = SiteNetwork(tmp_path_factory.mktemp("sitenet")).start()
    try:
        network.start_sshd("cologne")
        network.start_sshd("us")
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A SeaweedFS S3 server on loopback, enforcing its credentials."""
    from ccat_dev.s3 import LocalS3

    server = LocalS3(tmp_path_factory.mktemp("s3"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory):
    """Debian's VictoriaMetrics on loopback: it accepts the InfluxDB v2 write API."""
    import shutil as _shutil
    import subprocess
    import time
    import urllib.request

    binary = _shutil.which("victoria-metrics")
    if binary is None:
        raise RuntimeError("victoria-metrics is not installed: apt-get install victoria-metrics")
    port = free_port()
    directory = tmp_path_factory.mktemp("victoria")
    process = subprocess.Popen(
        [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={directory}", "-search.latencyOffset=0s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()  # noqa: S310 - loopback test server
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("VictoriaMetrics did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """Airflow's own metadata database (SQLite in the test AIRFLOW_HOME), fresh for the module."""
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def sites(
    ops_db: OpsDb,
    ops_db_url: str,
    postgres_server: LocalPostgres,
    site_network,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Example topology on the site network; the test makes bundles at ccat (``Sites.make_bundles``)."""
    from tests.helpers import apply_topology
    from tests.sitenet import environment_for_sites
    from tests.sites import Sites

    def fast(document: dict) -> None:
        document["sites"]["ccat"]["locations"]["telescope_computer"]["settings"]["package_size_limit"] = "300KB"
        document["sites"]["ccat"]["locations"]["buffer"]["settings"].update(
            bundle_max_age="0s", bundle_size_limit="1MB"
        )

    _, topology_file = apply_topology(ops_db, tmp_path, fast)
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    dbname = ops_db_url.rsplit("/", 1)[1]
    env = environment_for_sites(site_network, postgres_server.socket_url(dbname))
    return Sites(ops_db, site_network, env, data_root)
