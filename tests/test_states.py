"""The state machines: one transition table, enforced by ops-db itself, and one owner of every write."""

from __future__ import annotations

import re
import threading
from itertools import product

import psycopg
import pytest

from ccat_operators import states
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import InvalidTransitionError, PhysicalCopyStatus, Status
from tests.conftest import REPO
from tests.helpers import ensure_obs_unit, insert_pending_packages

QUERIES = REPO / "include" / "sql" / "queries"


@pytest.fixture
def packages(ops_db: OpsDb, example_topology) -> list[int]:
    ensure_obs_unit(ops_db)
    return insert_pending_packages(ops_db, 3)


@pytest.fixture
def many_packages(ops_db: OpsDb, example_topology) -> list[int]:
    ensure_obs_unit(ops_db)
    return insert_pending_packages(ops_db, 40)


def test_the_database_holds_exactly_the_transition_table(ops_db: OpsDb) -> None:
    rows = ops_db.conn.execute(
        "SELECT table_name, column_name, from_status, to_status FROM status_transition ORDER BY 1, 2, 3, 4"
    ).fetchall()
    in_database = {tuple(row.values()) for row in rows}
    in_code = set(states.transition_rows())
    assert in_database == in_code, (
        f"add a migration: rows missing in ops-db {sorted(in_code - in_database)}, "
        f"rows to delete {sorted(in_database - in_code)}"
    )


def test_every_status_column_has_a_guard(ops_db: OpsDb) -> None:
    triggers = ops_db.conn.execute(
        "SELECT event_object_table AS t, action_statement AS a FROM information_schema.triggers "
        "WHERE trigger_name LIKE '%%_guard'"
    ).fetchall()
    guarded = {(row["t"], re.search(r"guard_status_transition\('(\w+)'\)", row["a"])[1]) for row in triggers}
    assert guarded == {(c.table, c.column) for c in states.COLUMNS}


class World:
    """One row per status table, inserted directly in any state (inserts are not guarded)."""

    def __init__(self, db: OpsDb, package: int) -> None:
        self.db, self.package = db, package
        self.buffer = db.fetch_one("data_location_by_key", site="ccat", name="buffer").id
        self.cologne = db.fetch_one("data_location_by_key", site="cologne", name="buffer").id
        self.ramses = db.fetch_one("data_location_by_key", site="cologne", name="ramses").id

    def sql(self, text: str, *params) -> int:
        return self.db.conn.execute(text, params).fetchone()["id"]

    def bundle(self, status: str = "COMPLETED") -> int:
        return self.sql("INSERT INTO data_transfer_package (name, origin_location_id, status) "
                        "VALUES ('b' || gen_random_uuid(), %s, %s) RETURNING id", self.buffer, status)  # fmt: skip

    def job(self, status: str = "IN_PROGRESS") -> int:
        return self.sql("INSERT INTO staging_job (name, destination_location_id, status) "
                        "VALUES ('j' || gen_random_uuid(), %s, %s) RETURNING id", self.ramses, status)  # fmt: skip

    def insert(self, column: states.StatusColumn, status: str) -> str:
        """Insert a row of ``column``'s table in ``status``; return the WHERE clause naming it."""
        if column is states.PACKAGE:
            row = self.sql(
                "INSERT INTO raw_data_package (name, executed_obs_unit_id, instrument_module_id, source_location_id,"
                " relative_path, status) SELECT 'p' || gen_random_uuid(), executed_obs_unit_id, instrument_module_id,"
                " source_location_id, 'x.tar', %s FROM raw_data_package WHERE id = %s RETURNING id",
                status, self.package,
            )  # fmt: skip
        elif column is states.BUNDLE:
            row = self.bundle(status)
        elif column in (states.TRANSFER, states.UNPACK):
            transfer, unpack = (status, "PENDING") if column is states.TRANSFER else ("COMPLETED", status)
            row = self.sql(
                "INSERT INTO data_transfer (data_transfer_package_id, origin_location_id, destination_location_id,"
                " status, unpack_status) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                self.bundle(), self.buffer, self.cologne, transfer, unpack,
            )  # fmt: skip
        elif column is states.ARCHIVE:
            lta = self.db.fetch_one("data_location_by_key", site="cologne", name="lta").id
            self.db.conn.execute("DELETE FROM long_term_archive_transfer")
            row = self.sql(
                "INSERT INTO long_term_archive_transfer (raw_data_package_id, origin_location_id,"
                " destination_location_id, status) VALUES (%s, %s, %s, %s) RETURNING id",
                self.package, self.cologne, lta, status,
            )  # fmt: skip
        elif column is states.STAGING_JOB:
            row = self.job(status)
        elif column is states.STAGING_PACKAGE:
            job = self.job()
            self.db.conn.execute("INSERT INTO staging_job_package (staging_job_id, raw_data_package_id, status) "
                                 "VALUES (%s, %s, %s)", (job, self.package, status))  # fmt: skip
            return f"staging_job_id = {job}"
        else:
            self.db.conn.execute("DELETE FROM physical_copy")
            row = self.sql("INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, status) "
                           "VALUES (%s, %s, 'x', %s) RETURNING id", self.ramses, self.package, status)  # fmt: skip
        return f"id = {row}"


@pytest.mark.parametrize("column", states.COLUMNS, ids=str)
def test_ops_db_refuses_every_illegal_move_made_by_raw_sql(
    ops_db: OpsDb, packages: list[int], column: states.StatusColumn
) -> None:
    world = World(ops_db, packages[0])
    refused = 0
    for old, new in product(column.states, repeat=2):
        with ops_db.transaction():
            where = world.insert(column, old)
        statement = f"UPDATE {column.table} SET {column.column} = %s WHERE {where}"  # noqa: S608 - test identifiers
        legal = old == new or (old, new) in column.moves
        if legal:
            ops_db.conn.execute(statement, (str(new),))
            continue
        with pytest.raises(psycopg.errors.CheckViolation) as refusal:
            ops_db.conn.execute(statement, (str(new),))
        assert f"{column.table}.{column.column} cannot move from {old} to {new}" in str(refusal.value)
        refused += 1
    assert refused > 0


def test_guarded_move_from_the_wrong_state_changes_nothing(ops_db: OpsDb, packages: list[int]) -> None:
    package = packages[0]
    assert states.move(ops_db, states.PACKAGE, package, Status.PENDING, Status.SCHEDULED)
    before = ops_db.conn.execute("SELECT * FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    # A retried task repeats the same move: a no-op, not a corruption.
    assert not states.move(ops_db, states.PACKAGE, package, Status.PENDING, Status.SCHEDULED)
    # A stale worker believes the package is still IN_PROGRESS: refused.
    assert not states.move(ops_db, states.PACKAGE, package, Status.IN_PROGRESS, Status.COMPLETED)
    after = ops_db.conn.execute("SELECT * FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    assert after == before


def test_an_impossible_move_is_a_clear_error_before_it_reaches_the_database(ops_db: OpsDb) -> None:
    with pytest.raises(InvalidTransitionError, match="raw_data_package.status cannot move from COMPLETED to PENDING"):
        states.move(ops_db, states.PACKAGE, 1, Status.COMPLETED, Status.PENDING)
    with pytest.raises(InvalidTransitionError, match="physical_copy.status cannot move from DELETED to DELETION_"):
        states.move(ops_db, states.COPY, 1, PhysicalCopyStatus.DELETED, PhysicalCopyStatus.DELETION_IN_PROGRESS)


def test_failure_reason_is_recorded_and_cleared(ops_db: OpsDb, packages: list[int]) -> None:
    package = packages[0]
    assert states.move(ops_db, states.PACKAGE, package, Status.PENDING, Status.FAILED, "file vanished")
    row = ops_db.conn.execute("SELECT failure_reason FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    assert row["failure_reason"] == "file vanished"
    assert states.move(ops_db, states.PACKAGE, package, Status.FAILED, Status.PENDING)
    row = ops_db.conn.execute("SELECT failure_reason FROM raw_data_package WHERE id = %s", (package,)).fetchone()
    assert row["failure_reason"] is None


def test_start_walks_to_in_progress_from_wherever_the_work_stands(ops_db: OpsDb, packages: list[int]) -> None:
    pending, failed, started = packages
    states.move(ops_db, states.PACKAGE, failed, Status.PENDING, Status.FAILED, "bad")
    states.move(ops_db, states.PACKAGE, started, Status.PENDING, Status.SCHEDULED)
    assert states.start(ops_db, states.PACKAGE, pending)
    assert states.start(ops_db, states.PACKAGE, started)
    assert not states.start(ops_db, states.PACKAGE, failed)  # FAILED waits for an operator...
    assert states.start(ops_db, states.PACKAGE, failed, retry_failed=True)  # ...or a cleared task
    assert {states.status_of(ops_db, states.PACKAGE, p) for p in packages} == {Status.IN_PROGRESS}


_WRITES_STATUS = re.compile(r"\b(?:SET|,)\s*(?:\{column\}|\w*status)\s*=|INSERT INTO\s+\w+\s*\([^)]*\bstatus\b", re.I)


def test_no_sql_file_outside_the_state_module_writes_a_status_column() -> None:
    writers = {path.stem for path in QUERIES.glob("*.sql") if _WRITES_STATUS.search(path.read_text())}
    assert writers, "the pattern finds nothing: it is broken"
    assert writers == states.STATUS_QUERIES, f"outside states.STATUS_QUERIES: {sorted(writers - states.STATUS_QUERIES)}"


def test_only_the_state_module_runs_the_status_queries() -> None:
    sources = [p for p in (REPO / "plugins" / "ccat_operators").rglob("*.py") if p.name not in ("states.py", "rows.py")]
    for path in [*sources, *(REPO / "dags").glob("*.py")]:
        text = path.read_text()
        used = {name for name in states.STATUS_QUERIES if re.search(rf"[\"']{name}[\"']", text)}
        assert not used, f"{path.relative_to(REPO)} runs {sorted(used)} itself; go through ccat_operators.states"


def test_every_lease_is_named_by_its_column() -> None:
    leases = [c.lease for c in states.COLUMNS if c.lease is not None]
    assert len(leases) == len(set(leases))
    assert set(states.WORK_COLUMNS) <= {c for c in states.COLUMNS if c.lease}


def test_claims_in_open_transactions_skip_each_others_rows(
    ops_db: OpsDb, ops_db_url: str, many_packages: list[int]
) -> None:
    location = ops_db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer").id
    with OpsDb.connect(ops_db_url) as first, OpsDb.connect(ops_db_url) as second, first.transaction():
        mine = {r.id for r in states.claim(first, states.PACKAGE, location_id=location, limit=10)}
        # The first claimer has not committed; the second neither waits nor takes its rows.
        with second.transaction():
            theirs = {r.id for r in states.claim(second, states.PACKAGE, location_id=location, limit=10)}
    assert len(mine) == len(theirs) == 10
    assert mine.isdisjoint(theirs)


def test_concurrent_claimers_never_share_a_row(ops_db: OpsDb, ops_db_url: str, many_packages: list[int]) -> None:
    location = ops_db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer").id
    claimed: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def claimer(index: int) -> None:
        with OpsDb.connect(ops_db_url) as db:
            barrier.wait()
            while rows := states.claim(db, states.PACKAGE, location_id=location, limit=3):
                claimed[index].extend(row.id for row in rows)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [package for batch in claimed for package in batch]
    assert len(everything) == len(set(everything)) == len(many_packages)
    assert set(everything) == set(many_packages)
    statuses = ops_db.conn.execute("SELECT DISTINCT status FROM raw_data_package").fetchall()
    assert statuses == [{"status": "SCHEDULED"}]
