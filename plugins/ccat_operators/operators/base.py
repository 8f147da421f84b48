"""Shared base classes for operators that work through ops-db."""

from __future__ import annotations

import os
import resource
import socket
import time
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context, get_current_context
from airflow.sdk.exceptions import AirflowSkipException

from ccat_operators.hooks.ops_db import OpsDbHook
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow


def worker_name() -> str:
    """This worker's name: ``CCAT_WORKER_NAME`` if the deployment sets it, else the host name."""
    return os.environ.get("CCAT_WORKER_NAME") or socket.gethostname()


def record_execution(db: OpsDb, context: Context, location: str | None) -> int:
    """Note in ops-db which worker runs this task instance; return the note's id."""
    ti = context["ti"]
    return db.fetch_value(
        "record_task_execution",
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        map_index=ti.map_index if ti.map_index is not None else -1,
        try_number=ti.try_number,
        location=location,
        worker=worker_name(),
    )


class OpsDbOperator(BaseOperator):
    """An operator that talks to ops-db through :class:`OpsDbHook` (built lazily).

    :param ccat_ops_db_conn_id: Airflow connection to ops-db.
    """

    def __init__(self, *, ccat_ops_db_conn_id: str = OpsDbHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ccat_ops_db_conn_id = ccat_ops_db_conn_id

    @cached_property
    def hook(self) -> OpsDbHook:
        return OpsDbHook(ccat_ops_db_conn_id=self.ccat_ops_db_conn_id)


class LocationOperator(OpsDbOperator):
    """An operator doing one stage's work for one data location.

    :param location: ``site/location`` key (templated). An inactive or unknown location
        skips the task with a message instead of failing it: the topology file the DAG
        was drawn from and ops-db disagree until the topology is applied.
    """

    template_fields = ("location",)

    def __init__(self, *, location: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.location = location

    def pre_execute(self, context: Context) -> None:
        """Start the task's cost meter (see :meth:`post_execute`)."""
        self._started = (_cpu_seconds(), time.monotonic())
        self._execution_id: int | None = None

    def post_execute(self, context: Context, result: Any = None) -> None:
        """Record what the task cost in ``task_execution``: CPU seconds (its threads and commands) and wall time."""
        if getattr(self, "_execution_id", None) is None:
            return
        cpu, wall = _cpu_seconds() - self._started[0], time.monotonic() - self._started[1]
        self.hook.ops_db.fetch_value("record_task_cost", id=self._execution_id, cpu_seconds=cpu, wall_seconds=wall)

    def note_execution(self, context: Context | None = None) -> None:
        """Record which worker runs this task (``task_execution``), and later what it cost."""
        self._execution_id = record_execution(self.hook.ops_db, context or get_current_context(), self.location)

    def active_location(self, context: Context | None = None) -> LocationRow:
        """The location's ops-db row; records which worker runs this task (``task_execution``)."""
        self.note_execution(context)
        site, _, name = self.location.partition("/")
        row = self.hook.ops_db.fetch_one("data_location_by_key", site=site, name=name)
        if row is None or not row.active:
            state = "unknown to" if row is None else "inactive in"
            raise AirflowSkipException(f"location {self.location} is {state} ops-db; apply the topology to change that")
        return row


def _cpu_seconds() -> float:
    """CPU seconds this process (every thread) and the commands it waited for have used."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
