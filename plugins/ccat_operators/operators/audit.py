"""Operator of the audit (consistency and fixity of one location)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from ccat_operators import audit
from ccat_operators.operators.base import LocationOperator


class AuditLocationOperator(LocationOperator):
    """Audit ``location``: lost, corrupt and dark data; repair what another verified copy allows.

    Succeeds whatever it finds (findings are data, kept in ops-db and shown by ``ccat
    status``); fails only if the location cannot be read (not mounted here, S3 down).
    Returns (XCom) the counts.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        result = audit.audit_location(self.hook.ops_db, self.active_location(context))
        for line in result.lines():
            self.log.info("%s", line)
        return {"checked": result.checked, "verified": result.verified, "lost": len(result.lost),
                "corrupt": len(result.corrupt), "dark": len(result.dark), "repaired": len(result.repaired),
                "unrepaired": len(result.unrepaired)}  # fmt: skip
