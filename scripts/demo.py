"""`make demo`: the pipeline on embedded defaults, on this machine, from nothing.

1. starts a private PostgreSQL under .ccat/postgres (ops-db and Airflow's metadata DB);
2. migrates ops-db and applies include/topology/ccat.yaml (storage under .ccat/data);
3. writes synthetic raw files for a few observations and files them;
4. starts a SeaweedFS S3 server under .ccat/s3 (the two long-term archives' buckets);
5. runs the pipeline through Airflow (``dag.test()``): package, bundle, transfer ccat ->
   cologne and us, unpack, archive into S3, clean up what the rules allow (the source
   files among them), then one staging job for a scientist;
6. prints a summary of ops-db.

Re-running is safe: every step is idempotent; a second run files nothing new and the
DAGs find no work left.
Stop the database with ``.venv/bin/ccat devdb stop`` (or ``make clean`` to start over).
"""

from __future__ import annotations

import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("CCAT_STATE_DIR", REPO / ".ccat"))  # databases, storage, S3, logs
DATA_ROOT = STATE / "data"
PORT = int(os.environ.get("CCAT_DEMO_PORT", "54329"))

# Airflow reads its configuration when first imported: set it up before that.
os.environ.update(
    {
        "AIRFLOW_HOME": str(STATE / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://ccat@127.0.0.1:{PORT}/airflow",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "CCAT_DATA_ROOT": str(DATA_ROOT),
        # Small packages and no waiting for full bundles, so the demo's ~40 MB shows every step.
        "CCAT_PACKAGE_SIZE_LIMIT": "8MB",
        "CCAT_BUNDLE_MAX_AGE": "0s",
        # All "sites" are directories on this machine: copy between buffers in-process.
        "CCAT_TRANSFER_METHOD": "local",
        # Clean up as soon as the rules allow, so the demo shows deletion too.
        "CCAT_SOURCE_RETENTION": "0s",
        "CCAT_BUFFER_RETENTION": "0s",
    }
)
S3_PORT = int(os.environ.get("CCAT_DEMO_S3_PORT", "58333"))
os.environ["CCAT_S3_ENDPOINT"] = f"http://127.0.0.1:{S3_PORT}"

from ccat_dev.postgres import LocalPostgres
from ccat_dev.s3 import LocalS3
from ccat_operators import filing, migrations, queues, status, topology
from ccat_operators.opsdb import OpsDb
from ccat_operators.paths import default_topology_file
from ccat_operators.units import format_size

#: Synthetic observations: (instrument, module, obs unit, number of files, file size range).
OBSERVATIONS = [
    ("Prime-Cam", "280GHz", "orion_map", 12, (200_000, 2_000_000)),
    ("Prime-Cam", "350GHz", "orion_map", 8, (200_000, 2_000_000)),
    ("Prime-Cam", "850GHz", "deep_field", 6, (500_000, 4_000_000)),
    ("CHAI", "LFA", "m83_spectral", 10, (100_000, 1_000_000)),
    ("CHAI", "HFA", "m83_spectral", 4, (100_000, 1_000_000)),
]

#: DAGs run by the demo, in pipeline order, with their run configuration.
PIPELINE_DAGS: list[tuple[str, dict]] = [
    ("ccat_topology", {"topology_file": str(default_topology_file())}),
    ("ccat_packaging", {}),
    ("ccat_bundling", {}),
    ("ccat_transfer", {}),  # ccat -> first archive site (round-robin)
    ("ccat_transfer", {}),  # ... -> the other archive site (fan-out)
    ("ccat_unpacking", {}),
    ("ccat_archive", {}),
    ("ccat_deletion", {}),
    ("ccat_monitoring", {}),
]


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def start_database(metadata_db: str = "airflow") -> tuple[str, str]:
    """Start the private PostgreSQL; return the URLs of ops-db and of Airflow's metadata database."""
    server = LocalPostgres(STATE / "postgres", PORT)
    server.start()
    return server.create_database("ccat_ops_db"), server.create_database(metadata_db)


def write_observations(source_root: Path) -> list[filing.Observation]:
    """Write real files for each synthetic observation (deterministic content)."""
    rng = random.Random(20261121)
    start = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    result = []
    for index, (instrument, module, obs_unit, count, (low, high)) in enumerate(OBSERVATIONS):
        begin = start + timedelta(minutes=30 * index)
        directory = f"{instrument.lower()}/{begin:%Y-%m-%d}/{obs_unit}_{begin:%H%M}/{module}"
        files = []
        for number in range(count):
            relative = f"{directory}/scan_{number:04d}.dat"
            path = source_root / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(rng.randbytes(rng.randint(low, high)))
            files.append(filing.RawFile(path=relative, module=module))
        result.append(
            filing.Observation(
                location="ccat/telescope_computer",
                instrument=instrument,
                program="demo_program",
                obs_unit=obs_unit,
                start_time=begin,
                end_time=begin + timedelta(minutes=25),
                files=tuple(files),
            )
        )
    return result


def s3_connections(s3: LocalS3) -> None:
    """Airflow connections for the archives' credentials (what a deployment keeps in a secrets backend)."""
    for site in ("cologne", "us"):
        os.environ[f"AIRFLOW_CONN_CCAT_S3_{site.upper()}"] = json.dumps(
            {"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
             "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}
        )  # fmt: skip


def run_dags(ops_db_url: str) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db as airflow_db

    os.environ["AIRFLOW_CONN_CCAT_OPS_DB"] = ops_db_url
    airflow_db.initdb()
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    if dagbag.import_errors:
        raise SystemExit(f"DAG import errors: {dagbag.import_errors}")
    for dag_id, conf in PIPELINE_DAGS:
        run = dagbag.get_dag(dag_id).test(run_conf=conf)
        print(f"    {dag_id}: {run.state}")
        if run.state != "success":
            raise SystemExit(f"{dag_id} did not succeed; see the log above")
    with OpsDb.connect(ops_db_url) as db:
        observation = db.fetch_value("first_executed_obs_unit")
    conf = {"observations": [observation], "location": "cologne/ramses", "requested_by": "demo", "retention": "14d"}
    run = dagbag.get_dag("ccat_staging").test(run_conf=conf)
    print(f"    ccat_staging (observation {observation} -> cologne/ramses): {run.state}")
    if run.state != "success":
        raise SystemExit("ccat_staging did not succeed; see the log above")


def summary(db: OpsDb) -> None:
    print(status.report(db))  # what `ccat status` prints
    print("\ncopies by location type and state:")
    for row in db.fetch_all("physical_copy_counts"):
        print(f"  {row.location_type:<18} {row.status:<12} {row.copies:>5}")
    files = db.fetch_one("summary_files")
    print(
        f"\nfiled raw data: {files.files} files, {format_size(files.bytes or 0)}, {files.unpackaged} not yet packaged"
    )
    print("\nCelery queues (one worker per site serves its own):")
    for site in ("ccat", "cologne", "us"):
        found = queues.discover(db, site=site)
        print(f"  {site:<8} {len(found)} queues, e.g. {found[0].name}")


def prepare_ops_db(db: OpsDb) -> None:
    """Migrate ops-db, apply the example topology and file the synthetic observations (idempotent)."""
    step("migrating ops-db")
    applied = migrations.upgrade(db)
    print(f"    {len(applied)} migration(s) applied" if applied else "    up to date")

    step(f"applying topology {default_topology_file().relative_to(REPO)} (storage under {DATA_ROOT})")
    loaded = topology.load(default_topology_file())
    report = topology.apply(db, loaded)
    print(f"    {len(report.changes)} change(s)")
    for location in loaded.locations:
        if "root_path" in location.storage_details:
            Path(location.storage_details["root_path"]).mkdir(parents=True, exist_ok=True)

    step("filing synthetic observations (real files on disk)")
    source_root = Path(loaded.location("ccat/telescope_computer").storage_details["root_path"])
    if db.fetch_one("summary_files").files:
        # A re-run: the first run filed them (and deletion may since have cleaned the source).
        print("    already filed by an earlier run; nothing new to file")
    else:
        for observation in write_observations(source_root):
            result = filing.file_observation(db, observation)
            print(f"    {observation.instrument:<9} {observation.obs_unit:<13} {result.new_files:>3} files filed")


def main() -> int:
    step(f"starting PostgreSQL on 127.0.0.1:{PORT} (data in {STATE / 'postgres'})")
    ops_db_url, _ = start_database()
    print(f"    ops-db: {ops_db_url}")
    with OpsDb.connect(ops_db_url) as db:
        prepare_ops_db(db)

        step(f"starting SeaweedFS S3 on 127.0.0.1:{S3_PORT} (objects in {STATE / 's3'})")
        s3 = LocalS3(STATE / "s3", s3_port=S3_PORT)
        s3.start()
        s3_connections(s3)
        try:
            step("running the pipeline DAGs through Airflow")
            run_dags(ops_db_url)
        finally:
            s3.stop()

        step("ops-db summary")
        summary(db)
    print(f"\nDone. ops-db stays up at {ops_db_url} (stop: .venv/bin/ccat devdb stop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
