"""Shared base classes for operators that work through ops-db."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from ccat_operators.hooks.ops_db import OpsDbHook


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

    def active_location(self) -> dict[str, Any]:
        site, _, name = self.location.partition("/")
        row = self.hook.ops_db.fetch_one("data_location_by_key", site=site, name=name)
        if row is None or not row["active"]:
            state = "unknown to" if row is None else "inactive in"
            raise AirflowSkipException(f"location {self.location} is {state} ops-db; apply the topology to change that")
        return row
