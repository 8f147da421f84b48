"""Operator of the deletion stage."""

from __future__ import annotations

from airflow.sdk import Context

from ccat_operators import deletion
from ccat_operators.operators.base import LocationOperator


class DeleteCopiesOperator(LocationOperator):
    """Delete the copies at ``location`` that the retention rules allow (see ``deletion``)."""

    def execute(self, context: Context) -> dict[str, int]:
        result = deletion.run_deletions(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d scheduled, %d deleted, %d kept after re-check", self.location, result.scheduled,
                      len(result.deleted), len(result.kept))  # fmt: skip
        if result.failed:
            details = "; ".join(f"copy {copy}: {reason}" for copy, reason in result.failed.items())
            raise RuntimeError(f"{len(result.failed)} deletion(s) failed: {details}")
        return {"scheduled": result.scheduled, "deleted": len(result.deleted), "kept": len(result.kept)}
