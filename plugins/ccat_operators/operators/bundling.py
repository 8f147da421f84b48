"""Operators of the bundling stage (RawDataPackages -> DataTransferPackages in a BUFFER)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from ccat_operators import bundling
from ccat_operators.operators.base import LocationOperator
from ccat_operators.operators.packaging import raise_for_failures


class DataTransferPackagePlanOperator(LocationOperator):
    """Pack a BUFFER location's unbundled packages into PENDING DataTransferPackages.

    Returns (XCom) ``{"bundles": n}``.
    """

    def execute(self, context: Context) -> dict[str, int]:
        created = bundling.plan_bundles(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d new bundle(s)", self.location, len(created))
        return {"bundles": len(created)}


class DataTransferPackageWriteOperator(LocationOperator):
    """Write a BUFFER location's PENDING bundles as tars; fails (no retry) if any FAILED."""

    def execute(self, context: Context) -> dict[str, Any]:
        result = bundling.write_bundles(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d bundle(s) written", self.location, len(result.completed))
        return raise_for_failures("bundle", result, self.log)
