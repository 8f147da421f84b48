"""Shared base classes for operators that work through ops-db."""

from __future__ import annotations

import os
import socket
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context, get_current_context
from airflow.sdk.exceptions import AirflowSkipException

from ccat_operators.hooks.ops_db import OpsDbHook
from ccat_operators.opsdb import OpsDb


def worker_name() -> str:
    """This worker's name: ``CCAT_WORKER_NAME`` if the deployment sets it, else the host name."""
    return os.environ.get("CCAT_WORKER_NAME") or socket.gethostname()


def record_execution(db: OpsDb, context: Context, location: str | None) -> None:
    """Note in ops-db which worker runs this task instance."""
    ti = context["ti"]
    db.execute(
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

    def active_location(self, context: Context | None = None) -> dict[str, Any]:
        """The location's ops-db row; records which worker runs this task (``task_execution``)."""
        if context is None:
            context = get_current_context()
        record_execution(self.hook.ops_db, context, self.location)
        site, _, name = self.location.partition("/")
        row = self.hook.ops_db.fetch_one("data_location_by_key", site=site, name=name)
        if row is None or not row.active:
            state = "unknown to" if row is None else "inactive in"
            raise AirflowSkipException(f"location {self.location} is {state} ops-db; apply the topology to change that")
        return row
