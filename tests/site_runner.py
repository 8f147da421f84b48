"""Run one piece of the pipeline as a site's worker would, inside that site's namespace.

    python -m tests.site_runner dag DAG_ID          # the whole DAG through Airflow (dag.test)
    python -m tests.site_runner send TRANSFER_ID    # one try of the send task's work
    python -m tests.site_runner unpack SITE/LOCATION

Configuration comes from the environment (AIRFLOW_HOME, AIRFLOW_CONN_*, CCAT_TOPOLOGY).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    command, argument = argv[0], argv[1]
    if command == "dag":
        from airflow.dag_processing.dagbag import DagBag

        dagbag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
        if dagbag.import_errors:
            print(dagbag.import_errors, file=sys.stderr)
            return 2
        run = dagbag.get_dag(argument).test()
        print(f"DAG_RUN_STATE={run.state}")
        return 0 if run.state == "success" else 1

    from ccat_operators import transfer, unpacking
    from ccat_operators.opsdb import OpsDb

    with OpsDb.connect(os.environ["AIRFLOW_CONN_CCAT_OPS_DB"]) as db:
        if command == "send":
            print(f"OUTCOME={transfer.send_transfer(db, int(argument))}")
            return 0
        if command == "unpack":
            site, _, name = argument.partition("/")
            result = unpacking.unpack_arrived(db, db.fetch_one("data_location_by_key", site=site, name=name))
            print(f"UNPACKED={len(result.completed)} FAILED={len(result.failed)}")
            return 0
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
