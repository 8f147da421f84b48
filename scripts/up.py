"""`make up`: the Airflow UI on this machine, on the example topology or on ``$CCAT_TOPOLOGY``.

1. checks and adapts the topology file as ``make demo`` does (``$CCAT_TOPOLOGY``, else
   include/topology/ccat.yaml; one it cannot run on is refused in one line before
   anything is written), into ``<state>/topology.yaml``, which Airflow's DAGs read;
2. starts the private PostgreSQL under ``<state>/postgres`` (ops-db, and Airflow's
   metadata in database ``airflow_ui``) and SeaweedFS S3 under ``<state>/s3``;
3. migrates ops-db, applies the adapted topology and files the demo's synthetic
   observations (idempotent: a second ``make up`` files nothing new);
4. runs Airflow (LocalExecutor, FAB auth manager): api-server on
   http://127.0.0.1:8080 (``CCAT_UI_PORT``), scheduler, dag-processor, triggerer, with
   the roles of include/auth/roles.yaml, three local users and the pools of the
   topology's transfer legs (``ccat pools``);
5. unpauses the pipeline DAGs and triggers ccat_packaging: each stage's asset starts the
   next, so the observations flow to the archives while you watch.

Log in as ``admin``/``admin``, ``operator``/``operator`` or ``scientist``/``scientist``.
Ctrl-C stops Airflow and S3; ops-db stays up (``.venv/bin/ccat devdb stop``).
``CCAT_STATE_DIR``, ``CCAT_DEMO_PORT``, ``CCAT_DEMO_S3_PORT`` and ``CCAT_UI_PORT`` move the
state directory (``.ccat`` in the checkout) and the ports (to run a second copy beside the
first); ``ccat devdb stop`` and ``make clean`` read the same variables.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import demo  # the demo's settings (environment, set on import), topology adaptation, observations, S3 connections

from ccat_dev.local_airflow import LocalAirflow
from ccat_dev.s3 import LocalS3
from ccat_operators.opsdb import OpsDb

UI_PORT = int(os.environ.get("CCAT_UI_PORT", "8080"))
#: Unpaused on start: the hourly/asset-driven pipeline (staging and topology run on request).
PIPELINE_DAGS = ["ccat_packaging", "ccat_bundling", "ccat_transfer", "ccat_unpacking", "ccat_archive",
                 "ccat_deletion", "ccat_monitoring", "ccat_staging"]  # fmt: skip


def stop_on_sigterm(signum: int, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    adapted = demo.prepare()
    demo.step(f"starting PostgreSQL on 127.0.0.1:{demo.PORT} (data in {demo.STATE / 'postgres'})")
    ops_db_url, metadata_url = demo.start_database(metadata_db="airflow_ui")
    metadata_url = metadata_url.replace("postgresql://", "postgresql+psycopg://", 1)
    os.environ["AIRFLOW_CONN_CCAT_OPS_DB"] = ops_db_url
    with OpsDb.connect(ops_db_url) as db:
        demo.prepare_ops_db(db, adapted)

    demo.step(f"starting SeaweedFS S3 on 127.0.0.1:{demo.S3_PORT} (objects in {demo.STATE / 's3'})")
    s3 = LocalS3(demo.STATE / "s3", s3_port=demo.S3_PORT)
    s3.start()
    demo.s3_connections(s3, adapted)
    airflow = LocalAirflow(demo.STATE / "ui", metadata_url, port=UI_PORT)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        demo.step(f"starting Airflow (logs in {airflow.directory}); the first start takes about a minute")
        airflow.start()
        admin = airflow.client("admin")
        airflow.wait_for_dags(admin, PIPELINE_DAGS)
        for dag_id in PIPELINE_DAGS:
            admin.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        # Package now rather than at the top of the hour; each stage's asset then starts the next.
        admin.post("/dags/ccat_packaging/dagRuns", json={"logical_date": None}).raise_for_status()
        print(
            f"\n    Airflow UI: {airflow.url}\n"
            "    log in as admin/admin, operator/operator (runs the pipeline) or scientist/scientist\n"
            "    (triggers ccat_staging). Ctrl-C to stop.",
            flush=True,
        )
        while True:
            airflow.check_alive()
            time.sleep(5)
    except KeyboardInterrupt:
        print("\nstopping Airflow and S3 (ops-db stays up: .venv/bin/ccat devdb stop)")
    finally:
        airflow.stop()
        s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
