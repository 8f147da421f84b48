"""Routing: round-robin primary legs, fan-out secondary legs, route overrides, restarts."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from ccat_operators import routing
from ccat_operators.opsdb import OpsDb
from tests.helpers import apply_topology, location_row, run_concurrently


def add_bundles(db: OpsDb, count: int, origin: str = "ccat/buffer") -> list[int]:
    location = location_row(db, origin).id
    rows = db.conn.execute(
        "INSERT INTO data_transfer_package (name, origin_location_id, size_bytes, checksum, status) "
        "SELECT 'bundle_' || g || '_' || %(tag)s, %(location)s, 100, 'sha256:' || repeat('0', 64), 'COMPLETED' "
        "FROM generate_series(1, %(count)s) g RETURNING id",
        {"location": location, "count": count, "tag": uuid.uuid4().hex[:8]},
    ).fetchall()
    return [row["id"] for row in rows]


def legs(db: OpsDb) -> list[dict]:
    return db.conn.execute(
        "SELECT t.id, t.data_transfer_package_id AS bundle, os.short_name || '/' || ol.name AS origin, "
        "ds.short_name || '/' || dl.name AS destination, t.unpack, t.depends_on_transfer_id, t.method "
        "FROM data_transfer t "
        "JOIN data_location ol ON ol.id = t.origin_location_id JOIN site os ON os.id = ol.site_id "
        "JOIN data_location dl ON dl.id = t.destination_location_id JOIN site ds ON ds.id = dl.site_id "
        "ORDER BY t.id"
    ).fetchall()


def primaries(db: OpsDb) -> list[str]:
    return [leg["destination"] for leg in legs(db) if leg["origin"] == "ccat/buffer"]


@pytest.fixture
def topo(ops_db: OpsDb, data_root: Path, tmp_path: Path):
    def apply(mutate=None):
        return apply_topology(ops_db, tmp_path, mutate)

    apply()
    return apply


def test_round_robin_is_even_and_every_bundle_fans_out(ops_db: OpsDb, topo) -> None:
    add_bundles(ops_db, 100)
    routing.route_bundles(ops_db, location_row(ops_db, "ccat/buffer"))
    assert Counter(primaries(ops_db)) == {"cologne/buffer": 50, "us/buffer": 50}
    by_bundle: dict[int, list[dict]] = {}
    for leg in legs(ops_db):
        by_bundle.setdefault(leg["bundle"], []).append(leg)
    for bundle_legs in by_bundle.values():
        first, second = bundle_legs
        assert first["origin"] == "ccat/buffer" and first["depends_on_transfer_id"] is None
        assert second["origin"] == first["destination"] and second["depends_on_transfer_id"] == first["id"]
        assert {first["destination"], second["destination"]} == {"cologne/buffer", "us/buffer"}
    # Routing again changes nothing.
    assert routing.route_bundles(ops_db, location_row(ops_db, "ccat/buffer")) == []
    assert len(legs(ops_db)) == 200


def test_round_robin_continues_after_a_restart(ops_db: OpsDb, ops_db_url: str, topo) -> None:
    add_bundles(ops_db, 3)
    routing.route_bundles(ops_db, location_row(ops_db, "ccat/buffer"))
    with OpsDb.connect(ops_db_url) as restarted:  # a new process, same ops-db
        add_bundles(restarted, 3)
        routing.route_bundles(restarted, location_row(restarted, "ccat/buffer"))
    assert primaries(ops_db) == ["cologne/buffer", "us/buffer"] * 3


def test_concurrent_routers_stay_even(ops_db: OpsDb, ops_db_url: str, topo) -> None:
    def route(db: OpsDb) -> None:
        for _ in range(5):
            add_bundles(db, 4)
            routing.route_bundles(db, location_row(db, "ccat/buffer"))

    run_concurrently(ops_db_url, route, 4)
    assert Counter(primaries(ops_db)) == {"cologne/buffer": 40, "us/buffer": 40}


def test_relay_route_goes_through_the_intermediate_site(ops_db: OpsDb, topo) -> None:
    topo(lambda d: d.update(routes={"ccat_to_us": {"type": "RELAY", "from": "ccat", "to": "us", "via": "cologne"}}))
    add_bundles(ops_db, 2)
    routing.route_bundles(ops_db, location_row(ops_db, "ccat/buffer"))
    by_bundle: dict[int, list[tuple]] = {}
    for leg in legs(ops_db):
        by_bundle.setdefault(leg["bundle"], []).append((leg["origin"], leg["destination"]))
    # Whichever archive site comes first, nothing goes from ccat straight to us.
    for bundle_legs in by_bundle.values():
        assert ("ccat/buffer", "us/buffer") not in bundle_legs
        assert bundle_legs[0] == ("ccat/buffer", "cologne/buffer")
        assert ("cologne/buffer", "us/buffer") in bundle_legs


def test_custom_and_direct_routes(ops_db: OpsDb, data_root: Path, topo) -> None:
    def overrides(document: dict) -> None:
        document["sites"]["cologne"]["locations"]["inbox"] = {
            "type": "BUFFER",
            "root_path": f"{data_root}/cologne/inbox",
            "priority": 5,
        }
        document["routes"] = {
            "to_cologne_inbox": {
                "type": "CUSTOM",
                "from": "ccat",
                "to": "cologne",
                "from_location": "ccat/buffer",
                "to_location": "cologne/inbox",
                "method": "local",
            },
            "to_us_processing": {
                "type": "DIRECT",
                "from": "ccat",
                "to": "us",
                "to_location": "us/buffer",
                "method": "bbcp",
            },
        }

    topo(overrides)
    add_bundles(ops_db, 2)
    routing.route_bundles(ops_db, location_row(ops_db, "ccat/buffer"))
    firsts = [leg for leg in legs(ops_db) if leg["origin"] == "ccat/buffer"]
    assert {(leg["destination"], leg["method"]) for leg in firsts} == {
        ("cologne/inbox", "local"),
        ("us/buffer", "bbcp"),
    }


def test_no_archive_site_means_no_transfer(ops_db: OpsDb, topo) -> None:
    def no_archives(document: dict) -> None:
        del document["sites"]["cologne"]["locations"]["lta"]
        del document["sites"]["us"]["locations"]["lta"]

    topo(no_archives)
    add_bundles(ops_db, 1)
    assert routing.route_bundles(ops_db, location_row(ops_db, "ccat/buffer")) == []
