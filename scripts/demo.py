"""`make demo`: the pipeline on this machine, from nothing, on the example topology or on ``$CCAT_TOPOLOGY``.

1. reads the topology file (``$CCAT_TOPOLOGY``, else include/topology/ccat.yaml) and
   refuses, in one line on stderr and before anything is written, one it cannot run: an
   invalid file, no active SOURCE location, no active LONG_TERM_ARCHIVE, no instrument,
   or a state directory that an earlier run made from another topology file;
2. adapts it to this machine in ``<state>/topology.yaml`` (what ops-db and the DAGs get):
   every DISK root moves to ``<state>/data/<site>/<location>`` (whatever the file says:
   the demo never writes outside its state directory), every archive to the local S3
   server (buckets and prefixes kept), every transfer becomes a local copy, packages are
   small, bundles leave at once and SOURCE and BUFFER copies go as soon as the other
   deletion rules allow. Sites, locations, priorities, active flags, routes, instruments
   and the other rules stay as the file has them;
3. starts a private PostgreSQL under ``<state>/postgres`` (ops-db and Airflow's metadata
   DB), migrates ops-db, applies the adapted topology and creates its storage roots;
4. writes synthetic raw files for a few observations of the topology's instruments and
   modules and files them at its SOURCE locations;
5. starts a SeaweedFS S3 server under ``<state>/s3`` with an Airflow connection for each
   archive's ``conn_id``;
6. runs the pipeline through Airflow (``dag.test()``): package, bundle, transfer (one run
   more for each leg that waits for another, e.g. a RELAY's second leg), unpack, archive
   into S3, clean up what the rules allow (the source files among them), then one staging
   job for a scientist into the first PROCESSING location, if there is one;
7. prints a summary of ops-db.

The state directory is ``$CCAT_STATE_DIR``, else ``.ccat`` in the checkout; PostgreSQL
listens on 127.0.0.1:``$CCAT_DEMO_PORT`` (54329) and S3 on ``$CCAT_DEMO_S3_PORT`` (58333).
Re-running is safe: every step is idempotent; a second run files nothing new and the
DAGs find no work left. Stop the database with ``.venv/bin/ccat devdb stop`` (it reads the
same variables), or ``make clean`` to start over (needed to run on another topology).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path

from ccat_dev.postgres import demo_port, demo_server, demo_state_dir
from ccat_operators.paths import default_topology_file

REPO = Path(__file__).resolve().parents[1]
STATE = demo_state_dir()  # databases, storage, S3, logs
DATA_ROOT = STATE / "data"
try:
    PORT = demo_port()
except ValueError as error:
    raise SystemExit(f"demo: {error}") from None
S3_PORT = int(os.environ.get("CCAT_DEMO_S3_PORT", "58333"))
S3_ENDPOINT = f"http://127.0.0.1:{S3_PORT}"
#: The topology file asked for, and the demo's adaptation of it (which the DAGs read).
TOPOLOGY_FILE = default_topology_file().absolute()
DEMO_TOPOLOGY = STATE / "topology.yaml"

# Airflow reads its configuration when first imported: set it up before that.
os.environ.update(
    {
        "AIRFLOW_HOME": str(STATE / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://ccat@127.0.0.1:{PORT}/airflow",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "CCAT_TOPOLOGY": str(DEMO_TOPOLOGY),
        "CCAT_DATA_ROOT": str(DATA_ROOT),
    }
)

import yaml

from ccat_dev.s3 import LocalS3
from ccat_operators import filing, migrations, queues, status, topology, yamldoc
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType, StorageType, TransferMethod
from ccat_operators.units import format_size

#: Synthetic observations, one instrument module each: (obs unit, number of files, file size range).
OBSERVATIONS = [
    ("orion_map", 12, (200_000, 2_000_000)),
    ("orion_map", 8, (200_000, 2_000_000)),
    ("deep_field", 6, (500_000, 4_000_000)),
    ("m83_spectral", 10, (100_000, 1_000_000)),
    ("m83_spectral", 4, (100_000, 1_000_000)),
]

#: What the adaptation sets, so that the demo's ~40 MB shows every stage in one go: several
#: small packages, a few bundles that leave at once (round-robin sends them to different
#: archive sites), copies made in-process, deletion at once.
SOURCE_SETTINGS = {"package_size_limit": "8MB"}
BUFFER_SETTINGS = {"bundle_size_limit": "24MB", "bundle_max_age": "0s", "transfer_method": TransferMethod.LOCAL.value}
QUICK_RETENTION = "0s"  # of SOURCE and BUFFER copies that have a retention policy
#: The connection of an archive whose topology names none.
DEMO_CONN_ID = "ccat_demo_s3"
#: First line of the adapted topology file; the rest of the line names the file it adapts.
HEADER = "# make demo's adaptation to this machine of "
#: Longest chain of legs a bundle can need (a RELAY, then a relayed secondary leg), plus one.
MAX_TRANSFER_RUNS = 6


class DemoRefusedError(Exception):
    """The demo cannot run on this topology (or state directory); the message says why, on one line."""


@dataclass(frozen=True)
class DemoTopology:
    """The topology the demo runs: the file asked for, adapted to this machine."""

    text: str  # the adapted file, written to DEMO_TOPOLOGY
    loaded: topology.Topology

    def active(self, location_type: LocationType) -> list[topology.Location]:
        return [loc for loc in self.loaded.locations if loc.active and loc.type == location_type]


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def shown(path: Path) -> str:
    """A path as the user thinks of it: relative to the checkout when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def plan() -> DemoTopology:
    """Check the topology file and adapt it to this machine; write nothing.

    Raises DemoRefusedError, saying why in one line, for a file the demo cannot run on,
    or a state directory an earlier run made from another file.
    """
    try:
        loaded = topology.load(TOPOLOGY_FILE)
    except topology.TopologyError as error:
        raise DemoRefusedError("; ".join(error.problems)) from None
    types = {location.type for location in loaded.locations if location.active}
    if LocationType.SOURCE not in types:
        raise DemoRefusedError("it has no active SOURCE location, where the demo files its observations")
    if LocationType.LONG_TERM_ARCHIVE not in types:
        raise DemoRefusedError("it has no active LONG_TERM_ARCHIVE location, where the demo archives its data")
    if not loaded.instruments:
        raise DemoRefusedError("it declares no instrument, whose modules the demo's observations come from")
    made_from = state_made_from()
    if made_from is not None and made_from != TOPOLOGY_FILE:
        raise DemoRefusedError(
            f"the demo's state in {shown(STATE)} was made from {shown(made_from)}; to run on another topology "
            "start over with `make clean`, or give it its own CCAT_STATE_DIR"
        )
    document = adapt(yamldoc.load(TOPOLOGY_FILE.read_text()), loaded)
    text = HEADER + f"{TOPOLOGY_FILE}\n" + yaml.safe_dump(document, sort_keys=False)
    return DemoTopology(text, topology.loads(text, source=str(DEMO_TOPOLOGY)))


def state_made_from() -> Path | None:
    """The topology file the state directory was made from (an older state: the example's), or None if new."""
    try:
        first_line = DEMO_TOPOLOGY.read_text().partition("\n")[0]
    except FileNotFoundError:
        return REPO / "include" / "topology" / "ccat.yaml" if (STATE / "postgres").exists() else None
    return Path(first_line.removeprefix(HEADER))


def adapt(document: dict, loaded: topology.Topology) -> dict:
    """The topology document with storage, archives, transfers and the demo's settings made local (see above)."""
    for site, site_spec in document["sites"].items():
        for name, spec in site_spec["locations"].items():
            location = loaded.location(f"{site}/{name}")
            if "root_path" in spec:
                spec["root_path"] = str(DATA_ROOT / site / name)
            if location.storage == StorageType.S3:
                spec["endpoint_url"] = S3_ENDPOINT
                spec.setdefault("conn_id", DEMO_CONN_ID)
            settings = {LocationType.SOURCE: SOURCE_SETTINGS, LocationType.BUFFER: BUFFER_SETTINGS}.get(location.type)
            if settings:
                spec["settings"] = {**(spec.get("settings") or {}), **settings}
            if location.type in (LocationType.SOURCE, LocationType.BUFFER) and spec.get("retention"):
                spec["retention"]["period"] = QUICK_RETENTION
    for route in (document.get("routes") or {}).values():
        route["method"] = TransferMethod.LOCAL.value
        kept = {
            name: value
            for name, value in (route.get("settings") or {}).items()
            if TransferMethod.LOCAL in topology.ROUTE_SETTINGS[name][1]  # bbcp's streams, window... go
        }
        route.pop("settings", None)
        if kept:
            route["settings"] = kept
    return document


def start_database(metadata_db: str = "airflow") -> tuple[str, str]:
    """Start the private PostgreSQL; return the URLs of ops-db and of Airflow's metadata database."""
    server = demo_server()
    server.start()
    return server.create_database("ccat_ops_db"), server.create_database(metadata_db)


def _directory_name(name: str) -> str:
    """An instrument or module name as one directory name (lowercase letters, digits, _ and -)."""
    return re.sub(r"[^a-z0-9_-]+", "_", name.lower())


def write_observations(demo: DemoTopology) -> list[filing.Observation]:
    """Write real files (deterministic content) for each synthetic observation, at the SOURCE locations in turn.

    Each observation is of one instrument module: the topology's instruments take turns,
    each giving its next module.
    """
    instruments = demo.loaded.instruments
    deepest = max(len(names) for names in instruments.values())
    modules = [
        (instrument, names[index])
        for index in range(deepest)
        for instrument, names in instruments.items()
        if index < len(names)
    ]
    sources = demo.active(LocationType.SOURCE)
    rng = random.Random(20261121)
    start = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
    result = []
    shapes = zip(OBSERVATIONS, cycle(modules), cycle(sources), strict=False)
    for index, ((obs_unit, count, (low, high)), (instrument, module), source) in enumerate(shapes):
        begin = start + timedelta(minutes=30 * index)
        directory = f"{_directory_name(instrument)}/{begin:%Y-%m-%d}/{obs_unit}_{begin:%H%M}/{_directory_name(module)}"
        files = []
        for number in range(count):
            relative = f"{directory}/scan_{number:04d}.dat"
            path = Path(source.storage_details["root_path"]) / relative
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(rng.randbytes(rng.randint(low, high)))
            files.append(filing.RawFile(path=relative, module=module))
        result.append(
            filing.Observation(
                location=source.key,
                instrument=instrument,
                program="demo_program",
                obs_unit=obs_unit,
                start_time=begin,
                end_time=begin + timedelta(minutes=25),
                files=tuple(files),
            )
        )
    return result


def s3_connections(s3: LocalS3, demo: DemoTopology) -> None:
    """Airflow connections for the archives' credentials (what a deployment keeps in a secrets backend)."""
    for archive in demo.active(LocationType.LONG_TERM_ARCHIVE):
        os.environ[f"AIRFLOW_CONN_{archive.storage_details['conn_id'].upper()}"] = json.dumps(
            {"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
             "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}
        )  # fmt: skip


def transfers_waiting(db: OpsDb) -> int:
    """DataTransfers not yet sent (PENDING, SCHEDULED or IN_PROGRESS)."""
    return sum(
        row.items or 0
        for row in db.fetch_all("pipeline_state_counts")
        if row.stage == "data_transfer" and row.status in ("PENDING", "SCHEDULED", "IN_PROGRESS")
    )


def run_dags(ops_db_url: str, demo: DemoTopology) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db as airflow_db

    os.environ["AIRFLOW_CONN_CCAT_OPS_DB"] = ops_db_url
    airflow_db.initdb()
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    if dagbag.import_errors:
        raise SystemExit(f"DAG import errors: {dagbag.import_errors}")

    def run(dag_id: str, conf: dict | None = None, label: str = "") -> None:
        result = dagbag.get_dag(dag_id).test(run_conf=conf or {})
        print(f"    {dag_id}{label}: {result.state}", flush=True)
        if result.state != "success":
            raise SystemExit(f"{dag_id} did not succeed; see the log above")

    run("ccat_topology", {"topology_file": str(DEMO_TOPOLOGY)})
    run("ccat_packaging")
    run("ccat_bundling")
    # Each run sends every leg that can go; a leg waiting for another to arrive goes in the next.
    with OpsDb.connect(ops_db_url) as db:
        waiting = None
        for _ in range(MAX_TRANSFER_RUNS):
            run("ccat_transfer")
            before, waiting = waiting, transfers_waiting(db)
            if waiting == 0:
                break
            if before is not None and waiting >= before:
                raise SystemExit(f"ccat_transfer sent nothing of the {waiting} transfer(s) waiting; see the log above")
        else:
            raise SystemExit(f"{waiting} transfer(s) still waiting after {MAX_TRANSFER_RUNS} ccat_transfer runs")
        observation = db.fetch_value("first_executed_obs_unit")
    for dag_id in ("ccat_unpacking", "ccat_archive", "ccat_deletion", "ccat_monitoring"):
        run(dag_id)
    processing = demo.active(LocationType.PROCESSING)
    if not processing:
        print("    (no active PROCESSING location in the topology: no staging job)")
        return
    conf = {"observations": [observation], "location": processing[0].key, "requested_by": "demo", "retention": "14d"}
    run("ccat_staging", conf, label=f" (observation {observation} -> {processing[0].key})")


def summary(db: OpsDb, demo: DemoTopology) -> None:
    print(status.report(db))  # what `ccat status` prints
    print("\ncopies by location type and state:")
    for row in db.fetch_all("physical_copy_counts"):
        print(f"  {row.location_type:<18} {row.status:<12} {row.copies:>5}")
    files = db.fetch_one("summary_files")
    print(
        f"\nfiled raw data: {files.files} files, {format_size(files.bytes or 0)}, {files.unpackaged} not yet packaged"
    )
    print("\nCelery queues (one worker per site serves its own):")
    sites = [site.short_name for site in demo.loaded.sites if any(loc.active for loc in site.locations)]
    width = max(len(site) for site in sites)
    for site in sites:
        found = queues.discover(db, site=site)
        print(f"  {site:<{width}} {len(found):>2} queues, e.g. {found[0].name}")


def prepare_ops_db(db: OpsDb, demo: DemoTopology) -> None:
    """Migrate ops-db, apply the adapted topology, create its roots and file the observations (idempotent)."""
    step("migrating ops-db")
    applied = migrations.upgrade(db)
    print(f"    {len(applied)} migration(s) applied" if applied else "    up to date")

    step(f"applying {shown(DEMO_TOPOLOGY)} (storage under {shown(DATA_ROOT)}, archives on {S3_ENDPOINT})")
    report = topology.apply(db, demo.loaded)
    topology.create_roots(demo.loaded)
    print(f"    {len(report.changes)} change(s)")

    step("filing synthetic observations (real files on disk)")
    if db.fetch_one("summary_files").files:
        # A re-run: the first run filed them (and deletion may since have cleaned the source).
        print("    already filed by an earlier run; nothing new to file")
    else:
        for observation in write_observations(demo):
            result = filing.file_observation(db, observation)
            print(
                f"    {observation.location}: {observation.instrument} {observation.obs_unit}, "
                f"{result.new_files} files filed"
            )


def prepare() -> DemoTopology:
    """Check and adapt the topology (refusing in one line, exit 1, with nothing written), then write it."""
    try:
        demo = plan()
    except DemoRefusedError as error:
        print(f"demo: cannot run on {shown(TOPOLOGY_FILE)}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    step(f"topology {shown(TOPOLOGY_FILE)}, adapted to this machine in {shown(DEMO_TOPOLOGY)}")
    STATE.mkdir(parents=True, exist_ok=True)
    DEMO_TOPOLOGY.write_text(demo.text)
    loaded = demo.loaded
    print(f"    {len(loaded.sites)} sites, {len(loaded.locations)} locations, {len(loaded.routes)} routes")
    return demo


def main() -> int:
    demo = prepare()
    step(f"starting PostgreSQL on 127.0.0.1:{PORT} (data in {shown(STATE / 'postgres')})")
    ops_db_url, _ = start_database()
    print(f"    ops-db: {ops_db_url}")
    with OpsDb.connect(ops_db_url) as db:
        prepare_ops_db(db, demo)

        step(f"starting SeaweedFS S3 on 127.0.0.1:{S3_PORT} (objects in {shown(STATE / 's3')})")
        s3 = LocalS3(STATE / "s3", s3_port=S3_PORT)
        s3.start()
        s3_connections(s3, demo)
        try:
            step("running the pipeline DAGs through Airflow")
            run_dags(ops_db_url, demo)
        finally:
            s3.stop()

        step("ops-db summary")
        summary(db, demo)
    print(f"\nDone. ops-db stays up at {ops_db_url} (stop: .venv/bin/ccat devdb stop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
