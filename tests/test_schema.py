"""The database enforces the state model; transitions are guarded; claims never overlap."""

from __future__ import annotations

import threading

import psycopg
import pytest

from ccat_operators.opsdb import OpsDb
from ccat_operators.states import InvalidTransitionError, PhysicalCopyStatus, Status
from tests.helpers import ensure_obs_unit, insert_pending_packages


@pytest.fixture
def packages(ops_db: OpsDb, example_topology) -> list[int]:
    ensure_obs_unit(ops_db)
    return insert_pending_packages(ops_db, 40)


def test_database_rejects_an_invalid_status(ops_db: OpsDb, packages: list[int]) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match='invalid input value for enum status: "DONE"'):
        ops_db.conn.execute("UPDATE raw_data_package SET status = 'DONE' WHERE id = %s", (packages[0],))
    assert ops_db.status_of("raw_data_package", packages[0]) == Status.PENDING


def test_database_rejects_an_invalid_copy_status_and_copy_without_subject(ops_db: OpsDb, packages: list[int]) -> None:
    location = ops_db.fetch_one("data_location_by_key", site="ccat", name="buffer")["id"]
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        ops_db.conn.execute(
            "INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, status) "
            "VALUES (%s, %s, 'x', 'GONE')",
            (location, packages[0]),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        ops_db.conn.execute("INSERT INTO physical_copy (data_location_id, path) VALUES (%s, 'x')", (location,))


def test_guarded_transition_from_wrong_state_changes_nothing(ops_db: OpsDb, packages: list[int]) -> None:
    package = packages[0]
    assert ops_db.transition("raw_data_package", package, Status.PENDING, Status.SCHEDULED)
    before = ops_db.conn.execute("SELECT * FROM raw_data_package WHERE id = %s", (package,)).fetchone()

    # A retried task repeats the same move: a no-op, not a corruption.
    assert not ops_db.transition("raw_data_package", package, Status.PENDING, Status.SCHEDULED)
    # A stale worker believes the package is still IN_PROGRESS: refused.
    assert not ops_db.transition("raw_data_package", package, Status.IN_PROGRESS, Status.COMPLETED)

    after = ops_db.conn.execute("SELECT * FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    assert after == before


def test_impossible_transition_is_a_clear_error(ops_db: OpsDb, packages: list[int]) -> None:
    with pytest.raises(InvalidTransitionError, match="status cannot move from COMPLETED to PENDING"):
        ops_db.transition("raw_data_package", packages[0], Status.COMPLETED, Status.PENDING)
    with pytest.raises(InvalidTransitionError, match="physical copy cannot move from DELETED to PRESENT"):
        ops_db.transition_copy(1, PhysicalCopyStatus.DELETED, PhysicalCopyStatus.PRESENT)
    with pytest.raises(ValueError, match="'site' is not a status table"):
        ops_db.transition("site", 1, Status.PENDING, Status.SCHEDULED)


def test_failure_reason_is_recorded_and_cleared(ops_db: OpsDb, packages: list[int]) -> None:
    package = packages[0]
    assert ops_db.transition("raw_data_package", package, Status.PENDING, Status.FAILED, "file vanished")
    row = ops_db.conn.execute("SELECT failure_reason FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    assert row["failure_reason"] == "file vanished"
    assert ops_db.transition("raw_data_package", package, Status.FAILED, Status.PENDING)
    row = ops_db.conn.execute("SELECT failure_reason FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    assert row["failure_reason"] is None


def test_claims_in_open_transactions_skip_each_others_rows(ops_db: OpsDb, ops_db_url: str, packages: list[int]) -> None:
    location = ops_db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer")["id"]
    with OpsDb.connect(ops_db_url) as first, OpsDb.connect(ops_db_url) as second, first.transaction():
        mine = {r["id"] for r in first.fetch_all("claim_pending_raw_data_packages", location_id=location, limit=10)}
        # The first claimer has not committed; the second neither waits nor takes its rows.
        with second.transaction():
            theirs = {
                r["id"] for r in second.fetch_all("claim_pending_raw_data_packages", location_id=location, limit=10)
            }
    assert len(mine) == len(theirs) == 10
    assert mine.isdisjoint(theirs)


def test_concurrent_claimers_never_share_a_row(ops_db: OpsDb, ops_db_url: str, packages: list[int]) -> None:
    location = ops_db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer")["id"]
    claimed: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def claimer(index: int) -> None:
        with OpsDb.connect(ops_db_url) as db:
            barrier.wait()
            while rows := db.fetch_all("claim_pending_raw_data_packages", location_id=location, limit=3):
                claimed[index].extend(row["id"] for row in rows)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [package for batch in claimed for package in batch]
    assert len(everything) == len(set(everything)) == len(packages)
    assert set(everything) == set(packages)
    statuses = ops_db.conn.execute("SELECT DISTINCT status FROM raw_data_package").fetchall()
    assert statuses == [{"status": "SCHEDULED"}]


def test_archive_transfer_requires_intervention_after_three_attempts(ops_db: OpsDb, packages: list[int]) -> None:
    buffer = ops_db.fetch_one("data_location_by_key", site="cologne", name="buffer")["id"]
    lta = ops_db.fetch_one("data_location_by_key", site="cologne", name="lta")["id"]
    row = ops_db.conn.execute(
        "INSERT INTO long_term_archive_transfer (raw_data_package_id, origin_location_id, destination_location_id,"
        " status, attempts) VALUES (%s, %s, %s, 'FAILED', 2) RETURNING id, requires_intervention",
        (packages[0], buffer, lta),
    ).fetchone()
    assert row["requires_intervention"] is False
    updated = ops_db.conn.execute(
        "UPDATE long_term_archive_transfer SET attempts = 3 WHERE id = %s RETURNING requires_intervention",
        (row["id"],),
    ).fetchone()
    assert updated["requires_intervention"] is True


def test_location_storage_details_are_enforced(ops_db: OpsDb, example_topology) -> None:
    site = ops_db.fetch_value("site_id", short_name="cologne")
    with pytest.raises(psycopg.errors.CheckViolation, match="storage_details"):
        ops_db.conn.execute(
            "INSERT INTO data_location (site_id, name, location_type, storage_type) "
            "VALUES (%s, 'bucketless', 'LONG_TERM_ARCHIVE', 'S3')",
            (site,),
        )
