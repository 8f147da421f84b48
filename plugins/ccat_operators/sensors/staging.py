"""The wait of ``ccat_staging``: accept a scientist's request, then wait until its observations are archived."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ccat_operators import staging
from ccat_operators.operators.base import record_execution
from ccat_operators.sensors.ops_db import ObservationsArchivedSensor
from ccat_operators.triggers.ops_db import ArchiveState


class StagingRequestSensor(ObservationsArchivedSensor):
    """Accept the DAG run's staging request for ``location``; wait until its observations are archived.

    The request comes from the run's params (see ``ccat_staging``); a request for another
    location skips the task. A refused request (unknown ids, no observation of the obs
    unit in the days, an inactive location, absurd values) fails at once and records
    nothing. Otherwise the StagingJob is found or created before any wait: if the
    observations are not archived yet (a verified copy in one archive is enough to
    stage from), it is PENDING with the reason ``waiting for N packages to be archived
    (gives up at ...)``, which ``ccat status`` shows, and the task defers for the
    request's ``timeout``. If they are not archived by then, the job is FAILED with what
    is missing and the task fails.

    Returns (XCom) the sensor's result with ``job_id`` and ``job`` (the job's name), which
    ``stage_to_*`` stages.

    :param location: the PROCESSING location (``site/name``, templated) this task serves.
    """

    template_fields = (*ObservationsArchivedSensor.template_fields, "location")

    def __init__(self, *, location: str, **kwargs: Any) -> None:
        super().__init__(min_archives=1, **kwargs)
        self.location = location

    def request(self, context: Context) -> staging.StagingRequest:
        """The run's request, checked without ops-db; skips the task if it is for another location."""
        params = dict(context["params"])
        if params.get("location") != self.location:
            raise AirflowSkipException(f"this request is for {params.get('location')}, not {self.location}")
        try:
            return staging.StagingRequest.from_params(params)
        except staging.StagingRequestError as error:
            raise AirflowFailException(f"staging request refused: {error}") from error

    def observation_ids(self, context: Context) -> list[int]:
        request = self.request(context)
        record_execution(self.hook.ops_db, context, self.location)
        try:
            self._resolved = staging.resolve(self.hook.ops_db, request)
        except staging.StagingRequestError as error:
            raise AirflowFailException(f"staging request refused: {error}") from error
        return self._resolved.observation_ids

    def wait_timeout(self, context: Context) -> float:
        return self.request(context).timeout_seconds()

    def accept(self, context: Context, state: ArchiveState, deadline: datetime) -> dict[str, Any]:
        """Record the job (the observations as :meth:`observation_ids` found them): waiting, or ready to stage."""
        request, resolved = self.request(context), self._resolved
        waiting = None
        if not state.archived:
            waiting = f"{state.waiting_reason()} (gives up at {deadline:%Y-%m-%d %H:%M} UTC)"
        try:
            job = staging.create_job(self.hook.ops_db, request, resolved=resolved, waiting=waiting)
        except staging.StagingRequestError as error:
            raise AirflowFailException(f"staging request refused: {error}") from error
        self.log.info("staging job %s (id %d) %s", job.name, job.id, waiting or "is ready to stage")
        return {"job_id": job.id, "job": job.name}

    def gave_up(self, context: Context, message: str, accepted: dict[str, Any]) -> None:
        if accepted.get("job_id") is not None:
            staging.give_up_waiting(self.hook.ops_db, accepted["job_id"], message)
