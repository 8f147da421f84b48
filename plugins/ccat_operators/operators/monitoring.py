"""Operators of the monitoring DAG."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Context

from ccat_operators import monitoring
from ccat_operators.operators.base import LocationOperator, OpsDbOperator


class MeasureDiskUsageOperator(LocationOperator):
    """Record the disk usage of ``location`` (a metric); skipped when not mounted on this worker."""

    def execute(self, context: Context) -> dict[str, float] | None:
        usage = monitoring.disk_usage(self.active_location())
        if usage is None:
            self.log.warning("%s is not mounted on this worker", self.location)
        else:
            self.log.info("%s: %.1f%% used", self.location, 100 * usage["used_fraction"])
        return usage


class SweepStaleUploadsOperator(LocationOperator):
    """Abort incomplete multipart uploads in ``location``'s S3 bucket (under its prefix) older than the grace period.

    :param older_than_hours: the grace period (templated); uploads initiated more
        recently are left alone, whoever started them.
    """

    template_fields = ("location", "older_than_hours")

    def __init__(self, *, older_than_hours: float = monitoring.STALE_UPLOAD_GRACE / timedelta(hours=1),
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.older_than_hours = older_than_hours

    def execute(self, context: Context) -> list[str]:
        grace = timedelta(hours=float(self.older_than_hours))
        return monitoring.sweep_stale_uploads(self.active_location(context), grace)


class SweepStuckWorkOperator(OpsDbOperator):
    """Return work abandoned IN_PROGRESS for longer than ``older_than_minutes`` to PENDING."""

    template_fields = ("older_than_minutes",)

    def __init__(self, *, older_than_minutes: int = 120, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.older_than_minutes = older_than_minutes

    def execute(self, context: Context) -> list[str]:
        return monitoring.sweep_stuck(self.hook.ops_db, timedelta(minutes=int(self.older_than_minutes)))


class SummarizeHealthOperator(OpsDbOperator):
    """Log counts per stage and state, the oldest waiting item and what needs an operator."""

    def execute(self, context: Context) -> list[str]:
        lines = monitoring.health_summary(self.hook.ops_db).lines()
        for line in lines:
            self.log.info("%s", line)
        return lines
