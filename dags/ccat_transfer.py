"""ccat_transfer: route bundles and send them buffer -> buffer between sites."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, TaskGroup

from ccat_operators.assets import BUNDLES_TRANSFERRED, BUNDLES_WRITTEN, announcement_doc, hourly_or_when
from ccat_operators.dag_locations import buffers_legs_leave, dag_topology
from ccat_operators.operators.assets import announce_after_all
from ccat_operators.operators.transfer import FindTransfersOperator, RouteBundlesOperator, SendTransferOperator
from ccat_operators.queues import Operation
from ccat_operators.retries import retry_policy
from ccat_operators.routing import transfer_pool, transfer_site_pairs

DOC = """
### Transfer

For every active BUFFER location at a site a leg leaves from, on its `..._data_transfer`
queue:

1. **route_bundles** gives each completed bundle its DataTransfers, once: a primary
   leg to one long-term-archive site chosen round-robin, and secondary legs from there to
   every other archive site (route overrides: DIRECT, RELAY, CUSTOM).
2. per site a leg can go to from here (the legs whose pools `ccat pools` lists),
   **find_transfers_to_SITE** lists transfers that can go now and **send_to_SITE**
   sends each (one mapped task per bundle, labelled with its name) with the route's
   method (rsync over SSH, bbcp, or local), into a `.part` name, verified by size and
   checksum *at the destination*, then renamed. Parallel sends per route are limited by
   the pool `ccat_transfer_<origin>_to_<destination>` (edit its slots under
   Admin > Pools).

States: DataTransfer **PENDING -> SCHEDULED -> IN_PROGRESS -> COMPLETED**; a failed try
goes back to PENDING and the task retries with exponential backoff; after the last retry
it is **FAILED** with the reason (`data_transfer.failure_reason`). Each try writes a
`data_transfer_log` row pointing to the command's output file.

**On failure**: read the log file named in the task log. Fix the cause (SSH key, disk,
route) and clear the mapped task: it resumes the partial copy, or finishes at once if
the destination already holds a verified copy. A route whose method cannot run (e.g.
no `bbcp` binary) fails without retries and says so.
"""

# (origin site, destination site) of every leg routing can make: the pools `ccat pools` creates
# (an invalid topology file fails this file's import, naming the key).
LEGS = transfer_site_pairs(dag_topology())
# Every active BUFFER location at a site a leg leaves from: nothing is routed or sent from any other.
BUFFERS = buffers_legs_leave(Operation.DATA_TRANSFER)
# Arrivals route onwards (secondary legs, relays) only where a leg leaves a site another leg reaches.
ONWARD = {origin for origin, _ in LEGS} & {destination for _, destination in LEGS}

with DAG(
    dag_id="ccat_transfer",
    schedule=hourly_or_when(BUNDLES_WRITTEN, BUNDLES_TRANSFERRED) if ONWARD else hourly_or_when(BUNDLES_WRITTEN),
    catchup=False,
    max_active_runs=1,
    tags=["ccat", "transfer"],
    doc_md=DOC + announcement_doc("transfer", starts="ccat_unpacking (and ccat_transfer again, for secondary routes)"),
    default_args=retry_policy(4, timedelta(minutes=2), max_delay=timedelta(hours=1)),
) as dag:
    for origin, queue in BUFFERS:
        with TaskGroup(group_id=f"{origin.site}_{origin.name}", tooltip=f"transfers from {origin.key}"):
            route = RouteBundlesOperator(task_id="route_bundles", location=origin.key, queue=queue)
            for destination in [to for site, to in LEGS if site == origin.site]:
                find = FindTransfersOperator(
                    task_id=f"find_transfers_to_{destination}",
                    location=origin.key,
                    destination_site=destination,
                    queue=queue,
                )
                send = SendTransferOperator.partial(
                    task_id=f"send_to_{destination}",
                    location=origin.key,
                    queue=queue,
                    pool=transfer_pool(origin.site, destination),
                    map_index_template="{{ task.bundle }}",
                ).expand_kwargs(find.output)
                route >> find
    announce_after_all(dag, "transfer")
