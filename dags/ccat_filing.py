"""ccat_filing: observations filed over HTTP, checked and filed where their files are."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from ccat_operators.assets import announcement_doc
from ccat_operators.dag_locations import locations_serving
from ccat_operators.filing_requests import FILING_DAG_ID, FILING_OPERATION
from ccat_operators.operators.assets import AnnounceOutputOperator
from ccat_operators.operators.filing import ChooseFilingLocationsOperator, FileRequestsOperator
from ccat_operators.retries import retry_policy

DOC = """
### Filing over HTTP

Instruments file observations with `POST /ccat/api/v1/observations` on the api-server,
which checks the manifest (keys, types, times, location, instrument, modules, path
shapes) and records an open **filing request**. Checking the files needs the disks they
are on, so each SOURCE location's requests are decided by **file_at_...** on that
location's `..._raw_data_package_creation` queue (the worker where the instrument disks
are mounted): every file must exist inside the root (no link leading out), with the
filed size and checksum (computed when not given). Each request is filed whole, or
refused whole with every problem and nothing recorded, in one transaction with its
outcome, which `GET /ccat/api/v1/filings/{id}` reports.

The api-server starts a run for the location of each request (param `location`), unless
one is already waiting to start, which files it too; **choose_locations** (on
`default`) follows only that location's task. The hourly run files what is left
anywhere (a request whose run failed).

**On failure**: a refused request is not a failure (its requester reads why). A failed
task (ops-db or a disk unreachable) left its request open, nothing recorded: clear it,
or let the next run file it.
"""

# Every active SOURCE location (an invalid topology file fails this file's import, naming the key).
SOURCES = locations_serving(FILING_OPERATION)

with DAG(
    dag_id=FILING_DAG_ID,
    schedule="@hourly",
    catchup=False,
    # Requests arrive from the API whenever instruments file: a paused DAG would hold them all.
    is_paused_upon_creation=False,
    tags=["ccat", "filing"],
    doc_md=DOC + announcement_doc("filing", starts="ccat_packaging"),
    default_args=retry_policy(3, timedelta(minutes=1)),
    params={
        "location": Param(
            None,
            type=["null", "string"],
            title="SOURCE location",
            description="site/location whose open filing requests to decide; empty: every location's.",
        )
    },
):
    tasks = {
        location.key: FileRequestsOperator(
            task_id=f"file_at_{location.site}_{location.name}", location=location.key, queue=queue
        )
        for location, queue in SOURCES
    }
    ChooseFilingLocationsOperator(
        task_id="choose_locations", task_ids={key: task.task_id for key, task in tasks.items()}
    ) >> list(tasks.values())
    # Downstream of the filing tasks only: the branch skips what it does not follow.
    list(tasks.values()) >> AnnounceOutputOperator(stage="filing")
