"""Operator of the staging stage (a scientist's request -> a PROCESSING location)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ccat_operators import staging
from ccat_operators.operators.base import LocationOperator


class StageObservationsOperator(LocationOperator):
    """Stage the StagingJob its request's wait task accepted into ``location``.

    :param staging_job: what :class:`~ccat_operators.sensors.staging.StagingRequestSensor`
        returned (templated; in ``ccat_staging`` its ``output``): ``job_id`` and the
        ``observations`` it waited for. Their packages, all written and archived by now,
        join the job, and every one not staged yet is staged.
    """

    template_fields = (*LocationOperator.template_fields, "staging_job")

    def __init__(self, *, staging_job: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.staging_job = staging_job

    def execute(self, context: Context) -> dict[str, Any]:
        params = dict(context["params"])
        if params.get("location") != self.location:
            raise AirflowSkipException(f"this request is for {params.get('location')}, not {self.location}")
        self.note_execution(context)
        accepted = self.staging_job
        if not isinstance(accepted, dict) or "job_id" not in accepted:
            raise AirflowFailException(f"no staging job to stage: the wait task returned {accepted!r}")
        db = self.hook.ops_db
        try:
            staging.add_packages(db, accepted["job_id"], accepted["observations"])
        except staging.StagingRequestError as error:
            raise AirflowFailException(f"job {accepted.get('job')}: {error}") from error
        result = staging.stage_job(db, accepted["job_id"])
        self.log.info("job %s: %d staged, %d already there", result.job, len(result.staged), len(result.already))
        if result.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
            raise AirflowFailException(f"job {result.job}: {len(result.failed)} package(s) not staged: {details}")
        return {"job": result.job, "staged": len(result.staged), "already": len(result.already)}
