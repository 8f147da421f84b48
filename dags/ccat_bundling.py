"""ccat_bundling: RawDataPackages in a buffer -> DataTransferPackages for the long link."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, TaskGroup

from ccat_operators.assets import PACKAGES_BUFFERED, announcement_doc, hourly_or_when
from ccat_operators.dag_locations import buffers_legs_leave
from ccat_operators.operators.assets import announce_after_all
from ccat_operators.operators.bundling import DataTransferPackagePlanOperator, DataTransferPackageWriteOperator
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy

DOC = """
### Bundling

For every active BUFFER location at a site a transfer leg leaves from (a bundle made
anywhere else could go nowhere), on its `..._data_transfer_package_creation` queue:

1. **plan_bundles** packs completed RawDataPackages that are in no bundle yet into
   DataTransferPackages of at most the location's `bundle_size_limit`, first-fit
   decreasing. A bundle leaves when it is at least 95% full, or when its oldest package
   has waited `bundle_max_age` (so a trickle of data still moves). New bundles are
   **PENDING**; packages that do not make a bundle yet wait for the next run.
2. **write_bundles** writes each bundle as a tar of its package tars: **SCHEDULED** ->
   **IN_PROGRESS** -> **COMPLETED**, every package verified against its recorded
   checksum while the bundle checksum is computed in the same pass.

**On failure**: a bundle whose package tar is missing or corrupt in the buffer is
**FAILED** with the reason in `data_transfer_package.failure_reason`; others go on.
Anything else can be cleared and re-run safely.
"""

# Every active BUFFER location at a site a leg leaves from (an invalid topology file fails
# this file's import, naming the key).
BUFFERS = buffers_legs_leave(Operation.DATA_TRANSFER_PACKAGE_CREATION)

with DAG(
    dag_id="ccat_bundling",
    schedule=hourly_or_when(PACKAGES_BUFFERED),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "bundling"],
    doc_md=DOC + announcement_doc("bundling", starts="ccat_transfer"),
    default_args=retry_policy(3, timedelta(minutes=1)),
) as dag:
    for location, queue in BUFFERS:
        with TaskGroup(group_id=f"{location.site}_{location.name}", tooltip=f"bundling at {location.key}"):
            plan = DataTransferPackagePlanOperator(task_id="plan_bundles", location=location.key, queue=queue)
            write = DataTransferPackageWriteOperator(task_id="write_bundles", location=location.key, queue=queue)
            plan >> write
    announce_after_all(dag, "bundling")
