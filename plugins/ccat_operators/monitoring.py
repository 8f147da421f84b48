"""Monitoring: disk usage per location, a sweep for stuck work, and a health summary.

The sweep hands items that have been IN_PROGRESS for longer than a threshold back to
PENDING, with a log line each, but only when no live worker holds the item's lease (a
slow transfer that is still running is left alone, however long it takes).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ccat_operators import metrics, states
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow
from ccat_operators.states import Status

log = logging.getLogger(__name__)

SWEEP_BATCH = 1000


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
    health.needs_intervention = [row.package for row in db.fetch_all("archive_transfers_needing_intervention")]
    return health
