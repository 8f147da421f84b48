"""ccat_unpacking: arrived bundles -> verified RawDataPackages in the destination buffer."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from ccat_operators.assets import BUNDLES_TRANSFERRED, announcement_doc, hourly_or_when
from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.assets import announce_after_all
from ccat_operators.operators.transfer import UnpackBundlesOperator
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy

DOC = """
### Unpacking

For every active BUFFER location, on its `..._data_transfer_unpacking` queue,
**unpack_bundles_at_...** streams each arrived DataTransferPackage once: the bundle
checksum is computed while its RawDataPackages are extracted, each verified against its
recorded checksum. Only when everything matches are the packages renamed into place and
recorded (PhysicalCopy PRESENT). Unpack status: **PENDING -> SCHEDULED -> IN_PROGRESS ->
COMPLETED | FAILED**, separate from the transfer, so retrying never re-transfers.

Headers are parsed by a bounded reader: a malformed pax record, an absurd size claim, a
flipped byte or a truncated file is a refusal of that bundle alone, never a stuck
location. Members that are absolute, contain `..`, are links or devices, or are not
packages of the bundle are refused; nothing is written through a link in the buffer.

A bundle **damaged after it arrived** (its file no longer matches the recorded checksum)
is removed and sent again from the origin buffer by the next `ccat_transfer` run, at
most 3 times (`data_transfer.redeliveries`). A bundle refused although it is the one
recorded, or one damaged a fourth time, is **FAILED** with the reason
(`data_transfer.unpack_failure_reason`).

**On failure**: a FAILED unpack needs a person: the reason says what was refused. An
interrupted unpack (disk full, worker lost) goes back to PENDING with no `.part` left
and is retried by clearing the task.
"""

# Every active BUFFER location (an invalid topology file fails this file's import, naming the key).
BUFFERS = locations_serving(Operation.DATA_TRANSFER_UNPACKING)

with DAG(
    dag_id="ccat_unpacking",
    schedule=hourly_or_when(BUNDLES_TRANSFERRED),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "unpacking"],
    doc_md=DOC + announcement_doc("unpacking", starts="ccat_archive"),
    default_args=retry_policy(3, timedelta(minutes=1)),
) as dag:
    for location, queue in BUFFERS:
        UnpackBundlesOperator(
            task_id=f"unpack_bundles_at_{location.site}_{location.name}", location=location.key, queue=queue
        )
    announce_after_all(dag, "unpacking")
