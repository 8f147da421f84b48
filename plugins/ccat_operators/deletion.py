"""Deletion: remove source, buffer, processing and bundle copies the rules allow to go.

The rules live in SQL (``find_deletable_package_copies.sql``, ``find_deletable_bundle_copies.sql``)
and are checked twice: when a copy is scheduled (PRESENT/STAGED -> DELETION_SCHEDULED)
and again, under a row lock, just before anything is removed (-> DELETION_IN_PROGRESS);
if the second check fails the copy goes back to PRESENT/STAGED. Then the files go and the
copy is DELETED (or DELETION_FAILED with the reason). Long-term archive copies are never
deleted here, and nothing is deleted that is the last verified copy of a package.

A copy left DELETION_IN_PROGRESS by a worker that died is finished by the next run
(deleting is idempotent: files already gone are fine).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType, PhysicalCopyStatus

log = logging.getLogger(__name__)

COPY_KIND = "physical_copy"
BATCH = 1000
LIVE = ["PRESENT", "STAGED"]


def under_disk_pressure(location: dict[str, Any], threshold: float | None) -> bool:
    """True if the location's disk is fuller than its retention's ``disk_pressure_threshold``."""
    if threshold is None or not location.get("root_path"):
        return False
    usage = shutil.disk_usage(location["root_path"])
    return usage.used / usage.total > threshold


def deletable(db: OpsDb, location: dict[str, Any], under_pressure: bool, statuses: list[str],
              copy_id: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Copies at ``location`` in ``statuses`` that the rules allow to delete now."""
    if location["location_type"] == LocationType.LONG_TERM_ARCHIVE:
        return []
    params = {"location_id": location["id"], "statuses": statuses, "copy_id": copy_id, "limit": BATCH}
    packages = db.fetch_all("find_deletable_package_copies", under_pressure=under_pressure, **params)
    bundles = db.fetch_all("find_deletable_bundle_copies", **params)
    return packages + bundles


@dataclass
class DeletionResult:
    scheduled: int = 0
    deleted: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def run_deletions(db: OpsDb, location: dict[str, Any], under_pressure: bool | None = None) -> DeletionResult:
    """Schedule what may go at ``location``, then delete it, re-checking each copy first."""
    result = DeletionResult()
    if under_pressure is None:
        retention = db.fetch_one("retention_of_location", location_id=location["id"]) or {}
        under_pressure = under_disk_pressure(location, retention.get("disk_pressure_threshold"))
    ids = [row["id"] for row in deletable(db, location, under_pressure, LIVE)]
    result.scheduled = len(db.fetch_all("schedule_copy_deletions", ids=ids)) if ids else 0
    for copy in db.fetch_all("find_scheduled_deletions", location_id=location["id"], limit=BATCH):
        with db.lease(COPY_KIND, copy["id"]) as mine:
            if mine:
                _delete_one(db, location, copy, under_pressure, result)
    return result


def _delete_one(db: OpsDb, location: dict[str, Any], copy: dict[str, Any], under_pressure: bool,
                result: DeletionResult) -> None:  # fmt: skip
    if copy["status"] == PhysicalCopyStatus.DELETION_SCHEDULED:
        with db.transaction():
            db.fetch_one("lock_physical_copy", id=copy["id"])
            still = deletable(db, location, under_pressure, ["DELETION_SCHEDULED"], copy_id=copy["id"])
            if not still:
                db.fetch_value("unschedule_copy_deletion", id=copy["id"])
                result.kept.append(copy["id"])
                return
            db.transition_copy(
                copy["id"], PhysicalCopyStatus.DELETION_SCHEDULED, PhysicalCopyStatus.DELETION_IN_PROGRESS
            )
    try:
        removed = _remove_files(db, location, copy)
    except OSError as error:
        db.transition_copy(copy["id"], PhysicalCopyStatus.DELETION_IN_PROGRESS, PhysicalCopyStatus.DELETION_FAILED,
                           str(error))  # fmt: skip
        result.failed[copy["id"]] = str(error)
        log.error("deleting copy %s at %s failed: %s", copy["id"], location["name"], error)
        return
    db.transition_copy(copy["id"], PhysicalCopyStatus.DELETION_IN_PROGRESS, PhysicalCopyStatus.DELETED)
    result.deleted.append(copy["id"])
    log.info("deleted copy %s at %s (%d file(s))", copy["id"], location["name"], removed)


def copy_files(db: OpsDb, location: dict[str, Any], copy: dict[str, Any]) -> list[Path]:
    """The files that make up one copy at a disk location."""
    root = Path(location["root_path"])
    if copy["data_transfer_package_id"] is not None or location["location_type"] == LocationType.BUFFER:
        return [root / copy["path"]]
    files = db.fetch_all("files_of_package", package_id=copy["raw_data_package_id"])
    if location["location_type"] == LocationType.PROCESSING:
        return [root / copy["path"] / f["relative_path"] for f in files]
    return [root / f["relative_path"] for f in files]  # SOURCE: the raw files themselves


def _remove_files(db: OpsDb, location: dict[str, Any], copy: dict[str, Any]) -> int:
    removed = 0
    for path in copy_files(db, location, copy):
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            log.warning("%s was already gone", path)
    return removed
