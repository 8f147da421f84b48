"""Bundling: first-fit decreasing into size-limited DataTransferPackages, aged partial bundles."""

from __future__ import annotations

import hashlib
import random
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ccat_operators import bundling, packaging
from ccat_operators.bundling import Item, bins_to_send, first_fit_decreasing
from ccat_operators.opsdb import OpsDb
from tests.helpers import apply_topology, file_random_observation, location_row, run_concurrently

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_first_fit_decreasing_respects_the_limit_and_fills_bins() -> None:
    rng = random.Random(7)
    items = [Item(i, rng.randint(1, 50), NOW) for i in range(2000)]
    bins = first_fit_decreasing(items, 100)
    assert sorted(i.id for b in bins for i in b.items) == list(range(2000))
    assert all(b.size <= 100 for b in bins)
    full = [b for b in bins_to_send(bins, 100, timedelta(hours=6), NOW)]
    assert sum(b.size for b in full) / (100 * len(full)) >= 0.95


def test_oversized_item_gets_its_own_bin_and_leaves() -> None:
    bins = first_fit_decreasing([Item(1, 150, NOW), Item(2, 10, NOW)], 100)
    assert [[i.id for i in b.items] for b in bins] == [[1], [2]]
    assert [b.items[0].id for b in bins_to_send(bins, 100, timedelta(hours=6), NOW)] == [1]


def test_partial_bundle_waits_until_max_age() -> None:
    young = [Item(1, 10, NOW - timedelta(hours=1))]
    old = [Item(2, 10, NOW - timedelta(hours=7))]
    assert bins_to_send(first_fit_decreasing(young, 100), 100, timedelta(hours=6), NOW) == []
    assert len(bins_to_send(first_fit_decreasing(young + old, 100), 100, timedelta(hours=6), NOW)) == 1


def configure(document: dict, bundle_limit: str, max_age: str = "6h") -> None:
    document["sites"]["ccat"]["locations"]["telescope_computer"]["settings"]["package_size_limit"] = "400KB"
    document["sites"]["ccat"]["locations"]["buffer"]["settings"].update(
        bundle_size_limit=bundle_limit, bundle_max_age=max_age
    )


@pytest.fixture
def packaged(ops_db: OpsDb, data_root: Path, tmp_path: Path):
    """Packages written to ccat/buffer from several observations; returns the buffer root."""

    def setup(bundle_limit: str, max_age: str = "6h") -> Path:
        apply_topology(ops_db, tmp_path, lambda d: configure(d, bundle_limit, max_age))
        source = location_row(ops_db, "ccat/telescope_computer")
        for minute in range(5):
            file_random_observation(ops_db, Path(source.root_path), [100_000, 150_000, 120_000], minute=minute)
        packaging.plan_packages(ops_db, source)
        assert packaging.write_packages(ops_db, source).failed == {}
        return data_root / "ccat" / "buffer"

    return setup


def bundles(db: OpsDb) -> list[dict]:
    return db.conn.execute("SELECT * FROM data_transfer_package ORDER BY id").fetchall()


def test_bundles_hold_the_package_tars_byte_for_byte(ops_db: OpsDb, packaged) -> None:
    buffer = packaged("1MB", max_age="0s")
    buffer_location = location_row(ops_db, "ccat/buffer")
    created = bundling.plan_bundles(ops_db, buffer_location)
    assert bundling.write_bundles(ops_db, buffer_location).failed == {}
    assert len(created) == len(bundles(ops_db)) >= 2

    packages = ops_db.conn.execute("SELECT * FROM raw_data_package").fetchall()
    assert all(p["data_transfer_package_id"] is not None for p in packages)
    seen = []
    for bundle in bundles(ops_db):
        assert bundle["status"] == "COMPLETED"
        tar = buffer / bundling.bundle_path(bundle["name"])
        assert bundle["checksum"] == "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
        assert bundle["size_bytes"] == tar.stat().st_size
        inner = [p for p in packages if p["data_transfer_package_id"] == bundle["id"]]
        assert sum(p["size_bytes"] for p in inner) <= 1_000_000
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                data = archive.extractfile(member).read()
                assert data == (buffer / member.name).read_bytes()
                seen.append(member.name)
    assert sorted(seen) == sorted(p["relative_path"] for p in packages)
    copies = ops_db.conn.execute("SELECT count(*) AS n FROM physical_copy WHERE data_transfer_package_id IS NOT NULL")
    assert copies.fetchone()["n"] == len(bundles(ops_db))


def test_young_partial_bundle_waits_and_rerun_adds_nothing(ops_db: OpsDb, packaged) -> None:
    packaged("100GB", max_age="6h")
    buffer_location = location_row(ops_db, "ccat/buffer")
    assert bundling.plan_bundles(ops_db, buffer_location) == []
    later = datetime.now(UTC) + timedelta(hours=7)
    assert len(bundling.plan_bundles(ops_db, buffer_location, now=later)) == 1
    assert bundling.plan_bundles(ops_db, buffer_location, now=later) == []
    bundling.write_bundles(ops_db, buffer_location)
    assert bundling.write_bundles(ops_db, buffer_location).completed == []
    assert [b["status"] for b in bundles(ops_db)] == ["COMPLETED"]


def test_overlapping_planners_never_bundle_a_package_twice(ops_db: OpsDb, ops_db_url: str, packaged) -> None:
    packaged("500KB", max_age="0s")

    def run(db: OpsDb) -> None:
        location = location_row(db, "ccat/buffer")
        bundling.plan_bundles(db, location)
        bundling.write_bundles(db, location)

    run_concurrently(ops_db_url, run, 3)
    assert {b["status"] for b in bundles(ops_db)} == {"COMPLETED"}
    unbundled = ops_db.conn.execute("SELECT count(*) AS n FROM raw_data_package WHERE data_transfer_package_id IS NULL")
    assert unbundled.fetchone()["n"] == 0


def test_corrupt_package_tar_fails_only_its_bundle(ops_db: OpsDb, packaged) -> None:
    buffer = packaged("500KB", max_age="0s")
    buffer_location = location_row(ops_db, "ccat/buffer")
    bundling.plan_bundles(ops_db, buffer_location)
    victim = ops_db.conn.execute("SELECT relative_path FROM raw_data_package ORDER BY id LIMIT 1").fetchone()
    path = buffer / victim["relative_path"]
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF
    path.write_bytes(bytes(data))

    result = bundling.write_bundles(ops_db, buffer_location)
    assert len(result.failed) == 1 and len(result.completed) == len(bundles(ops_db)) - 1
    failed = [b for b in bundles(ops_db) if b["status"] == "FAILED"]
    assert "checksum is sha256:" in failed[0]["failure_reason"]
    assert not (buffer / bundling.bundle_path(failed[0]["name"])).exists()
