"""ccat_deletion: remove the copies that retention rules allow to go."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from ccat_operators.assets import PACKAGES_ARCHIVED, hourly_or_when
from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.deletion import DeleteCopiesOperator
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy

DOC = """
### Deletion

For every active location with a `..._deletion` queue (SOURCE, BUFFER, PROCESSING),
**delete_at_...** schedules the copies the retention rules allow to go
(PRESENT/STAGED -> **DELETION_SCHEDULED**), re-checks each under a lock just before
(-> **DELETION_IN_PROGRESS**, or back to PRESENT if the rules no longer allow it),
removes its files and marks it **DELETED** (or **DELETION_FAILED** with the reason).

The rules (per location, from the topology's `retention`):
- SOURCE raw files: the package is ARCHIVED with at least `min_lta_copies` verified
  archive copies, none of its transfers or archive transfers is unfinished, and
  `period` has passed.
- BUFFER package tars: never the last verified copy, never while the archive reads it;
  after transfer, unpack and archive are done and `period` passed, or earlier when the
  disk is fuller than `disk_pressure_threshold` and a verified archive copy exists.
- PROCESSING staged copies: after the staging job's retention.
- Bundles (DataTransferPackages): once unpacked at every destination.
Long-term archive copies are never deleted automatically.

**On failure**: DELETION_FAILED copies keep their files' state unknown: check
`physical_copy.failure_reason` (permissions, mount), fix, and clear the task.

Runs hourly, and at once when `ccat_archive` archived something (asset
`ccat_packages_archived`): a verified archive copy is what lets buffer copies go.
"""

# Every active SOURCE, BUFFER and PROCESSING location (an invalid topology file fails this
# file's import, naming the key: nothing is deleted while the file is broken).
DELETING = locations_serving(Operation.DELETION)

with DAG(
    dag_id="ccat_deletion",
    schedule=hourly_or_when(PACKAGES_ARCHIVED),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "deletion"],
    doc_md=DOC,
    default_args=retry_policy(1, timedelta(minutes=5), backoff=False),
):
    for location, queue in DELETING:
        DeleteCopiesOperator(task_id=f"delete_at_{location.site}_{location.name}", location=location.key, queue=queue)
