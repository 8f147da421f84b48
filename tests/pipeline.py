"""Drive the pipeline in-process up to packages sitting in the archive sites' buffers.

Uses the ``local`` transfer method (all sites are directories on this machine): the
network is exercised by tests/test_transfer.py; here the subject is what comes after.
"""

from __future__ import annotations

import json
from pathlib import Path

from ccat_dev.s3 import LocalS3
from ccat_operators import archive, bundling, packaging, routing, transfer, unpacking
from ccat_operators.opsdb import OpsDb
from tests.helpers import apply_topology, file_random_observation, location_row


def local_topology(s3: LocalS3 | None):
    def mutate(document: dict) -> None:
        locations = document["sites"]["ccat"]["locations"]
        locations["telescope_computer"]["settings"]["package_size_limit"] = "300KB"
        locations["buffer"]["settings"].update(bundle_max_age="0s", transfer_method="local")
        for site in ("cologne", "us"):
            document["sites"][site]["locations"]["buffer"]["settings"]["transfer_method"] = "local"
            if s3 is not None:
                document["sites"][site]["locations"]["lta"]["endpoint_url"] = s3.endpoint_url

    return mutate


def s3_connections(monkeypatch, s3: LocalS3) -> None:
    for site in ("cologne", "us"):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_CCAT_S3_{site.upper()}",
            json.dumps({"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
                        "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}),
        )  # fmt: skip


def deliver(db: OpsDb, observations: int = 2, sizes=(120_000, 90_000)) -> dict[str, bytes]:
    """File, package, bundle, route, transfer (local) and unpack; return the filed files."""
    filed = bundle(db, observations, sizes)
    send_all(db)
    for site in ("cologne", "us"):
        assert unpacking.unpack_arrived(db, location_row(db, f"{site}/buffer")).failed == {}
    return filed


def bundle(db: OpsDb, observations: int = 2, sizes=(120_000, 90_000), first_minute: int = 0) -> dict[str, bytes]:
    """File, package, bundle and route (one new bundle); return the filed files."""
    source = location_row(db, "ccat/telescope_computer")
    filed: dict[str, bytes] = {}
    for minute in range(first_minute, first_minute + observations):
        filed |= file_random_observation(db, Path(source.root_path), list(sizes), minute=minute)
    packaging.plan_packages(db, source)
    assert packaging.write_packages(db, source).failed == {}
    buffer = location_row(db, "ccat/buffer")
    bundling.plan_bundles(db, buffer)
    assert bundling.write_bundles(db, buffer).failed == {}
    routing.route_bundles(db, buffer)
    return filed


def send_all(db: OpsDb) -> None:
    """Send every transfer that can go: primary legs, then the fan-out legs that waited for them."""
    for _ in range(2):
        for row in db.conn.execute("SELECT id FROM data_transfer WHERE status <> 'COMPLETED' ORDER BY id").fetchall():
            dependency = db.fetch_one("data_transfer", id=row["id"]).depends_on_status
            if dependency in (None, "COMPLETED"):
                transfer.send_transfer(db, row["id"])


def setup(db: OpsDb, tmp_path: Path, s3: LocalS3 | None = None):
    return apply_topology(db, tmp_path, local_topology(s3))


def archive_world(db: OpsDb, tmp_path: Path, s3: LocalS3, monkeypatch) -> dict[str, bytes]:
    """Delivered packages in both archive sites' buffers, with this test's own S3 buckets."""
    setup(db, tmp_path, s3)
    s3_connections(monkeypatch, s3)
    # Each test its own buckets: the server lives for the whole module.
    suffix = tmp_path.name[-8:].lower().replace("_", "-")
    db.conn.execute("UPDATE data_location SET s3_bucket = s3_bucket || '-' || %s WHERE storage_type = 'S3'",
                    (suffix,))  # fmt: skip
    return deliver(db)


def archive_filed(db: OpsDb) -> None:
    """Take everything filed so far through every stage into both archives (local transfers, the test's S3)."""
    source = location_row(db, "ccat/telescope_computer")
    packaging.plan_packages(db, source)
    assert packaging.write_packages(db, source).failed == {}
    buffer = location_row(db, "ccat/buffer")
    bundling.plan_bundles(db, buffer)
    assert bundling.write_bundles(db, buffer).failed == {}
    routing.route_bundles(db, buffer)
    send_all(db)
    for site in ("cologne", "us"):
        assert unpacking.unpack_arrived(db, location_row(db, f"{site}/buffer")).failed == {}
        assert archive.archive_pending(db, location_row(db, f"{site}/lta")).failed == {}
