"""ccat_staging: a scientist asks for observations; they are staged from the archive."""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from ccat_operators.dag_locations import locations_serving
from ccat_operators.operators.staging import StageObservationsOperator
from ccat_operators.queues import Operation
from ccat_operators.sensors.staging import StagingRequestSensor
from ccat_operators.staging import DEFAULT_RETENTION, DEFAULT_TIMEOUT, MAX_ID, MAX_RETENTION, MAX_TIMEOUT

DOC = """
### Stage data for processing

Trigger with the form: name the observations (their ids, **or** an obs unit with a date
range) and the PROCESSING location. The raw files are fetched from a long-term archive
holding a verified copy (the location's own site first), checked file by file against
their filed checksums, and written to `<location root>/<job>/<path of the raw file>`.

The request becomes a StagingJob named after it: triggering the same request again
reuses the job and stages only what is missing. Job states: **PENDING -> SCHEDULED ->
IN_PROGRESS -> COMPLETED | FAILED**. Staged copies are deleted after `retention`.

**Observations not archived yet** (filed, still being packaged, sent or uploaded) are
waited for: `wait_for_archive_*` shows as *deferred* while the triggerer asks ops-db
every minute (no worker slot is held), and `ccat status` shows the job as waiting. Once
every file of the observations is in an archive, `stage_to_*` stages them. After
`timeout` (default 24 h) the task fails and the job is FAILED, naming what is missing.

**On failure**: a refused request says why at once and records nothing (unknown ids, no
observation of the obs unit in the dates, both ids and an obs unit...). Trigger the same
request again, or clear the failed task, to try again.
"""

#: Seconds between two questions to ops-db while a request waits (``CCAT_STAGING_POLL_INTERVAL``).
POLL_INTERVAL = float(os.environ.get("CCAT_STAGING_POLL_INTERVAL") or 60)

# Every active PROCESSING location, the form's choices (an invalid topology file fails this
# file's import, naming the key).
PROCESSING = locations_serving(Operation.STAGING)

with DAG(
    dag_id="ccat_staging",
    schedule=None,
    catchup=False,
    tags=["ccat", "staging", "scientists"],
    doc_md=DOC,
    params={
        "observations": Param(
            [],
            type="array",
            items={"type": "integer", "minimum": 1, "maximum": MAX_ID},
            title="Observation ids",
            description="ExecutedObsUnit ids to stage. Leave empty to use an obs unit and dates instead.",
        ),
        # Optional fields are nullable: the form sends an empty field as null.
        "obs_unit": Param(
            None, type=["null", "string"], title="Obs unit", description="Name of the obs unit (instead of ids)."
        ),
        "start_date": Param(
            None,
            type=["null", "string"],
            format="date",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            title="From",
            description="First day of observations of the obs unit (inclusive).",
        ),
        "end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            title="To",
            description="Last day of observations of the obs unit (inclusive).",
        ),
        "location": Param(
            PROCESSING[0].location.key if PROCESSING else "",
            type="string",
            enum=[loc.key for loc, _ in PROCESSING],
            title="Processing location",
            description="Where the data should appear.",
        ),
        "requested_by": Param(
            "scientist", type="string", minLength=1, title="Requested by", description="Your name or e-mail."
        ),
        "retention": Param(
            DEFAULT_RETENTION,
            type="string",
            pattern=r"^[1-9][0-9]{0,3}[smhdw]$",
            title="Keep for",
            description=f"How long the staged copy is kept, e.g. 14d, 6w (at most {MAX_RETENTION}).",
        ),
        "timeout": Param(
            DEFAULT_TIMEOUT,
            type="string",
            pattern=r"^[1-9][0-9]{0,3}[smhdw]$",
            title="Wait at most",
            description=(
                f"How long to wait for observations that are not archived yet, e.g. 24h, 3d (at most {MAX_TIMEOUT})."
            ),
        ),
    },
):
    for location, queue in PROCESSING:
        wait = StagingRequestSensor(
            task_id=f"wait_for_archive_{location.site}_{location.name}",
            location=location.key,
            queue=queue,
            poke_interval=POLL_INTERVAL,
        )
        StageObservationsOperator(
            task_id=f"stage_to_{location.site}_{location.name}",
            location=location.key,
            staging_job=wait.output,
            queue=queue,
        )
