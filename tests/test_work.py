"""The work loop: an item at fault fails alone; an infrastructure fault costs nothing and is raised."""

from __future__ import annotations

import pytest

from ccat_operators import states, work
from ccat_operators.faults import ItemFault
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import WorkItemRow
from ccat_operators.states import Status
from tests.helpers import ensure_obs_unit, insert_pending_packages


@pytest.fixture
def items(ops_db: OpsDb, example_topology) -> list[WorkItemRow]:
    ensure_obs_unit(ops_db)
    return [WorkItemRow(package, f"pkg_{package}") for package in insert_pending_packages(ops_db, 4)]


def status(db: OpsDb, item: WorkItemRow) -> str:
    return states.status_of(db, states.PACKAGE, item.id)


def test_a_fault_of_one_item_fails_it_alone_and_the_others_complete(ops_db: OpsDb, items) -> None:
    recorded = []

    def attempt(row: WorkItemRow) -> work.Record:
        if row is items[1]:
            raise ItemFault("its checksum does not match")
        return lambda: recorded.append(row.id)

    result = work.WorkResult()
    work.run(ops_db, states.PACKAGE, items, attempt, result)
    assert result.completed == [items[0].name, items[2].name, items[3].name]
    assert result.failed == {items[1].name: "its checksum does not match"}
    assert [status(ops_db, i) for i in items] == ["COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    assert recorded == [items[0].id, items[2].id, items[3].id]


def test_an_infrastructure_fault_costs_nothing_and_hands_the_rest_back(ops_db: OpsDb, items) -> None:
    source = ops_db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer")
    claimed = states.claim(ops_db, states.PACKAGE, location_id=source.id, limit=10)
    assert len(claimed) == 4

    def attempt(row: WorkItemRow) -> work.Record:
        if row.id == claimed[1].id:
            raise OSError(28, "No space left on device")
        return None

    result = work.WorkResult()
    with pytest.raises(OSError, match="No space left"):
        work.run(ops_db, states.PACKAGE, claimed, attempt, result)
    assert result.completed == [claimed[0].name] and result.interrupted == claimed[1].name
    assert [states.status_of(ops_db, states.PACKAGE, c.id) for c in claimed] == [
        "COMPLETED", "PENDING", "PENDING", "PENDING",
    ]  # fmt: skip
    reason = ops_db.conn.execute("SELECT failure_reason FROM raw_data_package WHERE id = %s", (claimed[1].id,))
    assert "No space left" in reason.fetchone()["failure_reason"]


def test_a_failing_record_rolls_back_and_puts_the_item_back(ops_db: OpsDb, items) -> None:
    def attempt(row: WorkItemRow) -> work.Record:
        def record() -> None:
            states.record_package_copy(ops_db, 1, row.id, "x.tar", None)
            raise ConnectionError("database went away")

        return record

    with pytest.raises(ConnectionError):
        work.run(ops_db, states.PACKAGE, items[:1], attempt, work.WorkResult())
    assert status(ops_db, items[0]) == Status.PENDING
    copies = ops_db.conn.execute("SELECT count(*) AS n FROM physical_copy").fetchone()["n"]
    assert copies == 0  # the record's writes were rolled back with it


def test_an_item_leased_by_another_worker_is_left_alone(ops_db: OpsDb, ops_db_url: str, items) -> None:
    with OpsDb.connect(ops_db_url) as other, states.lease(other, states.PACKAGE, items[0].id) as held:
        assert held
        result = work.WorkResult()
        work.run(ops_db, states.PACKAGE, items[:2], lambda row: None, result)
    assert result.completed == [items[1].name]
    assert status(ops_db, items[0]) == Status.PENDING


def test_failed_work_starts_again_only_when_asked(ops_db: OpsDb, items) -> None:
    states.move(ops_db, states.PACKAGE, items[0].id, Status.PENDING, Status.FAILED, "bad")
    result = work.WorkResult()
    work.run(ops_db, states.PACKAGE, items[:1], lambda row: None, result)
    assert result.completed == [] and status(ops_db, items[0]) == Status.FAILED
    work.run(ops_db, states.PACKAGE, items[:1], lambda row: None, result, retry_failed=True)
    assert result.completed == [items[0].name] and status(ops_db, items[0]) == Status.COMPLETED
