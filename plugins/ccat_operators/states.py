"""The state machines of ops-db: every status column, its legal moves, and every write to it.

This module is the one owner of state. It holds

- the enums mirrored by the PostgreSQL enums (``Status``, ``PhysicalCopyStatus``, ...);
- :data:`COLUMNS`, one :class:`StatusColumn` per status column in ops-db, each with its
  legal moves and the lease kind that guards work on its rows. This is the single
  transition table: migration ``0007_state_machines.sql`` loads it into the
  ``status_transition`` table and a trigger on every status column refuses any other
  move, whoever makes it (a stray ``UPDATE`` fails loudly with ``check_violation``);
  ``tests/test_states.py`` keeps the two equal (a new move is a change here plus a
  migration inserting its row; the test names the rows that differ);
- every function that changes a status (:func:`move`, :func:`start`, :func:`claim`, the
  copy and staging writes...), so that no other module, and no SQL file outside
  :data:`STATUS_QUERIES`, writes a status column.

Moves are guarded (``WHERE <column> = expected``): repeating one (a retried or cleared
task) changes nothing and returns False, it never corrupts a row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccat_operators.opsdb import OpsDb
    from ccat_operators.rows import WorkItemRow


class Status(StrEnum):
    """Lifecycle of every unit of work (packages, bundles, transfers, unpacks, archive, staging)."""

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class PhysicalCopyStatus(StrEnum):
    """Lifecycle of one copy of a file, package or bundle at one location."""

    PRESENT = "PRESENT"
    STAGED = "STAGED"
    DELETION_SCHEDULED = "DELETION_SCHEDULED"
    DELETION_IN_PROGRESS = "DELETION_IN_PROGRESS"
    DELETION_POSSIBLE = "DELETION_POSSIBLE"
    DELETED = "DELETED"
    DELETION_FAILED = "DELETION_FAILED"
    #: Found by the audit: recorded here, but absent from storage.
    LOST = "LOST"
    #: Found by the audit: present, but not the recorded bytes (size or checksum).
    CORRUPT = "CORRUPT"


class LocationType(StrEnum):
    """Role of a DataLocation in the pipeline."""

    SOURCE = "SOURCE"
    BUFFER = "BUFFER"
    LONG_TERM_ARCHIVE = "LONG_TERM_ARCHIVE"
    PROCESSING = "PROCESSING"


class StorageType(StrEnum):
    """Technology behind a DataLocation."""

    DISK = "DISK"
    S3 = "S3"
    TAPE = "TAPE"


class RouteType(StrEnum):
    """Manual DataTransferRoute overrides."""

    DIRECT = "DIRECT"
    RELAY = "RELAY"
    CUSTOM = "CUSTOM"


class TransferMethod(StrEnum):
    """How bytes cross between buffers."""

    BBCP = "bbcp"
    RSYNC = "rsync"
    LOCAL = "local"


class InvalidTransitionError(ValueError):
    """A state change the state machine does not allow (a bug, not a race)."""


# The transition table ---------------------------------------------------------------

_P, _S, _I, _C, _F = Status.PENDING, Status.SCHEDULED, Status.IN_PROGRESS, Status.COMPLETED, Status.FAILED

#: Moves of every work item: claimed (PENDING -> SCHEDULED), started, finished; handed
#: back to PENDING by a failed try or the stuck-work sweep; FAILED sent round again by an
#: operator (or a cleared task).
WORK_MOVES: frozenset[tuple[str, str]] = frozenset(
    {(_P, _S), (_P, _F), (_S, _I), (_S, _P), (_S, _F), (_I, _C), (_I, _F), (_I, _P), (_F, _P)}
)

_PRESENT, _STAGED = PhysicalCopyStatus.PRESENT, PhysicalCopyStatus.STAGED
_SCHEDULED, _DELETING = PhysicalCopyStatus.DELETION_SCHEDULED, PhysicalCopyStatus.DELETION_IN_PROGRESS
_POSSIBLE, _DELETED = PhysicalCopyStatus.DELETION_POSSIBLE, PhysicalCopyStatus.DELETED
_DELETION_FAILED = PhysicalCopyStatus.DELETION_FAILED
_LOST, _CORRUPT = PhysicalCopyStatus.LOST, PhysicalCopyStatus.CORRUPT

#: Moves of a physical copy: scheduled for deletion (and unscheduled when the rules no
#: longer allow it), deleted under its lease; a copy written and verified again at the
#: same place after it was deleted (or its deletion failed) is PRESENT / STAGED again.
COPY_MOVES: frozenset[tuple[str, str]] = frozenset(
    {
        (_PRESENT, _SCHEDULED),
        (_STAGED, _SCHEDULED),
        (_SCHEDULED, _DELETING),
        (_SCHEDULED, _PRESENT),
        (_SCHEDULED, _STAGED),
        (_DELETING, _DELETED),
        (_DELETING, _DELETION_FAILED),
        (_DELETING, _POSSIBLE),
        (_POSSIBLE, _SCHEDULED),
        (_DELETION_FAILED, _SCHEDULED),
        (_DELETED, _PRESENT),
        (_DELETED, _STAGED),
        (_DELETION_FAILED, _PRESENT),
        (_DELETION_FAILED, _STAGED),
        # The audit finds a copy gone or damaged; a repair writes and verifies it again.
        (_PRESENT, _LOST),
        (_PRESENT, _CORRUPT),
        (_STAGED, _LOST),
        (_STAGED, _CORRUPT),
        (_LOST, _PRESENT),
        (_CORRUPT, _PRESENT),
        (_LOST, _STAGED),
        (_CORRUPT, _STAGED),
    }
)


@dataclass(frozen=True)
class StatusColumn:
    """One status column of ops-db: where it is, its legal moves, and its lease.

    ``lease`` names the advisory lock a worker holds on a row while it works on it
    (None: rows are only changed under their parent's lease).
    """

    table: str
    column: str
    states: type[StrEnum]
    moves: frozenset[tuple[str, str]]
    lease: str | None
    changed_at: str = "status_changed_at"
    reason: str = "failure_reason"

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"

    def check(self, expected: str, new: str) -> None:
        """Raise InvalidTransitionError unless ``expected -> new`` is a legal move."""
        if (self.states(expected), self.states(new)) not in self.moves:
            raise InvalidTransitionError(f"{self} cannot move from {expected} to {new}")


PACKAGE = StatusColumn("raw_data_package", "status", Status, WORK_MOVES, lease="raw_data_package")
BUNDLE = StatusColumn("data_transfer_package", "status", Status, WORK_MOVES, lease="data_transfer_package")
#: Completed work done again: a transfer whose arrived bundle turned out damaged (at
#: unpacking, or later by the audit), and the unpack of such a bundle; an archive transfer
#: whose archived object the audit found lost or corrupt.
REDO = frozenset({(_C, _P)})
TRANSFER = StatusColumn("data_transfer", "status", Status, WORK_MOVES | REDO, lease="data_transfer")
UNPACK = StatusColumn(
    "data_transfer", "unpack_status", Status, WORK_MOVES | REDO, lease="unpack",
    changed_at="unpack_status_changed_at", reason="unpack_failure_reason",
)  # fmt: skip
ARCHIVE = StatusColumn(
    "long_term_archive_transfer", "status", Status, WORK_MOVES | REDO, lease="long_term_archive_transfer"
)
STAGING_JOB = StatusColumn("staging_job", "status", Status, WORK_MOVES, lease="staging_job")
#: One package of a staging job, staged under the job's lease; a failed one is tried again.
STAGING_PACKAGE = StatusColumn(
    "staging_job_package", "status", Status, frozenset({(_P, _C), (_P, _F), (_F, _C), (_F, _P)}), lease=None
)
COPY = StatusColumn("physical_copy", "status", PhysicalCopyStatus, COPY_MOVES, lease="physical_copy")

#: Every status column of ops-db: the transition table.
COLUMNS: tuple[StatusColumn, ...] = (PACKAGE, BUNDLE, TRANSFER, UNPACK, ARCHIVE, STAGING_JOB, STAGING_PACKAGE, COPY)
#: The work items the stuck-work sweep looks after (IN_PROGRESS with a free lease).
WORK_COLUMNS: tuple[StatusColumn, ...] = (PACKAGE, BUNDLE, TRANSFER, UNPACK, ARCHIVE, STAGING_JOB)

#: The only SQL files that write a status column (``include/sql/queries/<name>.sql``);
#: only this module runs them, and ops-db's trigger checks each move they make.
STATUS_QUERIES = frozenset(
    {
        "move_status",
        "claim_pending_raw_data_packages",
        "claim_pending_data_transfer_packages",
        "schedule_copy_deletions",
        "unschedule_copy_deletion",
        "upsert_package_copy",
        "upsert_bundle_copy",
        "upsert_staged_copy",
        "set_staging_job_package_status",
        "clear_archive_intervention",
        "redeliver_transfer",
        "retry_unpack",
        "resend_transfer",
    }
)


def transition_rows() -> list[tuple[str, str, str, str]]:
    """``(table, column, from, to)`` for every legal move, sorted: the rows of ``status_transition``."""
    return sorted((column.table, column.column, str(old), str(new)) for column in COLUMNS for old, new in column.moves)


# Writes -----------------------------------------------------------------------------


def move(db: OpsDb, column: StatusColumn, row_id: int, expected: str, new: str, reason: str | None = None) -> bool:
    """Move one row from ``expected`` to ``new``; False if it was not in ``expected``.

    ``reason`` is stored in the column's failure-reason column (cleared when None).
    """
    column.check(expected, new)
    touched = db.execute(
        "move_status",
        identifiers={"table": column.table, "column": column.column, "changed_at": column.changed_at,
                     "reason": column.reason},
        id=row_id, expected=str(expected), new=str(new), reason=reason,
    )  # fmt: skip
    return touched == 1


def status_of(db: OpsDb, column: StatusColumn, row_id: int) -> str | None:
    """The current value of ``column`` for one row, or None if there is no such row."""
    return db.fetch_value("status_of", identifiers={"table": column.table, "column": column.column}, id=row_id)


def start(db: OpsDb, column: StatusColumn, row_id: int, retry_failed: bool = False) -> bool:
    """Walk one row to IN_PROGRESS through the legal moves, from wherever it stands.

    Work found PENDING is claimed (PENDING -> SCHEDULED -> IN_PROGRESS); work left
    SCHEDULED or IN_PROGRESS by a worker that died continues; with ``retry_failed`` (an
    operator cleared the task) FAILED work starts again. Call it holding the row's
    lease. True if the row is now IN_PROGRESS.
    """
    steps = [(_P, _S), (_S, _I)]
    if retry_failed:
        steps.insert(0, (_F, _P))
    for expected, new in steps:
        move(db, column, row_id, expected, new)
    return status_of(db, column, row_id) == _I


def claim(db: OpsDb, column: StatusColumn, exclude: Iterable[int] = (), **params: Any) -> list[WorkItemRow]:
    """Claim PENDING work (-> SCHEDULED, ``FOR UPDATE SKIP LOCKED``) of a packaging or bundling location.

    ``exclude``: items not to claim again (those that already waited in this run).
    """
    queries = {PACKAGE: "claim_pending_raw_data_packages", BUNDLE: "claim_pending_data_transfer_packages"}
    return db.fetch_all(queries[column], exclude=list(exclude), **params)


@contextmanager
def lease(db: OpsDb, column: StatusColumn, row_id: int) -> Iterator[bool]:
    """Hold the lease of one row of ``column`` for the block (False: another worker holds it)."""
    if column.lease is None:
        raise ValueError(f"{column} rows have no lease of their own")
    with db.lease(column.lease, row_id) as mine:
        yield mine


def redeliver(db: OpsDb, transfer_id: int, reason: str) -> int | None:
    """Send a transfer again whose arrived bundle is damaged (COMPLETED -> PENDING, unpack back to PENDING).

    Returns the transfer's new redelivery count, or None if it was not COMPLETED with
    its unpack IN_PROGRESS.
    """
    return db.fetch_value("redeliver_transfer", id=transfer_id, reason=reason)


def resend(db: OpsDb, transfer_id: int, reason: str) -> bool:
    """Send a COMPLETED transfer again, and unpack it again: what it delivered was found lost or corrupt."""
    return db.fetch_value("resend_transfer", id=transfer_id, reason=reason) is not None


def clear_archive_intervention(db: OpsDb, transfer_id: int) -> bool:
    """An operator lets an archive transfer that needed intervention be tried again (hold its lease)."""
    return db.fetch_value("clear_archive_intervention", id=transfer_id) is not None


def set_staging_package(db: OpsDb, job_id: int, package_id: int, new: Status) -> None:
    """Record how one package of a staging job ended (under the job's lease)."""
    db.execute("set_staging_job_package_status", job_id=job_id, package_id=package_id, status=str(new))


# Physical copies ----------------------------------------------------------------------


def record_package_copy(db: OpsDb, location_id: int, package_id: int, path: str, checksum: str | None) -> int:
    """A verified copy of a package is at ``location_id`` (PRESENT, new or written again)."""
    return db.fetch_value(
        "upsert_package_copy", location_id=location_id, package_id=package_id, path=path, checksum=checksum
    )


def record_bundle_copy(db: OpsDb, location_id: int, bundle_id: int, path: str, checksum: str) -> int:
    """A verified copy of a bundle is at ``location_id`` (PRESENT, new or written again)."""
    return db.fetch_value(
        "upsert_bundle_copy", location_id=location_id, bundle_id=bundle_id, path=path, checksum=checksum
    )


def record_staged_copy(db: OpsDb, location_id: int, package_id: int, job_id: int, path: str, checksum: str) -> int:
    """A package of a staging job is staged, verified, at ``location_id`` (STAGED)."""
    return db.fetch_value(
        "upsert_staged_copy", location_id=location_id, package_id=package_id, job_id=job_id, path=path,
        checksum=checksum,
    )  # fmt: skip


def schedule_deletions(db: OpsDb, copy_ids: Iterable[int]) -> int:
    """PRESENT / STAGED -> DELETION_SCHEDULED for copies the rules allow to go; returns how many moved."""
    ids = list(copy_ids)
    return len(db.fetch_column("schedule_copy_deletions", ids=ids)) if ids else 0


def unschedule_deletion(db: OpsDb, copy_id: int) -> bool:
    """DELETION_SCHEDULED -> PRESENT (or STAGED): the rules no longer allow the copy to go."""
    return db.fetch_value("unschedule_copy_deletion", id=copy_id) is not None


def discard_copy(db: OpsDb, copy_id: int, reason: str) -> None:
    """A PRESENT copy turned out damaged and was removed: walk it to DELETED with ``reason``."""
    for expected, new in ((_PRESENT, _SCHEDULED), (_SCHEDULED, _DELETING)):
        move(db, COPY, copy_id, expected, new)
    move(db, COPY, copy_id, _DELETING, _DELETED, reason)


# An operator's retry --------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """What :func:`retry` found and did with one item.

    ``found`` is the item's status as found (None: there is no such row); ``retried``: it
    is PENDING again; ``busy``: a live worker holds its lease, and it was left alone.
    """

    found: str | None
    retried: bool = False
    busy: bool = False


def retry(db: OpsDb, column: StatusColumn, row_id: int) -> Retry:
    """An operator hands a FAILED work item back to its stage: FAILED -> PENDING, under its lease.

    The lease is taken first: an item a live worker holds (a try still running) is left
    alone. Its failure reason is cleared, and what made its stage give up starts again:
    an archive transfer's counted ``attempts`` (also one out of tries but not FAILED, see
    ``requires_intervention``), a transfer's counted ``faults``, an unpack's ``redeliveries``. A staging job's FAILED
    packages go back to PENDING with it. Anything not FAILED is left as it is. Everything
    that waits on the item (bundling on a package, routing on a bundle, the legs that
    depend on a transfer, archiving on an unpack) proceeds once its stage has done it.
    """
    if column not in WORK_COLUMNS:
        raise ValueError(f"{column} is not a work item an operator retries")
    with lease(db, column, row_id) as mine:
        found = status_of(db, column, row_id)
        if found is None or not mine:
            return Retry(found, busy=found is not None)
        with db.transaction():
            if column is ARCHIVE:
                retried = clear_archive_intervention(db, row_id)
            elif column is UNPACK:
                retried = db.fetch_value("retry_unpack", id=row_id) is not None
            else:
                retried = move(db, column, row_id, _F, _P)
            if retried and column is TRANSFER:
                db.fetch_value("reset_transfer_faults", id=row_id)
            if retried and column is STAGING_JOB:
                for package in db.fetch_all("staging_job_packages", job_id=row_id):
                    if package.status == _F:
                        set_staging_package(db, row_id, package.id, _P)
        return Retry(found, retried)
