"""Sensors that wait on ops-db: deferrable, so the wait runs in the triggerer and holds no worker slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from ccat_operators import staging
from ccat_operators.hooks.ops_db import OpsDbHook
from ccat_operators.triggers.ops_db import ArchiveState, ObservationsArchivedTrigger, archive_state
from ccat_operators.units import format_duration

#: Default wait before the sensor gives up.
DEFAULT_TIMEOUT = timedelta(hours=24)
#: Added to ``timeout`` for Airflow's own deferral timeout: the trigger reports its deadline
#: itself (with what is missing); Airflow's timeout only catches a trigger that never answers.
DEFERRAL_GRACE = timedelta(minutes=10)


class ObservationsArchivedSensor(BaseSensorOperator):
    """Wait until every file of the named observations is archived in at least ``min_archives`` archives.

    An observation is archived when it has filed files and every one of them is in a
    RawDataPackage with a verified copy (``PRESENT``, verified) in at least
    ``min_archives`` active LONG_TERM_ARCHIVE locations. Files filed but not packaged
    yet, and packages not yet written or uploaded, keep it waiting.

    The sensor checks once when it starts and succeeds at once if they are archived.
    Otherwise it defers: :class:`~ccat_operators.triggers.ops_db.ObservationsArchivedTrigger`
    asks ops-db every ``poke_interval`` seconds from the triggerer, and the task holds no
    worker slot while it waits. Observations ops-db does not know, an obs unit with none
    in the days, or ``min_archives`` above the number of active archives fail the task at
    once, before it waits. After ``timeout`` it fails with AirflowSensorTimeout saying what
    is still missing. The set of observations is fixed when the task starts.

    Returns (XCom) ``{"observations": [ids], "files": n, "packages": n, "min_archives": k}``.

    :param observations: ExecutedObsUnit ids (templated).
    :param obs_unit: instead of ids, the name of an obs unit (templated) ...
    :param from_date: ... with its observations from this day (``YYYY-MM-DD``, inclusive; templated) ...
    :param to_date: ... to this day (inclusive; templated). Not ``start_date``/``end_date``:
        every Airflow operator has those already, for its own schedule.
    :param min_archives: active long-term archives each package needs a verified copy in (templated).
    :param poke_interval: seconds between two questions to ops-db (default 60).
    :param timeout: how long to wait, seconds or a timedelta (default 24 h).
    :param ccat_ops_db_conn_id: Airflow connection to ops-db; the trigger resolves it in the
        triggerer, so no credentials are serialized.
    """

    template_fields = ("observations", "obs_unit", "from_date", "to_date", "min_archives")
    ui_color = "#e6f1f2"

    def __init__(
        self,
        *,
        observations: list[int] | None = None,
        obs_unit: str | None = None,
        from_date: str | None = None,
        to_date: str | None = None,
        min_archives: int = 1,
        poke_interval: timedelta | float = 60,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        ccat_ops_db_conn_id: str = OpsDbHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.observations = observations
        self.obs_unit = obs_unit
        self.from_date = from_date
        self.to_date = to_date
        self.min_archives = min_archives
        self.ccat_ops_db_conn_id = ccat_ops_db_conn_id

    @cached_property
    def hook(self) -> OpsDbHook:
        return OpsDbHook(ccat_ops_db_conn_id=self.ccat_ops_db_conn_id)

    # What a subclass may change -------------------------------------------------------

    def observation_ids(self, context: Context) -> list[int]:
        """The observations to wait for; AirflowFailException if they cannot be named."""
        try:
            return staging.resolve_observations(
                self.hook.ops_db,
                staging.parse_observation_ids(self.observations),
                (self.obs_unit or "").strip() or None,
                staging.parse_day(self.from_date, "from_date"),
                staging.parse_day(self.to_date, "to_date"),
            )
        except staging.StagingRequestError as error:
            raise AirflowFailException(f"cannot wait for these observations: {error}") from error

    def wait_timeout(self, context: Context) -> float:
        """Seconds to wait (``timeout``)."""
        return self.timeout

    def accept(self, context: Context, state: ArchiveState, deadline: datetime) -> dict[str, Any]:
        """Called once the observations are named and checked, before waiting or succeeding.

        Returns what to add to the result (and hand to :meth:`gave_up`); nothing here.
        """
        return {}

    def gave_up(self, context: Context, message: str, accepted: dict[str, Any]) -> None:
        """Called before the task fails because the observations were not archived in time."""

    # The sensor ----------------------------------------------------------------------

    def required_archives(self) -> int:
        try:
            archives = int(self.min_archives)
        except (TypeError, ValueError):
            raise AirflowFailException(f"min_archives: {self.min_archives!r} is not a number") from None
        if archives < 1:
            raise AirflowFailException(f"min_archives: {archives} must be at least 1")
        return archives

    def execute(self, context: Context) -> dict[str, Any]:
        min_archives = self.required_archives()
        ids = self.observation_ids(context)
        state = archive_state(self.hook.ops_db, ids, min_archives)
        if state.unknown:
            raise AirflowFailException(f"unknown observation id(s): {', '.join(map(str, state.unknown))}")
        if state.active_archives < min_archives:
            raise AirflowFailException(
                f"min_archives={min_archives} can never be met: ops-db has {state.active_archives} active "
                "long-term archive(s)"
            )
        timeout = self.wait_timeout(context)
        deadline = datetime.now(UTC) + timedelta(seconds=timeout)
        accepted = self.accept(context, state, deadline)
        if state.archived:
            self.log.info("observations %s are archived in %d archive(s) already", ids, min_archives)
            return state.summary() | accepted
        self.log.info("observations %s: %s; waiting up to %s in the triggerer", ids, state.waiting_reason(),
                      format_duration(int(timeout)))  # fmt: skip
        self.defer(
            trigger=ObservationsArchivedTrigger(
                observation_ids=ids,
                min_archives=min_archives,
                poll_interval=self.poke_interval,
                deadline=deadline.isoformat(),
                ccat_ops_db_conn_id=self.ccat_ops_db_conn_id,
            ),
            method_name="execute_complete",
            kwargs={"accepted": accepted, "timeout": timeout},
            timeout=timedelta(seconds=timeout) + DEFERRAL_GRACE,
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any], accepted: dict[str, Any] | None = None, timeout: float = 0
    ) -> dict[str, Any]:
        """Finish with the trigger's event: the result, or a failure saying why."""
        accepted = accepted or {}
        status = event.get("status")
        if status == "archived":
            self.log.info("archived: %s", event["summary"])
            return event["summary"] | accepted
        if status == "timeout":
            message = f"not archived after {format_duration(int(timeout))}: still missing: {event.get('missing')}"
            if event.get("last_error"):
                message += f" (the last question to ops-db failed: {event['last_error']})"
            self.gave_up(context, message, accepted)
            raise AirflowSensorTimeout(message)
        raise AirflowException(f"waiting for the observations failed: {event.get('message', event)}")
