"""How fast ops-db finds work once years of history pile up.

Every pipeline stage polls ops-db with a work-finding query (the ``find_*`` and
``claim_*`` files in ``include/sql/queries/``). Those queries must stay fast however
large the archive grows, which is what the schema's partial indexes are for. This
benchmark checks that at production scale:

1. starts a private PostgreSQL (``ccat_dev.postgres.LocalPostgres``) in a temporary
   directory, creates a database, applies the migrations and the example topology
   (``include/topology/ccat.yaml``);
2. fills it with a realistic, mostly finished history, by server-side SQL in
   ``bench/opsdb_scale_fill.sql``. By default: 10,000,000 raw_data_file rows, 20,000 of
   them not in a package yet; 1,000,000 raw_data_package rows, 99.7% COMPLETED and
   almost all archived, 2,500 PENDING / SCHEDULED / IN_PROGRESS (50 of them stuck for
   hours), the newest 3,000 completed ones not bundled yet; 10,000 bundles
   (data_transfer_package), all but a few dozen routed, transferred (two legs each in
   data_transfer) and unpacked; 100,000 executed obs units; ~1,000,000
   long_term_archive_transfer rows; ~2,000,000 physical_copy rows (at ccat/buffer
   PRESENT for the newest 20,000 packages and DELETED before that, and one PRESENT copy
   at a long-term archive per archived package). Then VACUUM ANALYZE;
3. times every ``find_*``/``claim_*`` query through ``OpsDb.fetch_all``: one warm-up run,
   then ``--runs`` timed runs (default 7), each in a transaction that is rolled back so
   that claims see the same data every time. It prints the median and the maximum
   (client-side wall time, rows fetched into Python included), PASS/FAIL against the
   goal of a 50 ms median, and what the ``EXPLAIN (ANALYZE, BUFFERS)`` plan scans,
   flagging any sequential scan of a table with 100,000 rows or more.

Every work-finding query needs an entry in ``QUERY_PARAMS`` below; the benchmark refuses
to run (before starting anything) if one is missing. The exit status is 1 if any
query's median misses the goal.

Run it as root or as a user that may run PostgreSQL. The full scale takes about four
minutes on two cores (the 10 million files are most of it) and ~15 GB of disk for the
data and WAL, all removed at the end::

    .venv/bin/python bench/opsdb_scale.py                                  # full scale
    .venv/bin/python bench/opsdb_scale.py --files 100000 --packages 10000  # quick check
    .venv/bin/python bench/opsdb_scale.py --observations 1000000           # 10x the observations
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# This folder holds packaging.py, which would shadow the `packaging` library: run from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from bench import machine
from psycopg import sql

from ccat_dev.postgres import FAST_TEST_SETTINGS, LocalPostgres
from ccat_dev.processes import free_port
from ccat_operators import migrations, topology
from ccat_operators.opsdb import OpsDb, compose_query, load_query
from ccat_operators.paths import include_dir, sql_dir

GOAL_MS = 50.0
DATABASE = "ccat_bench"
FILL_SQL = Path(__file__).with_name("opsdb_scale_fill.sql")
WORK_QUERY_PREFIXES = ("find_", "claim_", "count_")
#: A sequential scan of a table at least this large is flagged in the report.
BIG_TABLE_ROWS = 100_000
#: Durability off (as in the tests), room for the bulk fill, and no autovacuum: the fill
#: ends with an explicit VACUUM ANALYZE, and nothing runs in the background while timing.
SERVER_SETTINGS = (
    *FAST_TEST_SETTINGS,
    "shared_buffers=2GB",
    "maintenance_work_mem=512MB",
    "max_wal_size=16GB",
    "checkpoint_timeout=1h",
    "autovacuum=off",
)
HISTORY_SECONDS = 5 * 365.25 * 86400


@dataclass(frozen=True)
class Location:
    """A data location by its ``site/location`` key; becomes its id when the run starts."""

    site: str
    name: str


@dataclass(frozen=True)
class Site:
    """A site by its short name; becomes its id when the run starts."""

    short_name: str


SOURCE = Location("ccat", "telescope_computer")
SOURCE_BUFFER = Location("ccat", "buffer")
ARCHIVE_BUFFER = Location("cologne", "buffer")
ARCHIVE = Location("cologne", "lta")

#: Realistic parameters of every work-finding query. Every limit is 1000, one generous page
#: of work, so that timings compare across queries; the comments give the batch the
#: pipeline code asks for today.
QUERY_PARAMS: dict[str, dict[str, object]] = {
    # Filing over HTTP: the open requests of a SOURCE location.
    "claim_filing_request": {"location_id": SOURCE},
    # Packaging: files at the SOURCE location, and the packages made of them.
    "claim_unpackaged_files": {"location_id": SOURCE, "limit": 1000},  # packaging.PLAN_BATCH = 50,000
    "claim_pending_raw_data_packages": {
        "location_id": SOURCE,
        "exclude": [],
        "limit": 1000,
    },  # packaging.CLAIM_BATCH = 20
    "find_unfinished_raw_data_packages": {"location_id": SOURCE, "limit": 1000},  # reclaim_abandoned: 10,000
    # Bundling: packages at the SOURCE site's BUFFER, and the bundles made of them.
    "claim_unbundled_packages": {"location_id": SOURCE_BUFFER, "limit": 1000},  # bundling.PLAN_BATCH = 100,000
    "claim_pending_data_transfer_packages": {
        "location_id": SOURCE_BUFFER,
        "exclude": [],
        "limit": 1000,
    },  # bundling.CLAIM_BATCH = 5
    "find_unfinished_data_transfer_packages": {"location_id": SOURCE_BUFFER, "limit": 1000},  # 10,000
    # Routing, transfer and unpacking of bundles.
    "claim_unrouted_bundles": {"location_id": SOURCE_BUFFER, "limit": 1000},  # routing.ROUTE_BATCH = 500
    "find_transfers_to_send": {  # the transfer operator's limit: 64
        "location_id": SOURCE_BUFFER,
        "destination_site_id": Site("cologne"),
        "limit": 1000,
    },
    "claim_unpackable_transfers": {"location_id": ARCHIVE_BUFFER, "limit": 1000},  # unpacking.CLAIM_BATCH = 100
    # Archive and deletion.
    "find_archive_transfers": {"location_id": ARCHIVE, "limit": 1000},  # archive: 10,000
    "find_deletable_package_copies": {  # deletion.BATCH = 1000
        "location_id": SOURCE_BUFFER,
        "statuses": ["PRESENT", "STAGED"],
        "copy_id": None,
        "under_pressure": True,
        "limit": 1000,
    },
    "find_deletable_bundle_copies": {
        "location_id": SOURCE_BUFFER,
        "statuses": ["PRESENT", "STAGED"],
        "copy_id": None,
        "limit": 1000,
    },
    "find_scheduled_deletions": {"location_id": SOURCE_BUFFER, "limit": 1000},
    # Monitoring: the stuck-work sweep (a template over the status tables; the biggest here).
    "find_stuck_in_progress": {
        "identifiers": {"table": "raw_data_package", "column": "status", "changed_at": "status_changed_at"},
        "older_than": "1 hour",
        "limit": 1000,
    },
    # Announcements: what packaging (the largest table) finished in the last hour.
    "count_stage_output_since": {"stage": "packaging", "since": datetime.now(UTC) - timedelta(hours=1)},
}

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_SCAN = re.compile(
    r"(?P<kind>(?:Parallel )?Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan)"
    r"(?: Backward)?(?: using (?P<index>\S+))? on (?P<relation>\S+)"
)
_STEP = re.compile(r"^-- step: (?P<name>.+)$", re.MULTILINE)


class BenchmarkSetupError(RuntimeError):
    """The benchmark cannot run as configured (a query without parameters, bad sizes)."""


@dataclass(frozen=True)
class Scale:
    """How much history to fill, derived from the files, packages and observations asked for.

    The fields are the columns of the ``bench_scale`` table read by the fill SQL.
    """

    files: int
    packages: int
    packaged_files: int
    unpackaged_files: int
    eous_packaged: int
    eous_unpackaged: int
    obs_units: int
    programs: int
    in_progress: int
    stuck: int
    scheduled: int
    pending: int
    open_packages: int
    failed_every: int
    unbundled: int
    bundled_until: int
    dtps: int
    dtp_stage: int
    dtps_done: int
    buffer_present: int
    deletion_scheduled: int
    step_seconds: float

    @classmethod
    def of(cls, files: int, packages: int, observations: int | None = None) -> Scale:
        """Derive the proportions of the default scale (10M files, 1M packages) for any size.

        ``observations`` is the number of executed obs units the packages come from
        (default: one per ten packages); a few more hold the unpackaged files.
        """
        if packages < 1000:
            raise BenchmarkSetupError(f"--packages must be at least 1000, not {packages}")
        if observations is not None and observations < 1:
            raise BenchmarkSetupError(f"--observations must be at least 1, not {observations}")
        unpackaged_files = max(1, files // 500)
        packaged_files = files - unpackaged_files
        if packaged_files < packages:
            raise BenchmarkSetupError(f"--files ({files}) must leave every one of the {packages} packages a file")
        eous_packaged = observations or max(1, packages // 10)
        obs_units = max(1, min(2000, eous_packaged // 50))
        in_progress, scheduled, pending = (
            max(2, packages * 3 // 4000),
            max(1, packages // 2000),
            max(1, packages // 800),
        )
        open_packages = in_progress + scheduled + pending
        unbundled = max(1, packages * 3 // 1000)
        dtps = max(1, packages // 100)
        dtp_stage = max(1, dtps // 2500)
        return cls(
            files=files,
            packages=packages,
            packaged_files=packaged_files,
            unpackaged_files=unpackaged_files,
            eous_packaged=eous_packaged,
            eous_unpackaged=max(1, unpackaged_files // 100),
            obs_units=obs_units,
            programs=max(1, min(20, obs_units // 10)),
            in_progress=in_progress,
            stuck=max(1, packages // 20000),
            scheduled=scheduled,
            pending=pending,
            open_packages=open_packages,
            failed_every=10000,
            unbundled=unbundled,
            bundled_until=packages - open_packages - unbundled,
            dtps=dtps,
            dtp_stage=dtp_stage,
            dtps_done=dtps - 7 * dtp_stage,
            buffer_present=max(1, packages // 50),
            deletion_scheduled=max(1, packages // 2000),
            step_seconds=HISTORY_SECONDS / packages,
        )


@dataclass
class Result:
    """Timings and plan of one work-finding query."""

    name: str
    runs_ms: list[float]
    rows: int
    plan: list[str]
    scans: list[str]
    big_seq_scans: list[str]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def max_ms(self) -> float:
        return max(self.runs_ms)

    @property
    def passed(self) -> bool:
        return self.median_ms <= GOAL_MS


# Queries ------------------------------------------------------------------------------


def work_queries() -> list[str]:
    """Return the names of every ``find_*``/``claim_*`` query file, sorted."""
    directory = sql_dir() / "queries"
    return sorted(p.stem for p in directory.glob("*.sql") if p.stem.startswith(WORK_QUERY_PREFIXES))


def check_query_params(names: list[str]) -> None:
    """Fail loudly if a work-finding query has no parameters here, or lacks one it uses."""
    problems = []
    for name in names:
        if name not in QUERY_PARAMS:
            problems.append(f"{name}: no entry in QUERY_PARAMS (add realistic parameters for it)")
            continue
        missing = sorted(set(_PLACEHOLDER.findall(load_query(name))) - set(QUERY_PARAMS[name]))
        if missing:
            problems.append(f"{name}: QUERY_PARAMS lacks {', '.join(missing)}")
    for name in sorted(set(QUERY_PARAMS) - set(names)):
        print(f"warning: QUERY_PARAMS has an entry for {name}, which is no work-finding query", file=sys.stderr)
    if problems:
        raise BenchmarkSetupError(
            f"work-finding queries without benchmark parameters, in {Path(__file__).name}:\n  " + "\n  ".join(problems)
        )


def resolve_params(db: OpsDb, params: Mapping[str, object]) -> dict[str, Any]:
    """Replace every ``Location`` and ``Site`` by its id in ops-db."""
    resolved: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Location):
            row = db.fetch_one("data_location_by_key", site=value.site, name=value.name)
            if row is None:
                raise BenchmarkSetupError(f"no location {value.site}/{value.name} in the applied topology")
            value = row.id
        elif isinstance(value, Site):
            site_id = db.fetch_value("site_id", short_name=value.short_name)
            if site_id is None:
                raise BenchmarkSetupError(f"no site {value.short_name} in the applied topology")
            value = site_id
        resolved[key] = value
    return resolved


# Server and fill ------------------------------------------------------------------------


@contextmanager
def private_server() -> Iterator[LocalPostgres]:
    """Run a throw-away PostgreSQL; stop it and delete its directory afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="ccat-bench-pg-"))
    server = LocalPostgres(directory, free_port(), settings=SERVER_SETTINGS)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def fill_steps() -> list[tuple[str, str]]:
    """Return the ``(name, sql)`` steps of the fill file, in order."""
    text = FILL_SQL.read_text()
    marks = list(_STEP.finditer(text))
    if not marks:
        raise BenchmarkSetupError(f"{FILL_SQL}: no '-- step:' lines")
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return [(m["name"].strip(), text[m.end() : end]) for m, end in zip(marks, ends, strict=True)]


def fill(url: str, scale: Scale) -> None:
    """Fill the database with the history described by ``scale``, then VACUUM ANALYZE it."""
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        # bigint throughout: products such as file number x package count exceed int4.
        columns = sql.SQL(", ").join(
            sql.SQL("{}::{} AS {}").format(
                sql.Literal(value),
                sql.SQL("double precision" if isinstance(value, float) else "bigint"),
                sql.Identifier(name),
            )
            for name, value in asdict(scale).items()
        )
        conn.execute(sql.SQL("CREATE TEMP TABLE bench_scale AS SELECT now() AS t0, {}").format(columns))
        for name, text in fill_steps():
            step_started = time.perf_counter()
            conn.execute(text.encode())  # trusted multi-statement SQL, no parameters
            print(f"  {name:<70} {time.perf_counter() - step_started:7.1f} s", flush=True)
    print(f"fill: {time.perf_counter() - started:.1f} s", flush=True)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    print(f"vacuum analyze: {time.perf_counter() - started:.1f} s", flush=True)


def print_table_sizes(db: OpsDb) -> None:
    """Print the row count and on-disk size (with indexes) of every non-empty table."""
    rows = db.fetch_all("table_sizes")
    for row in rows:
        print(f"  {row.relname:<28} {row.estimated_rows:>12,} rows  {row.total_size:>10}")


def big_tables(db: OpsDb) -> set[str]:
    """Return the tables with at least BIG_TABLE_ROWS rows (by the planner's statistics)."""
    return set(db.fetch_column("big_tables", rows=BIG_TABLE_ROWS))


# Timing ----------------------------------------------------------------------------------


def composed(name: str, params: Mapping[str, Any]) -> tuple[sql.Composable, dict[str, Any]]:
    """The query and its bind parameters; an ``identifiers`` parameter fills a template's ``{names}``."""
    values = dict(params)
    identifiers = values.pop("identifiers", None)
    return (compose_query(name, **identifiers) if identifiers else sql.SQL(load_query(name))), values


def timed_run(db: OpsDb, name: str, params: Mapping[str, Any]) -> tuple[float, int]:
    """Run the query once in a rolled-back transaction; return (milliseconds, rows)."""
    query, values = composed(name, params)
    with db.conn.transaction(force_rollback=True):
        started = time.perf_counter()
        rows = db.conn.execute(query, values).fetchall()
        elapsed = time.perf_counter() - started
    return elapsed * 1000, len(rows)


def explain(db: OpsDb, name: str, params: Mapping[str, Any]) -> list[str]:
    """Return the EXPLAIN (ANALYZE, BUFFERS) lines of one rolled-back run of the query."""
    query, values = composed(name, params)
    with db.conn.transaction(force_rollback=True):
        return [row["QUERY PLAN"] for row in db.conn.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS)\n") + query, values)]


def describe_scans(plan: list[str], big: set[str]) -> tuple[list[str], list[str]]:
    """Return (every scan in the plan, the sequential scans of big tables)."""
    scans: list[str] = []
    big_seq: list[str] = []
    for line in plan:
        match = _SCAN.search(line)
        if match is None:
            continue
        kind, index, relation = match["kind"], match["index"], match["relation"]
        if kind == "Bitmap Index Scan":
            index, relation = relation, None
        label = f"{kind} {index} on {relation}" if index and relation else f"{kind} {index or relation}"
        if label not in scans:
            scans.append(label)
        if kind.endswith("Seq Scan") and relation in big and relation not in big_seq:
            big_seq.append(relation)
    return scans, big_seq


def measure(db: OpsDb, name: str, params: Mapping[str, Any], runs: int, big: set[str]) -> Result:
    """Warm up once, time ``runs`` runs, then explain one more."""
    timed_run(db, name, params)
    timings = [timed_run(db, name, params) for _ in range(runs)]
    plan = explain(db, name, params)
    scans, big_seq = describe_scans(plan, big)
    return Result(name, [ms for ms, _ in timings], timings[-1][1], plan, scans, big_seq)


def report(results: list[Result], show_all_plans: bool) -> None:
    """Print one line per query, then the plans worth reading."""
    width = max(len(r.name) for r in results)
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        flag = f"  SEQ SCAN on {', '.join(r.big_seq_scans)}!" if r.big_seq_scans else ""
        print(
            f"{r.name:<{width}}  median {r.median_ms:8.2f} ms  max {r.max_ms:8.2f} ms  "
            f"rows {r.rows:>5}  {verdict}  [{'; '.join(r.scans)}]{flag}"
        )
    print("\nplans (first line and execution time; the whole plan if FAIL, SEQ SCAN or --plans):")
    for r in results:
        print(f"-- {r.name}")
        if show_all_plans or not r.passed or r.big_seq_scans:
            lines = r.plan
        else:
            lines = [r.plan[0], *(line for line in r.plan if line.startswith("Execution Time"))]
        for line in lines:
            print(f"   {line}")


# Main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=10_000_000, help="raw_data_file rows (default: %(default)s)")
    parser.add_argument("--packages", type=int, default=1_000_000, help="raw_data_package rows (default: %(default)s)")
    parser.add_argument(
        "--observations",
        type=int,
        default=None,
        help="executed_obs_unit rows the packages come from (default: packages / 10)",
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query (default: %(default)s)")
    parser.add_argument("--plans", action="store_true", help="print every query's whole plan")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(machine.describe())
    names = work_queries()
    if not names:
        raise BenchmarkSetupError(f"no {'/'.join(WORK_QUERY_PREFIXES)}* queries in {sql_dir() / 'queries'}")
    check_query_params(names)
    scale = Scale.of(args.files, args.packages, args.observations)
    print(
        f"ops-db scale benchmark: {scale.files:,} files, {scale.packages:,} packages; "
        f"{len(names)} work-finding queries; goal: median <= {GOAL_MS:g} ms",
        flush=True,
    )

    results: list[Result] = []
    data_root = Path(tempfile.mkdtemp(prefix="ccat-bench-data-"))
    os.environ["CCAT_DATA_ROOT"] = str(data_root)
    try:
        with private_server() as server:
            url = server.create_database(DATABASE)
            with OpsDb.connect(url) as db:
                migrations.upgrade(db)
                topology.apply(db, topology.load(include_dir() / "topology" / "ccat.yaml"))
            print(f"PostgreSQL on port {server.port}, settings: {' '.join(SERVER_SETTINGS)}", flush=True)
            fill(url, scale)
            with OpsDb.connect(url) as db:
                print_table_sizes(db)
                big = big_tables(db)
                for name in names:
                    results.append(measure(db, name, resolve_params(db, QUERY_PARAMS[name]), args.runs, big))
                print(f"\ntimings over {args.runs} runs after one warm-up (client wall time, in ms):")
                report(results, args.plans)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)

    failed = [r.name for r in results if not r.passed]
    flagged = [r.name for r in results if r.big_seq_scans]
    slowest = max(results, key=lambda r: r.median_ms)
    print(
        f"\nsummary: {len(results) - len(failed)}/{len(results)} work-finding queries PASS "
        f"(median <= {GOAL_MS:g} ms) at {scale.files:,} files / {scale.packages:,} packages; "
        f"slowest {slowest.name} {slowest.median_ms:.2f} ms"
        + (f"; FAIL: {', '.join(failed)}" if failed else "")
        + (f"; sequential scans of big tables in: {', '.join(flagged)}" if flagged else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchmarkSetupError as error:
        sys.exit(f"error: {error}")
