"""Operators of the long-term archive, staging and deletion stages."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ccat_operators import archive, deletion, staging
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


class StageObservationsOperator(LocationOperator):
    """Stage the DAG run's request (its params) into ``location``; skipped for other locations.

    Params: ``observations`` or ``obs_unit`` with ``start_date``/``end_date``,
    ``location``, ``requested_by``, ``retention``.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        params = dict(context["params"])
        if params.get("location") != self.location:
            raise AirflowSkipException(f"this request is for {params.get('location')}, not {self.location}")
        try:
            request = staging.StagingRequest.from_params(params)
            db = self.hook.ops_db
            job = staging.create_job(db, request)
        except staging.StagingRequestError as error:
            raise AirflowFailException(f"staging request refused: {error}") from error
        result = staging.stage_job(db, job["id"])
        self.log.info("job %s: %d staged, %d already there", job["name"], len(result.staged), len(result.already))
        if result.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
            raise AirflowFailException(f"job {job['name']}: {len(result.failed)} package(s) not staged: {details}")
        return {"job": job["name"], "staged": len(result.staged), "already": len(result.already)}


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
