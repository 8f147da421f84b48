"""The one work loop of every stage: lease -> start -> do -> record -> complete.

Packaging, bundling, unpacking, archiving and staging differ in what doing one item
means; this loop owns everything that must be the same for all of them:

1. an item is worked on only under its lease (:func:`states.lease`), and only once
   walked to IN_PROGRESS (:func:`states.start`);
2. the stage's ``attempt(row)`` does the work - writes ``.part`` files and verifies
   them, or uploads and verifies - and returns what records its outcome;
3. that record and the move to COMPLETED happen in one transaction;
4. an :class:`ItemFault` ends the item (by default FAILED with the reason; a stage may
   decide otherwise, e.g. count it or send it again) and the loop goes on with the rest;
   an :class:`ItemWaits` puts it back to PENDING with the reason, and the loop goes on;
5. any other error is the infrastructure's: the item, and every claimed item not yet
   started, go back to PENDING with the reason, and the error is raised so the task
   retries.

:func:`reclaim_abandoned` hands back items a dead worker left SCHEDULED or IN_PROGRESS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ccat_operators import states
from ccat_operators.faults import ItemFault, ItemWaits
from ccat_operators.states import Status, StatusColumn

if TYPE_CHECKING:
    from ccat_operators.opsdb import OpsDb
    from ccat_operators.rows import WorkItemRow as Row

log = logging.getLogger(__name__)

#: What an attempt returns: the writes that record its outcome (run in the transaction
#: that completes the item), or None if there is nothing to record.
Record = Callable[[], None] | None


@dataclass
class WorkResult:
    """What one run of a stage did, by item name."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    reclaimed: list[str] = field(default_factory=list)
    #: Items that could not go on now (ItemWaits): PENDING again, with the reason.
    waiting: dict[str, str] = field(default_factory=dict)
    #: The item at which an error of the infrastructure stopped the run (it is PENDING again).
    interrupted: str | None = None


def fail(db: OpsDb, column: StatusColumn, row: Row, fault: ItemFault, result: WorkResult) -> None:
    """The default end of an item at fault: FAILED, with the fault as its reason."""
    states.move(db, column, row.id, Status.IN_PROGRESS, Status.FAILED, str(fault))
    log.error("%s %s FAILED: %s", column.table, row.name, fault)
    result.failed[row.name] = str(fault)


def run(
    db: OpsDb,
    column: StatusColumn,
    rows: Iterable[Row],
    attempt: Callable[[Row], Record],
    result: WorkResult,
    *,
    retry_failed: bool = False,
    on_fault: Callable[[OpsDb, StatusColumn, Row, ItemFault, WorkResult], None] = fail,
) -> None:
    """Work through ``rows`` (anything with ``id`` and ``name``) of ``column`` (see module doc).

    ``retry_failed``: FAILED items start again (a task an operator cleared).
    """
    rows = list(rows)
    for position, row in enumerate(rows):
        with states.lease(db, column, row.id) as mine:
            if not mine or not states.start(db, column, row.id, retry_failed):
                continue
            try:
                record = attempt(row)
                with db.transaction():
                    if record is not None:
                        record()
                    if not states.move(db, column, row.id, Status.IN_PROGRESS, Status.COMPLETED):
                        raise RuntimeError(f"{column.table} {row.name} left IN_PROGRESS while it was worked on")
            except ItemFault as fault:
                on_fault(db, column, row, fault, result)
                continue
            except ItemWaits as wait:
                states.move(db, column, row.id, Status.IN_PROGRESS, Status.PENDING, f"waiting: {wait}")
                log.warning("%s %s waits: %s", column.table, row.name, wait)
                result.waiting[row.name] = str(wait)
                continue
            except BaseException as error:
                states.move(db, column, row.id, Status.IN_PROGRESS, Status.PENDING, f"interrupted ({error})")
                result.interrupted = row.name
                _hand_back(db, column, rows[position + 1 :])
                raise
            result.completed.append(row.name)


def _hand_back(db: OpsDb, column: StatusColumn, rows: list[Row]) -> None:
    """Claimed items not started when the run stopped go back to PENDING at once."""
    for row in rows:
        states.move(db, column, row.id, Status.SCHEDULED, Status.PENDING)


def reclaim_abandoned(db: OpsDb, column: StatusColumn, find_query: str, **params: Any) -> list[str]:
    """Hand items left SCHEDULED / IN_PROGRESS by a dead worker (their lease is free) back to PENDING."""
    reclaimed = []
    for row in db.fetch_all(find_query, limit=10_000, **params):
        with states.lease(db, column, row.id) as mine:
            if mine and states.move(db, column, row.id, row.status, Status.PENDING, "its worker died; again"):
                log.warning("%s %s was %s with no live worker; back to PENDING", column.table, row.name,
                            row.status)  # fmt: skip
                reclaimed.append(row.name)
    return reclaimed
