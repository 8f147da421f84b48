"""ccat_monitoring: disk usage per location, stuck-work sweep, health summary."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.monitoring import (
    MeasureDiskUsageOperator,
    SummarizeHealthOperator,
    SweepStuckWorkOperator,
)
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy
from ccat_operators.states import StorageType
from ccat_operators.topology import TopologyError

DOC = """
### Monitoring

- **measure_disk_usage_...** (each DISK location, on its `..._monitoring` queue) writes
  `disk_usage` metrics (used bytes, total, fraction) to InfluxDB (`CCAT_METRICS_URL`).
- **sweep_stuck_work** (central, queue `default`) returns items IN_PROGRESS for more than
  2 hours whose worker is gone (no lease held) to PENDING, one warning line per item.
  Items whose worker is alive are left alone, however slow.
- **summarize_health** (central) logs counts per stage and state, the oldest waiting item
  and the archive transfers needing intervention, and writes `pipeline_state` metrics.

**On failure**: a location "not mounted on this worker" means the worker serving its
queue runs on the wrong host. A failed sweep or summary is a database problem: check
the `ccat_ops_db` connection. The Grafana dashboard is in `include/grafana/`.

An invalid topology file stops the per-location DAGs (import errors) but not this one:
the sweep and the summary go on, and only the disk usage tasks wait for the file to be
fixed.
"""

# The central tasks need no topology; the disk usage tasks do. With an invalid file this
# DAG still loads, without them, and says why at the top of its docs.
try:
    DISKS = [
        served for served in locations_serving(Operation.MONITORING) if served.location.storage == StorageType.DISK
    ]
    TOPOLOGY_PROBLEM = ""
except TopologyError as error:
    DISKS = []
    TOPOLOGY_PROBLEM = (
        f"**The topology file is invalid: disk usage is not measured until it is fixed.**\n\n```\n{error}\n```\n"
    )

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
    SweepStuckWorkOperator(task_id="sweep_stuck_work", older_than_minutes=120)
    SummarizeHealthOperator(task_id="summarize_health")
