"""ccat_audit: what ops-db says is at each location, against what its storage holds."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.audit import AuditLocationOperator
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy

DOC = """
### Audit (consistency and fixity)

For every active location, on its `..._monitoring` queue (a worker where its storage is
mounted), **audit_...** compares the copies ops-db records there (PRESENT / STAGED) with
the storage:

- **lost**: recorded but absent; **corrupt**: present with the wrong size, or the wrong
  checksum when re-read. Every copy last verified longer ago than the location's
  `audit_period` (default 30 d) is read again (S3: HEAD with the server's checksum, or
  the whole object with `audit_full_read`), so every copy is re-verified within the period.
- **dark**: on storage, unknown to ops-db, older than `audit_dark_grace` (default 1 d).
  Reported, never deleted.

Lost and corrupt copies are marked LOST / CORRUPT (no rule counts them as copies any
more) and repaired where another verified copy exists: a package tar is fetched again
from an archive (or its bundle is sent again), an archived object is archived again from
a buffer copy. Findings stay in `audit_finding` until a later run sees them resolved;
`ccat status` lists them, `ccat audit [--location L]` runs the audit on demand.

**On failure**: the task fails only when the location cannot be read (not mounted on
this worker, S3 unreachable); findings never fail it. A finding that cannot be repaired
("no other verified copy") needs a person: see `ccat status`.
"""

with DAG(
    dag_id="ccat_audit",
    schedule="@daily",
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "audit"],
    doc_md=DOC,
    default_args=retry_policy(1, timedelta(minutes=10), backoff=False),
):
    for location, queue in locations_serving(Operation.MONITORING):
        AuditLocationOperator(task_id=f"audit_{location.site}_{location.name}", location=location.key, queue=queue)
