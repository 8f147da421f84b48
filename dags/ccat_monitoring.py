"""ccat_monitoring: disk usage per location, stale S3 upload sweep per archive, stuck-work sweep, health summary."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.monitoring import (
    MeasureDiskUsageOperator,
    SummarizeHealthOperator,
    SweepStaleUploadsOperator,
    SweepStuckWorkOperator,
)
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy
from ccat_operators.states import LocationType, StorageType
from ccat_operators.topology import TopologyError

DOC = """
### Monitoring

- **measure_disk_usage_...** (each DISK location, on its `..._monitoring` queue) writes
  `disk_usage` metrics (used bytes, total, fraction) to InfluxDB (`CCAT_METRICS_URL`).
- **sweep_stale_uploads_...** (each LONG_TERM_ARCHIVE location, on its `..._monitoring`
  queue) aborts incomplete multipart uploads under the location's prefix in its bucket
  initiated more than 24 hours ago (a worker killed mid-upload leaves one, holding its
  parts' bytes), one warning line each, and writes `s3_stale_uploads` metrics.
- **sweep_stuck_work** (central, queue `default`) returns items IN_PROGRESS for more than
  2 hours whose worker is gone (no lease held) to PENDING, one warning line per item.
  Items whose worker is alive are left alone, however slow.
- **summarize_health** (central) logs counts per stage and state, the oldest waiting item
  and the FAILED items of every stage (needing an operator), and writes `pipeline_state` metrics.

**On failure**: a location "not mounted on this worker" means the worker serving its
queue runs on the wrong host. A failed stale-upload sweep is the S3 archive's (down, or
its credentials lack `s3:ListBucketMultipartUploads` / `s3:AbortMultipartUpload`). A
failed stuck-work sweep or summary is a database problem: check the `ccat_ops_db`
connection. The Grafana dashboard is in `include/grafana/`.

An invalid topology file stops the per-location DAGs (import errors) but not this one:
the stuck-work sweep and the summary go on, and only the per-location tasks (disk usage,
stale uploads) wait for the file to be fixed.
"""

# The central tasks need no topology; the per-location tasks do. With an invalid file this
# DAG still loads, without them, and says why at the top of its docs.
try:
    MONITORED = locations_serving(Operation.MONITORING)
    TOPOLOGY_PROBLEM = ""
except TopologyError as error:
    MONITORED = []
    TOPOLOGY_PROBLEM = (
        "**The topology file is invalid: disk usage is not measured and stale S3 uploads are not swept "
        f"until it is fixed.**\n\n```\n{error}\n```\n"
    )
DISKS = [served for served in MONITORED if served.location.storage == StorageType.DISK]
ARCHIVES = [served for served in MONITORED if served.location.type == LocationType.LONG_TERM_ARCHIVE]
#: Incomplete multipart uploads older than this are abandoned (see monitoring.sweep_stale_uploads).
STALE_UPLOAD_HOURS = 24

with DAG(
    dag_id="ccat_monitoring",
    schedule=timedelta(minutes=15),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "monitoring"],
    doc_md=TOPOLOGY_PROBLEM + DOC,
    default_args=retry_policy(1, timedelta(minutes=1), backoff=False),
):
    for location, queue in DISKS:
        MeasureDiskUsageOperator(
            task_id=f"measure_disk_usage_{location.site}_{location.name}", location=location.key, queue=queue
        )
    for location, queue in ARCHIVES:
        SweepStaleUploadsOperator(
            task_id=f"sweep_stale_uploads_{location.site}_{location.name}",
            location=location.key,
            queue=queue,
            older_than_hours=STALE_UPLOAD_HOURS,
        )
    SweepStuckWorkOperator(task_id="sweep_stuck_work", older_than_minutes=120)
    SummarizeHealthOperator(task_id="summarize_health")
