"""Operators that maintain ops-db itself: schema migrations and topology."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from ccat_operators import migrations, topology
from ccat_operators.operators.base import OpsDbOperator


class OpsDbUpgradeOperator(OpsDbOperator):
    """Apply pending ops-db migrations; a no-op when the schema is current.

    Returns (XCom) the list of migration files applied by this run.
    """

    def execute(self, context: Context) -> list[str]:
        applied = migrations.upgrade(self.hook.ops_db)
        for name in applied:
            self.log.info("applied migration %s", name)
        if not applied:
            self.log.info("ops-db schema is up to date")
        return applied


class TopologyApplyOperator(OpsDbOperator):
    """Make ops-db match a topology file (idempotent; a bad file changes nothing).

    :param topology_file: path of the YAML topology file (templated).
    Returns (XCom) the list of changes made, empty when ops-db already matched.
    """

    template_fields: Sequence[str] = ("topology_file",)

    def __init__(self, *, topology_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topology_file = topology_file

    def execute(self, context: Context) -> list[str]:
        report = topology.apply(self.hook.ops_db, topology.load(self.topology_file))
        for change in report.changes:
            self.log.info("%s", change)
        if not report.changes:
            self.log.info("ops-db already matches %s", self.topology_file)
        return report.changes
