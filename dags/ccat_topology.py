"""ccat_topology: bring ops-db's schema and topology up to date from the topology file."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from ccat_operators.operators.ops_db import OpsDbUpgradeOperator, TopologyApplyOperator
from ccat_operators.paths import default_topology_file

DOC = """
### Apply the topology

Upgrades the ops-db schema (pending migrations only) and then makes ops-db's sites,
data locations, routes and retention policies match the topology file.

**Safe to re-run**: both tasks are idempotent; a run with nothing to change logs
"up to date" / "already matches". A location removed from the file is *deactivated*,
never deleted, so its history stays.

**On failure**: the task log names the file and the key at fault (for example
`sites.ccat.locations.buffer.type: 'BUFER' is not one of ...`). Nothing was applied.
Fix the file and clear the task.
"""

with DAG(
    dag_id="ccat_topology",
    schedule=None,
    catchup=False,
    tags=["ccat", "ops-db"],
    doc_md=DOC,
    params={
        "topology_file": Param(
            str(default_topology_file()),
            type="string",
            title="Topology file",
            description="Path of the YAML topology file, as seen by the worker.",
        )
    },
):
    upgrade = OpsDbUpgradeOperator(task_id="upgrade_ops_db")
    apply = TopologyApplyOperator(task_id="apply_topology", topology_file="{{ params.topology_file }}")
    upgrade >> apply
