"""Helpers of the tests that run on the site network (namespaces ccat, cologne, us): the ``sites`` fixture's world."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from ccat_operators import bundling, packaging, routing
from ccat_operators.opsdb import OpsDb
from tests.conftest import REPO
from tests.helpers import file_random_observation, location_row
from tests.sitenet import SiteNetwork


class Sites:
    def __init__(self, db: OpsDb, network: SiteNetwork, env: dict[str, str], data_root: Path) -> None:
        self.db, self.network, self.env, self.data_root = db, network, env, data_root

    def make_bundles(self, observations: int = 2, sizes: tuple[int, ...] = (120_000, 90_000, 150_000)) -> dict:
        source = location_row(self.db, "ccat/telescope_computer")
        filed = {}
        for minute in range(observations):
            filed |= file_random_observation(self.db, Path(source.root_path), list(sizes), minute=minute)
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


def primary_transfer(sites: Sites) -> dict:
    return next(t for t in sites.transfers() if t["origin_site"] == "ccat")
