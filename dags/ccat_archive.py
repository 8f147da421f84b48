"""ccat_archive: RawDataPackages in a site's buffer -> the site's S3 long-term archive."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from ccat_operators.assets import PACKAGES_UNPACKED, announcement_doc, hourly_or_when
from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.archive import ArchivePackagesOperator
from ccat_operators.operators.assets import announce_after_all
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy

DOC = """
### Long-term archive

For every active LONG_TERM_ARCHIVE location, on its `..._long_term_archive_transfer`
queue, **archive_to_...** gives every package with a verified copy in one of the site's
buffers a LongTermArchiveTransfer, then uploads each to
`s3://<bucket>/<prefix>raw_data_packages/<instrument>/<YYYY-MM-DD>/<package>.tar` so that
the server verifies it (`ChecksumSHA256`; multipart with a checksum per part above
64 MiB), and checks it with a HEAD. The PhysicalCopy at the archive is then PRESENT; a
package with a verified copy in every archive is **ARCHIVED** (`archived_at`).

States: **PENDING -> SCHEDULED -> IN_PROGRESS -> COMPLETED**; a failed try goes back to
PENDING and counts an attempt. After **3** failed attempts the transfer is **FAILED** with
`requires_intervention` and is not tried again.

**On failure**: S3 unreachable or refusing credentials stops the run (other packages keep
their attempts) and the task retries with backoff. For transfers needing intervention,
read `failure_reason`, fix the cause, then `ccat archive clear [--id N]` and clear the task.
"""

# Every active LONG_TERM_ARCHIVE location (an invalid topology file fails this file's import, naming the key).
ARCHIVES = locations_serving(Operation.LONG_TERM_ARCHIVE_TRANSFER)

with DAG(
    dag_id="ccat_archive",
    schedule=hourly_or_when(PACKAGES_UNPACKED),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "archive"],
    doc_md=DOC + announcement_doc("archive", starts="ccat_deletion"),
    default_args=retry_policy(2, timedelta(minutes=5)),
) as dag:
    for location, queue in ARCHIVES:
        ArchivePackagesOperator(
            task_id=f"archive_to_{location.site}_{location.name}", location=location.key, queue=queue
        )
    announce_after_all(dag, "archive")
