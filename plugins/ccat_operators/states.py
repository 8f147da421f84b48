"""The state machines of ops-db, mirrored from the PostgreSQL enums.

The database refuses unknown values; this module refuses impossible moves before they
reach it, so a bug shows up as a clear error rather than as a silent state jump.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Lifecycle of every unit of work (packages, bundles, transfers, archive, staging)."""

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


STATUS_TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.SCHEDULED, Status.FAILED}),
    # SCHEDULED/IN_PROGRESS -> PENDING is the stuck-work sweep handing work back.
    Status.SCHEDULED: frozenset({Status.IN_PROGRESS, Status.PENDING, Status.FAILED}),
    Status.IN_PROGRESS: frozenset({Status.COMPLETED, Status.FAILED, Status.PENDING}),
    # An operator (or a retry) sends failed work round again.
    Status.FAILED: frozenset({Status.PENDING}),
    Status.COMPLETED: frozenset(),
}

PHYSICAL_COPY_TRANSITIONS: dict[PhysicalCopyStatus, frozenset[PhysicalCopyStatus]] = {
    PhysicalCopyStatus.PRESENT: frozenset({PhysicalCopyStatus.DELETION_SCHEDULED}),
    PhysicalCopyStatus.STAGED: frozenset({PhysicalCopyStatus.DELETION_SCHEDULED}),
    PhysicalCopyStatus.DELETION_SCHEDULED: frozenset(
        {PhysicalCopyStatus.DELETION_IN_PROGRESS, PhysicalCopyStatus.PRESENT}
    ),
    PhysicalCopyStatus.DELETION_IN_PROGRESS: frozenset(
        {
            PhysicalCopyStatus.DELETED,
            PhysicalCopyStatus.DELETION_FAILED,
            PhysicalCopyStatus.DELETION_POSSIBLE,
        }
    ),
    PhysicalCopyStatus.DELETION_POSSIBLE: frozenset({PhysicalCopyStatus.DELETION_SCHEDULED}),
    PhysicalCopyStatus.DELETION_FAILED: frozenset({PhysicalCopyStatus.DELETION_SCHEDULED}),
    PhysicalCopyStatus.DELETED: frozenset(),
}


class InvalidTransitionError(ValueError):
    """A state change the state machine does not allow (a bug, not a race)."""


def check_status_transition(expected: Status, new: Status) -> None:
    """Raise InvalidTransitionError unless ``expected -> new`` is a legal move."""
    if new not in STATUS_TRANSITIONS[Status(expected)]:
        raise InvalidTransitionError(f"status cannot move from {expected} to {new}")


def check_copy_transition(expected: PhysicalCopyStatus, new: PhysicalCopyStatus) -> None:
    """Raise InvalidTransitionError unless ``expected -> new`` is a legal copy move."""
    if new not in PHYSICAL_COPY_TRANSITIONS[PhysicalCopyStatus(expected)]:
        raise InvalidTransitionError(f"physical copy cannot move from {expected} to {new}")
