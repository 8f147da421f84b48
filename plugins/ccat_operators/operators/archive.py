"""Operator of the long-term archive stage."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from ccat_operators import archive
from ccat_operators.operators.base import LocationOperator


class ArchivePackagesOperator(LocationOperator):
    """Archive every package waiting for one S3 long-term archive (``location``).

    Fails if any package failed (so Airflow retries with backoff); packages that failed
    three times need an operator (``ccat archive clear``) and are listed in the log.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        result = archive.archive_pending(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d planned, %d archived", self.location, result.planned, len(result.completed))
        if result.needs_intervention:
            self.log.error("needs an operator (3 failed attempts): %s", ", ".join(result.needs_intervention))
        if result.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
            raise RuntimeError(f"{len(result.failed)} package(s) not archived: {details}")
        return {"planned": result.planned, "archived": len(result.completed)}
