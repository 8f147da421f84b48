"""Monitoring: disk usage per location, sweeps for stuck work and stale uploads, and a health summary.

The stuck-work sweep hands items that have been IN_PROGRESS for longer than a threshold
back to PENDING, with a log line each, but only when no live worker holds the item's
lease (a slow transfer that is still running is left alone, however long it takes).

The stale-upload sweep aborts incomplete multipart uploads in an S3 archive's bucket,
under the location's prefix, initiated longer ago than a grace period (default
:data:`STALE_UPLOAD_GRACE`), whoever started them: a worker killed mid-upload leaves
one behind, holding its parts' bytes. (A package's next try aborts those of its own
key before it uploads; this catches the rest.) An upload running longer than the grace
period would be aborted too and its try would fail: the period is far beyond any upload.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccat_operators import metrics, s3, states
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow
from ccat_operators.states import Status

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000
#: Incomplete multipart uploads initiated longer ago than this are abandoned.
STALE_UPLOAD_GRACE = timedelta(hours=24)


def disk_usage(location: LocationRow) -> dict[str, float] | None:
    """Used and total bytes of a disk location, recorded as a metric; None if not mounted here."""
    root = location.root_path
    if not root or not Path(root).exists():
        return None
    usage = shutil.disk_usage(root)
    fields = {"used_bytes": usage.used, "total_bytes": usage.total, "used_fraction": round(usage.used / usage.total, 4)}
    metrics.record("disk_usage", {"site": location.site, "location": location.name}, fields)
    return fields


def sweep_stuck(db: OpsDb, older_than: timedelta) -> list[str]:
    """Return abandoned IN_PROGRESS work older than ``older_than`` to PENDING; one line per item."""
    lines: list[str] = []
    interval = f"{int(older_than.total_seconds())} seconds"
    for column in states.WORK_COLUMNS:
        identifiers = {"table": column.table, "column": column.column, "changed_at": column.changed_at}
        for row in db.fetch_all("find_stuck_in_progress", identifiers=identifiers, older_than=interval,
                                limit=SWEEP_BATCH):  # fmt: skip
            since = row.status_changed_at
            reason = f"swept: IN_PROGRESS since {since:%Y-%m-%d %H:%M} with no live worker"
            with states.lease(db, column, row.id) as free:
                if free and states.move(db, column, row.id, Status.IN_PROGRESS, Status.PENDING, reason):
                    label = column.table if column.column == "status" else f"{column.column} of {column.table}"
                    lines.append(f"{label} {row.id}: IN_PROGRESS since {since} -> PENDING")
    for line in lines:
        log.warning("stuck work swept: %s", line)
    return lines


def sweep_stale_uploads(
    location: LocationRow, grace: timedelta = STALE_UPLOAD_GRACE, client_factory: Callable = s3.client
) -> list[str]:
    """Abort the incomplete multipart uploads under an S3 location's prefix initiated more than ``grace`` ago.

    Returns one line per upload aborted (also logged) and records an ``s3_stale_uploads``
    metric. A bucket that does not exist yet has nothing to sweep.
    """
    from botocore.exceptions import ClientError

    client = client_factory(location)
    bucket, prefix = location.s3_bucket, location.s3_prefix or ""
    cutoff = datetime.now(UTC) - grace
    lines: list[str] = []
    aborted_bytes = fresh = 0
    try:
        uploads = list(s3.incomplete_uploads(client, bucket, prefix))
    except ClientError as error:
        if s3.error_code(error) != "NoSuchBucket":
            raise
        log.info("s3://%s does not exist yet: no uploads to sweep", bucket)
        uploads = []
    for upload in uploads:
        key, upload_id, initiated = upload["Key"], upload["UploadId"], upload["Initiated"]
        if initiated > cutoff:
            fresh += 1
            continue
        held = s3.upload_parts_bytes(client, bucket, key, upload_id)
        if held is not None and s3.abort_upload(client, bucket, key, upload_id):
            aborted_bytes += held
            lines.append(f"s3://{bucket}/{key} upload {upload_id}: initiated {initiated:%Y-%m-%d %H:%M:%S %Z}, "
                         f"{held} bytes in parts -> aborted")  # fmt: skip
    for line in lines:
        log.warning("stale multipart upload: %s", line)
    log.info("s3://%s/%s: %d stale incomplete upload(s) aborted (%d bytes), %d younger than %s left alone",
             bucket, prefix, len(lines), aborted_bytes, fresh, grace)  # fmt: skip
    metrics.record(
        "s3_stale_uploads",
        {"site": location.site, "location": location.name},
        {"aborted": len(lines), "aborted_bytes": aborted_bytes, "in_progress": fresh},
    )
    return lines


@dataclass
class Health:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    oldest_waiting: tuple[str, datetime] | None = None
    needs_intervention: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"{stage}: " + ", ".join(f"{status} {n}" for status, n in sorted(states.items()))
               for stage, states in sorted(self.counts.items())]  # fmt: skip
        if self.oldest_waiting:
            out.append(f"oldest waiting: {self.oldest_waiting[0]} since {self.oldest_waiting[1]:%Y-%m-%d %H:%M}")
        out.append(f"needing intervention: {len(self.needs_intervention)}")
        return out


def health_summary(db: OpsDb) -> Health:
    """Counts per stage and state, the oldest waiting item, and what needs an operator."""
    health = Health()
    for row in db.fetch_all("pipeline_state_counts"):
        health.counts.setdefault(row.stage, {})[row.status] = row.items
        metrics.record("pipeline_state", {"table": row.stage, "status": row.status}, {"items": row.items})
        waiting = row.status in (Status.PENDING, Status.SCHEDULED)
        if waiting and (health.oldest_waiting is None or row.oldest < health.oldest_waiting[1]):
            health.oldest_waiting = (f"{row.stage} {row.status}", row.oldest)
    health.needs_intervention = [f"{row.kind} {row.id}" for row in db.fetch_all("work_needing_intervention")]
    return health
