"""ccat_packaging: filed raw files -> RawDataPackage tars in each site's primary buffer."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, TaskGroup

from ccat_operators.assets import OBSERVATIONS_FILED, announcement_doc, hourly_or_when
from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.assets import announce_after_all
from ccat_operators.operators.packaging import RawDataPackagePlanOperator, RawDataPackageWriteOperator
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy

DOC = """
### Packaging

For every active SOURCE location, on that location's `..._raw_data_package_creation`
queue (a worker where the instrument disks are mounted):

1. **plan_packages** groups files not yet in a package by observation x instrument
   module and splits them into RawDataPackages no larger than the location's
   `package_size_limit` (a single larger file gets its own package, flagged
   *oversized*). New packages are **PENDING**.
2. **write_packages** writes each package as a tar (directory structure kept) into the
   site's primary BUFFER: **SCHEDULED** (claimed) -> **IN_PROGRESS** -> **COMPLETED**,
   with the package checksum and every file's checksum computed while writing, then
   verified against the filed checksums. A temporary `.part` name is used until the tar
   is complete.

**On failure**: a package whose file is missing or changed is **FAILED** with the
reason (see the task log or `raw_data_package.failure_reason`); the other packages are
written anyway, and no source file is touched. Restore the file, then set the package
back to PENDING. Any other failure (database, disk full) can simply be cleared: work
left half-done by a killed task is picked up again, never duplicated.
"""

# Every active SOURCE location (an invalid topology file fails this file's import, naming the key).
SOURCES = locations_serving(Operation.RAW_DATA_PACKAGE_CREATION)

with DAG(
    dag_id="ccat_packaging",
    schedule=hourly_or_when(OBSERVATIONS_FILED),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "packaging"],
    doc_md=DOC + announcement_doc("packaging", starts="ccat_bundling"),
    default_args=retry_policy(3, timedelta(minutes=1)),
) as dag:
    for location, queue in SOURCES:
        with TaskGroup(group_id=f"{location.site}_{location.name}", tooltip=f"packaging at {location.key}"):
            plan = RawDataPackagePlanOperator(task_id="plan_packages", location=location.key, queue=queue)
            write = RawDataPackageWriteOperator(task_id="write_packages", location=location.key, queue=queue)
            plan >> write
    announce_after_all(dag, "packaging")
