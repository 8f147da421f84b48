"""Operator of the staging stage (a scientist's request -> a PROCESSING location)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ccat_operators import staging
from ccat_operators.operators.base import LocationOperator


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
        result = staging.stage_job(db, job.id)
        self.log.info("job %s: %d staged, %d already there", job.name, len(result.staged), len(result.already))
        if result.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
            raise AirflowFailException(f"job {job.name}: {len(result.failed)} package(s) not staged: {details}")
        return {"job": job.name, "staged": len(result.staged), "already": len(result.already)}
