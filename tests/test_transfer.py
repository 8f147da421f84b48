"""Transfers between sites in their own network namespaces, run by the Airflow tasks."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ccat_operators import bundling, packaging, routing
from ccat_operators.devdb import LocalPostgres
from ccat_operators.hooks.transfer import InvalidRouteError, TransferHook
from ccat_operators.opsdb import OpsDb
from tests.conftest import REPO
from tests.helpers import apply_topology, file_random_observation, location_row
from tests.sitenet import SiteNetwork, environment_for_sites

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def sites(
    ops_db: OpsDb,
    ops_db_url: str,
    postgres_server: LocalPostgres,
    site_network: SiteNetwork,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Example topology on the site network; bundles made at ccat and routed."""

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


class Sites:
    def __init__(self, db: OpsDb, network: SiteNetwork, env: dict[str, str], data_root: Path) -> None:
        self.db, self.network, self.env, self.data_root = db, network, env, data_root

    def make_bundles(self, observations: int = 2, sizes: tuple[int, ...] = (120_000, 90_000, 150_000)) -> dict:
        source = location_row(self.db, "ccat/telescope_computer")
        filed = {}
        for minute in range(observations):
            filed |= file_random_observation(self.db, Path(source["root_path"]), list(sizes), minute=minute)
        packaging.plan_packages(self.db, source)
        assert packaging.write_packages(self.db, source).failed == {}
        buffer = location_row(self.db, "ccat/buffer")
        bundling.plan_bundles(self.db, buffer)
        assert bundling.write_bundles(self.db, buffer).failed == {}
        routing.route_bundles(self.db, buffer)
        return filed

    def run(self, site: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        argv = self.network.argv(site, [sys.executable, "-m", "tests.site_runner", *args])
        result = subprocess.run(argv, cwd=REPO, env=env or self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{args} in {site} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def transfers(self) -> list[dict]:
        return self.db.conn.execute(
            "SELECT t.*, ds.short_name AS destination_site, os.short_name AS origin_site, d.name AS bundle, "
            "d.checksum FROM data_transfer t JOIN data_transfer_package d ON d.id = t.data_transfer_package_id "
            "JOIN data_location dl ON dl.id = t.destination_location_id JOIN site ds ON ds.id = dl.site_id "
            "JOIN data_location ol ON ol.id = t.origin_location_id JOIN site os ON os.id = ol.site_id ORDER BY t.id"
        ).fetchall()

    def bundle_file(self, site: str, bundle: str) -> Path:
        return self.data_root / site / "buffer" / bundling.bundle_path(bundle)


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundles_travel_to_every_archive_site_and_unpack(airflow_db, sites: Sites) -> None:
    sites.make_bundles()
    # ccat's worker sends the primary legs; cologne's and us's workers send the fan-out.
    sites.run("ccat", "dag", "ccat_transfer")
    primary = [t for t in sites.transfers() if t["origin_site"] == "ccat"]
    assert primary and {t["status"] for t in primary} == {"COMPLETED"}
    for origin in ("cologne", "us"):
        sites.run(origin, "dag", "ccat_transfer")
    transfers = sites.transfers()
    assert {t["status"] for t in transfers} == {"COMPLETED"}
    bundles = {t["bundle"] for t in transfers}
    for bundle in bundles:
        source = sites.bundle_file("ccat", bundle)
        for site in ("cologne", "us"):
            arrived = sites.bundle_file(site, bundle)
            assert arrived.read_bytes() == source.read_bytes()
    assert not list(sites.data_root.rglob("*.part"))
    logs = sites.db.conn.execute("SELECT * FROM data_transfer_log ORDER BY id").fetchall()
    assert len(logs) == len(transfers) and all(log["succeeded"] for log in logs)
    assert all(Path(log["log_path"]).read_text() for log in logs)

    for site in ("cologne", "us"):
        sites.run(site, "dag", "ccat_unpacking")
    packages = sites.db.conn.execute("SELECT * FROM raw_data_package").fetchall()
    for package in packages:
        for site in ("cologne", "us"):
            tar = sites.data_root / site / "buffer" / package["relative_path"]
            assert sha256(tar) == package["checksum"]
    copies = sites.db.conn.execute(
        "SELECT count(*) AS n FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id "
        "JOIN site s ON s.id = l.site_id WHERE c.raw_data_package_id IS NOT NULL AND s.short_name <> 'ccat'"
    ).fetchone()
    assert copies["n"] == 2 * len(packages)
