"""Deletion: remove source, buffer, processing and bundle copies the rules allow to go.

The rules live in SQL (``find_deletable_package_copies.sql``, ``find_deletable_bundle_copies.sql``)
and are checked twice: when a copy is scheduled (PRESENT/STAGED -> DELETION_SCHEDULED)
and again, under a row lock, just before anything is removed (-> DELETION_IN_PROGRESS);
if the second check fails the copy goes back to PRESENT/STAGED. Then the files go and the
copy is DELETED (or DELETION_FAILED with the reason). Long-term archive copies are never
deleted here, and nothing is deleted that is the last verified copy of a package.

Storage is not trusted: before anything is removed, every file of the copy is checked
under the copy's lease to be the very file that was recorded - inside the location's
root, reached without links (an instrument's source tree may pass through links that
stay inside its root), a regular file of the recorded size and, for raw files, the same
inode and modification time as at filing or else the same checksum, re-read. If one file
is not, nothing of the copy is deleted and it is DELETION_FAILED with the reason.

A copy left DELETION_IN_PROGRESS by a worker that died is finished by the next run
(deleting is idempotent: files already gone are fine).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ccat_operators import checksums, copies, safefs, states
from ccat_operators.copies import CopyFile, copy_files
from ccat_operators.faults import ItemFault
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import DeletableCopyRow, LocationRow, ScheduledDeletionRow
from ccat_operators.states import LocationType, PhysicalCopyStatus

log = logging.getLogger(__name__)

_SCHEDULED, _DELETING = PhysicalCopyStatus.DELETION_SCHEDULED, PhysicalCopyStatus.DELETION_IN_PROGRESS
BATCH = 1000
LIVE = ["PRESENT", "STAGED"]


def under_disk_pressure(location: LocationRow, threshold: float | None) -> bool:
    """True if the location's disk is fuller than its retention's ``disk_pressure_threshold``."""
    if threshold is None or not location.root_path:
        return False
    usage = shutil.disk_usage(location.root_path)
    return usage.used / usage.total > threshold


def deletable(db: OpsDb, location: LocationRow, under_pressure: bool, statuses: list[str],
              copy_id: int | None = None) -> list[DeletableCopyRow]:  # fmt: skip
    """Copies at ``location`` in ``statuses`` that the rules allow to delete now."""
    if location.location_type == LocationType.LONG_TERM_ARCHIVE:
        return []
    params = {"location_id": location.id, "statuses": statuses, "copy_id": copy_id, "limit": BATCH}
    packages = db.fetch_all("find_deletable_package_copies", under_pressure=under_pressure, **params)
    bundles = db.fetch_all("find_deletable_bundle_copies", **params)
    return packages + bundles


@dataclass
class DeletionResult:
    scheduled: int = 0
    deleted: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def run_deletions(db: OpsDb, location: LocationRow, under_pressure: bool | None = None) -> DeletionResult:
    """Schedule what may go at ``location``, then delete it, re-checking each copy first."""
    result = DeletionResult()
    if under_pressure is None:
        retention = db.fetch_one("retention_of_location", location_id=location.id)
        under_pressure = under_disk_pressure(location, retention.disk_pressure_threshold if retention else None)
    ids = [row.id for row in deletable(db, location, under_pressure, LIVE)]
    result.scheduled = states.schedule_deletions(db, ids)
    for copy in db.fetch_all("find_scheduled_deletions", location_id=location.id, limit=BATCH):
        with states.lease(db, states.COPY, copy.id) as mine:
            if mine:
                _delete_one(db, location, copy, under_pressure, result)
    return result


def _delete_one(db: OpsDb, location: LocationRow, copy: ScheduledDeletionRow, under_pressure: bool,
                result: DeletionResult) -> None:  # fmt: skip
    if copy.status == PhysicalCopyStatus.DELETION_SCHEDULED:
        with db.transaction():
            db.fetch_one("lock_physical_copy", id=copy.id)
            still = deletable(db, location, under_pressure, ["DELETION_SCHEDULED"], copy_id=copy.id)
            if not still:
                states.unschedule_deletion(db, copy.id)
                result.kept.append(copy.id)
                return
            states.move(db, states.COPY, copy.id, _SCHEDULED, _DELETING)
    try:
        removed = _remove_files(db, location, copy)
    except (OSError, DeletionRefusedError, safefs.UnsafePathError) as error:
        states.move(db, states.COPY, copy.id, _DELETING, PhysicalCopyStatus.DELETION_FAILED, str(error))
        result.failed[copy.id] = str(error)
        log.error("deleting copy %s at %s failed: %s", copy.id, location.name, error)
        return
    states.move(db, states.COPY, copy.id, _DELETING, PhysicalCopyStatus.DELETED)
    result.deleted.append(copy.id)
    log.info("deleted copy %s at %s (%d file(s))", copy.id, location.name, removed)


class DeletionRefusedError(ItemFault):
    """What stands at a copy's path is not what ops-db recorded there; nothing is deleted."""


def _remove_files(db: OpsDb, location: LocationRow, copy: ScheduledDeletionRow) -> int:
    """Check every file of the copy, then delete them all; refuse the lot if one is not as recorded."""
    root = Path(location.root_path)
    doomed = [found for file in copy_files(db, location, copy) if (found := _identify(root, file)) is not None]
    removed = 0
    for real_root, relative, inode in doomed:
        removed += safefs.unlink_file(real_root, relative, inode)
    return removed


def _identify(root: Path, file: CopyFile) -> tuple[Path, str, int] | None:
    """Where ``file`` is (root, path without links, inode), None if already gone.

    Raises DeletionRefusedError if the path leaves the root, goes through a link, or
    leads to something other than the recorded file.
    """
    try:
        found = copies.locate(root, file)
    except safefs.UnsafePathError as error:
        raise DeletionRefusedError(f"{error}; nothing deleted") from None
    if found is None:
        log.warning("%s was already gone", root / file.relative)
        return None
    if file.size is not None and found.stat.st_size != file.size:
        raise DeletionRefusedError(
            f"{found.path} is {found.stat.st_size} bytes, recorded as {file.size}: "
            "not the recorded file; nothing deleted"
        )
    if file.resolve_links and file.checksum is not None and not copies.unchanged_since_filing(file, found):
        actual = copies.checksum_of(found, checksums.parse(file.checksum)[0])
        if actual != file.checksum:
            raise DeletionRefusedError(
                f"{found.path} changed since it was filed ({actual}, filed as {file.checksum}); nothing deleted"
            )
    return found.root, found.relative, found.stat.st_ino
