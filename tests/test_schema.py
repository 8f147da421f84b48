"""The database enforces the state model; transitions are guarded; claims never overlap."""

from __future__ import annotations

import psycopg
import pytest

from ccat_operators import states
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import Status
from tests.helpers import ensure_obs_unit, insert_pending_packages


@pytest.fixture
def packages(ops_db: OpsDb, example_topology) -> list[int]:
    ensure_obs_unit(ops_db)
    return insert_pending_packages(ops_db, 40)


def test_database_rejects_an_invalid_status(ops_db: OpsDb, packages: list[int]) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match='invalid input value for enum status: "DONE"'):
        ops_db.conn.execute("UPDATE raw_data_package SET status = 'DONE' WHERE id = %s", (packages[0],))
    assert states.status_of(ops_db, states.PACKAGE, packages[0]) == Status.PENDING


def test_database_rejects_an_invalid_copy_status_and_copy_without_subject(ops_db: OpsDb, packages: list[int]) -> None:
    location = ops_db.fetch_one("data_location_by_key", site="ccat", name="buffer").id
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        ops_db.conn.execute(
            "INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, status) "
            "VALUES (%s, %s, 'x', 'GONE')",
            (location, packages[0]),
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        ops_db.conn.execute("INSERT INTO physical_copy (data_location_id, path) VALUES (%s, 'x')", (location,))


def test_archive_transfer_requires_intervention_after_three_attempts(ops_db: OpsDb, packages: list[int]) -> None:
    buffer = ops_db.fetch_one("data_location_by_key", site="cologne", name="buffer").id
    lta = ops_db.fetch_one("data_location_by_key", site="cologne", name="lta").id
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
