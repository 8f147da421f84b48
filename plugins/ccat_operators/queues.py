"""Celery queue names per data location, as the seeds' operation-location matrix says.

A queue is ``{site_short_name}_{location_name}_{operation}``; a worker that runs where a
location's storage is mounted serves exactly that location's queues. Queue names are
derived from ops-db (``discover``) for the CLI, or from a parsed topology file
(``queues_for_location``) for DAG files, which must not touch the database while parsing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType


class Operation(StrEnum):
    """Units of work, each served by a queue per location."""

    RAW_DATA_PACKAGE_CREATION = "raw_data_package_creation"
    DATA_TRANSFER_PACKAGE_CREATION = "data_transfer_package_creation"
    DATA_TRANSFER = "data_transfer"
    DATA_TRANSFER_UNPACKING = "data_transfer_unpacking"
    LONG_TERM_ARCHIVE_TRANSFER = "long_term_archive_transfer"
    STAGING = "staging"
    DELETION = "deletion"
    MONITORING = "monitoring"


#: Which operations each location type serves (the seeds' operation-location matrix).
OPERATIONS_BY_LOCATION_TYPE: dict[LocationType, tuple[Operation, ...]] = {
    LocationType.SOURCE: (
        Operation.RAW_DATA_PACKAGE_CREATION,
        Operation.DELETION,
        Operation.MONITORING,
    ),
    LocationType.BUFFER: (
        Operation.DATA_TRANSFER_PACKAGE_CREATION,
        Operation.DATA_TRANSFER,
        Operation.DATA_TRANSFER_UNPACKING,
        Operation.DELETION,
        Operation.MONITORING,
    ),
    LocationType.LONG_TERM_ARCHIVE: (
        Operation.LONG_TERM_ARCHIVE_TRANSFER,
        Operation.MONITORING,
    ),
    LocationType.PROCESSING: (
        Operation.STAGING,
        Operation.DELETION,
        Operation.MONITORING,
    ),
}


@dataclass(frozen=True, order=True)
class Queue:
    site: str
    location: str
    operation: Operation

    @property
    def name(self) -> str:
        return queue_name(self.site, self.location, self.operation)


def queue_name(site: str, location: str, operation: Operation | str) -> str:
    """Return ``{site}_{location}_{operation}``, e.g. ``cologne_buffer_data_transfer``."""
    return f"{site}_{location}_{Operation(operation).value}"


def queues_for_location(site: str, location: str, location_type: LocationType | str) -> list[Queue]:
    """Return the queues one location serves, in matrix order."""
    operations = OPERATIONS_BY_LOCATION_TYPE[LocationType(location_type)]
    return [Queue(site, location, operation) for operation in operations]


def discover(db: OpsDb, site: str | None = None, location: str | None = None) -> list[Queue]:
    """Return the queues of every active location in ops-db, optionally filtered.

    Raises LookupError when the filter matches no active location, so a typo in a
    worker's start-up command fails loudly instead of starting a worker with no queues.
    """
    rows = db.fetch_all("active_locations", site=site, location=location)
    if not rows:
        wanted = "/".join(part for part in (site, location) if part) or "any site"
        raise LookupError(f"no active data location matches {wanted}")
    queues: list[Queue] = []
    for row in rows:
        queues.extend(queues_for_location(row.site, row.name, row.location_type))
    return queues


def worker_command(queues: Iterable[Queue], hostname: str) -> list[str]:
    """Return the argv that starts an Airflow Celery worker serving ``queues``."""
    names = [queue.name for queue in queues]
    if not names:
        raise ValueError("a worker needs at least one queue")
    return ["airflow", "celery", "worker", "--queues", ",".join(names), "--celery-hostname", f"{hostname}@%h"]
