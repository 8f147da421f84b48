"""Operators of the packaging stage (SOURCE -> RawDataPackages in the site's BUFFER)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException

from ccat_operators import packaging, work
from ccat_operators.operators.base import LocationOperator


def raise_for_failures(kind: str, result: work.WorkResult, log) -> dict[str, Any]:
    """Return the XCom summary, or fail the task (no retry) naming every failed item.

    Failed items are FAILED in ops-db with their reason; the others completed. Retrying
    the task cannot fix a missing or changed file, so it fails without retries. Items
    that wait (no buffer has room) are logged; they are PENDING with the reason, shown by
    ``ccat status``, and go on by themselves once there is room.
    """
    summary = {"completed": len(result.completed), "failed": len(result.failed), "reclaimed": len(result.reclaimed),
               "waiting": len(result.waiting)}  # fmt: skip
    for name, reason in result.waiting.items():
        log.warning("%s %s waits: %s", kind, name, reason)
    if result.failed:
        details = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
        raise AirflowFailException(
            f"{len(result.failed)} {kind}(s) FAILED ({summary['completed']} completed): {details}"
        )
    return summary


class RawDataPackagePlanOperator(LocationOperator):
    """Group a SOURCE location's unpackaged files into PENDING RawDataPackages.

    Returns (XCom) ``{"packages": n, "files": n, "oversized": n}``.
    """

    def execute(self, context: Context) -> dict[str, int]:
        result = packaging.plan_packages(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d file(s) into %d new package(s)", self.location, result.files, len(result.packages))
        return {"packages": len(result.packages), "files": result.files, "oversized": result.oversized}


class RawDataPackageWriteOperator(LocationOperator):
    """Write a SOURCE location's PENDING packages as tars into the site's primary buffer.

    Fails (without retry) if any package FAILED, after finishing all the others.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        result = packaging.write_packages(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d package(s) written", self.location, len(result.completed))
        return raise_for_failures("package", result, self.log)
