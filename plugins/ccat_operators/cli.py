"""The ``ccat`` command: ops-db migrations, topology, queues, filing, a dev database (``ccat_dev``).

Every subcommand that needs ops-db takes ``--db URL``, defaulting to the environment
(``CCAT_OPS_DB_URL``, else ``AIRFLOW_CONN_CCAT_OPS_DB``); the URL must be
``postgresql://`` (or ``postgres://``) and is checked before connecting. A server that
does not answer is given up on after ``CCAT_DB_CONNECT_TIMEOUT`` seconds (default 10).

An error that is the user's input or environment (:data:`USER_ERRORS`) prints one line,
``ccat: error: <message>``, to stderr and exits 1; argparse's usage errors exit 2.
Nothing half-done is left behind: each command is a single transaction.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import psycopg

from ccat_operators import deploy, filing, migrations, queues, roles, states, status, topology
from ccat_operators.opsdb import OpsDb, OpsDbConfigError, check_url
from ccat_operators.paths import default_topology_file
from ccat_operators.progress import byte_progress
from ccat_operators.routing import transfer_pool, transfer_site_pairs
from ccat_operators.states import Status


def _db(args: argparse.Namespace) -> OpsDb:
    return OpsDb.connect(check_url(args.db, source="--db") if args.db else None)


def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    with _db(args) as db:
        applied = migrations.upgrade(db)
    print("\n".join(f"applied {name}" for name in applied) if applied else "ops-db is up to date")


def cmd_db_status(args: argparse.Namespace) -> None:
    with _db(args) as db:
        for name, applied in migrations.status(db):
            print(f"{'applied' if applied else 'pending'}  {name}")


def cmd_topology_check(args: argparse.Namespace) -> None:
    loaded = topology.load(args.file)
    print(f"{args.file}: {len(loaded.sites)} sites, {len(loaded.locations)} locations, {len(loaded.routes)} routes")


def cmd_topology_apply(args: argparse.Namespace) -> None:
    """Apply a topology file; the active DISK roots missing here are warned about, created or refused.

    apply usually runs centrally (docker-compose's init job), where no site's storage is
    mounted, so a missing root is only a warning by default. ``--create-dirs`` creates them
    here (where the storage is mounted, or on a one-machine setup); ``--require-dirs``
    refuses before ops-db is touched.
    """
    loaded = topology.load(args.file)
    missing = topology.missing_roots(loaded)
    if missing and args.require_dirs:
        roots = "; ".join(f"{location.key}: {root}" for location, root in missing)
        raise FileNotFoundError(
            f"ops-db not changed: storage roots that are not directories here: {roots} (--create-dirs creates them)"
        )
    with _db(args) as db:
        created = topology.create_roots(loaded) if args.create_dirs else []
        report = topology.apply(db, loaded)
    for root in created:
        print(f"created directory {root}")
    print("\n".join(report.changes) if report.changes else "no change")
    if not args.create_dirs:
        for location, root in missing:
            warning = (
                f"{location.key}: its root {root} is not a directory on this host (fine if it is mounted only "
                "where the location's worker runs; --create-dirs creates it here)"
            )
            print(f"ccat: warning: {warning}", file=sys.stderr)


def cmd_topology_show(args: argparse.Namespace) -> None:
    with _db(args) as db:
        sys.stdout.write(topology.dumps(db))


def cmd_queues(args: argparse.Namespace) -> None:
    with _db(args) as db:
        found = queues.discover(db, site=args.site, location=args.location)
    if args.worker_command:
        hostname = args.hostname or "_".join(part for part in (args.site, args.location) if part) or "ccat"
        print(shlex.join(queues.worker_command(found, hostname)))
        return
    for queue in found:
        print(queue.name)


def cmd_archive_pending_intervention(args: argparse.Namespace) -> None:
    with _db(args) as db:
        rows = db.fetch_all("archive_transfers_needing_intervention")
    for row in rows:
        print(f"{row.id}\t{row.package}\t{row.attempts} attempts\t{row.failure_reason}")
    if not rows:
        print("no archive transfer needs intervention")


def cmd_archive_clear(args: argparse.Namespace) -> None:
    """The archive case of ``ccat retry``, for one transfer or every one needing intervention."""
    cleared, busy = [], []
    with _db(args) as db:
        ids = [args.id] if args.id is not None else db.fetch_column("archive_transfers_needing_intervention")
        for transfer_id in ids:
            outcome = states.retry(db, states.ARCHIVE, transfer_id)
            if outcome.busy:
                busy.append(transfer_id)
            elif outcome.retried:
                cleared.append(transfer_id)
    if args.id is not None and not cleared and not busy:
        raise LookupError(f"archive transfer {args.id} does not need intervention")
    for transfer_id in busy:
        print(f"archive transfer {transfer_id} is being tried by a worker right now: left alone")
    print(f"cleared {len(cleared)} archive transfer(s): they will be tried again")


class RetryRefusedError(RuntimeError):
    """``ccat retry`` left an item as it was: it is not FAILED, or a live worker holds it."""


def cmd_retry(args: argparse.Namespace) -> None:
    stage = status.STAGES[args.kind]
    item = f"{stage.noun} {args.id}"
    with _db(args) as db:
        outcome = states.retry(db, stage.column, args.id)
        unpack = states.status_of(db, states.UNPACK, args.id) if stage.column is states.TRANSFER else None
    if outcome.found is None:
        raise LookupError(f"no {item}")
    if outcome.busy:
        raise RetryRefusedError(f"{item} is {outcome.found} and a live worker holds it right now: left alone")
    if not outcome.retried:
        hint = f" (its unpack is FAILED: ccat retry unpack {args.id})" if unpack == Status.FAILED else ""
        raise RetryRefusedError(f"{item} is {outcome.found}, not FAILED: nothing to retry{hint}")
    print(f"{item} is PENDING again: {stage.follows}")


def _retry_epilog() -> str:
    """What to fix first for each kind of ``ccat retry``, and what follows it."""
    lines = [
        "The item's lease is taken first: one a live worker holds (a try still running) is left alone, and one",
        "that is not FAILED is refused; both exit 1. Its failure reason is cleared, and what made its stage give",
        "up starts again (an archive transfer's 3 tries, an unpack's 3 fresh copies of a damaged bundle). An",
        "unpack is named by its transfer's id: a transfer that arrived but whose unpack FAILED is retried with",
        "`ccat retry unpack ID`. `ccat status` lists every FAILED item with its reason and command.",
        "",
        "what to fix first, then what follows:",
    ]
    for stage in status.STAGES.values():
        lines.append(f"  {stage.kind}")
        lines.extend(textwrap.wrap(stage.fix + ".", 96, initial_indent="    fix: ", subsequent_indent="      "))
        lines.extend(textwrap.wrap(stage.follows + ".", 96, initial_indent="    then: ", subsequent_indent="      "))
    return "\n".join(lines)


def cmd_audit(args: argparse.Namespace) -> None:
    from ccat_operators import audit

    with _db(args) as db:
        rows = db.fetch_all("active_locations", site=None, location=None)
        keys = [f"{row.site}/{row.name}" for row in rows]
        if args.location is not None and args.location not in keys:
            raise LookupError(f"{args.location!r} is not an active location (known: {', '.join(keys)})")
        findings = 0
        for key in keys if args.location is None else [args.location]:
            site, _, name = key.partition("/")
            result = audit.audit_location(db, db.fetch_one("data_location_by_key", site=site, name=name),
                                          repair=not args.no_repair)  # fmt: skip
            findings += len(result.lost) + len(result.corrupt) + len(result.dark)
            print("\n".join(result.lines()))
    print(f"{findings} finding(s); `ccat status` lists every open one")


def cmd_status(args: argparse.Namespace) -> None:
    from ccat_operators import status

    with _db(args) as db:
        print(status.report(db, observations=args.observations))


def cmd_pools(args: argparse.Namespace) -> None:
    loaded = topology.load(args.topology)
    print(json.dumps(transfer_pools(loaded, args.slots), indent=2))


def cmd_deploy_compose(args: argparse.Namespace) -> None:
    """Print (or ``--output``: write, atomically) the CeleryExecutor compose file of a topology file."""
    output = Path(args.output) if args.output else None
    text = deploy.compose_file(args.topology, project_dir=output.resolve().parent if output else Path.cwd())
    if output is None:
        sys.stdout.write(text)
        return
    partial = output.with_name(f".{output.name}.part")
    partial.write_text(text)
    partial.replace(output)
    print(f"wrote {output}")


def cmd_deploy_workers(args: argparse.Namespace) -> None:
    sys.stdout.write(deploy.worker_commands(topology.load(args.topology), site=args.site))


def cmd_file(args: argparse.Namespace) -> None:
    observations = _load_manifests(args.manifests)
    results = []
    with _db(args) as db, db.transaction():
        for manifest, observation in observations:
            results.append((manifest, _file_manifest(db, manifest, observation, args.progress)))
    for manifest, result in results:
        print(
            f"{manifest}: executed_obs_unit {result.executed_obs_unit_id}: "
            f"{result.new_files} new file(s), {result.already_filed} already filed"
        )


def _load_manifests(manifests: Sequence[str]) -> list[tuple[str, filing.Observation]]:
    """Parse and check every manifest before anything is hashed; one FilingError lists every problem."""
    loaded, problems = [], []
    for manifest in manifests:
        try:
            loaded.append((manifest, filing.load_manifest(Path(manifest))))
        except filing.FilingError as error:
            problems.extend(error.problems)
    if problems:
        raise filing.FilingError(problems)
    return loaded


def _file_manifest(
    db: OpsDb, manifest: str, observation: filing.Observation, progress: bool | None
) -> filing.FilingResult:
    """File one manifest's observation; its problems are prefixed with the manifest's name."""
    try:
        total = filing.bytes_on_disk(db, observation)
        with byte_progress(f"hashing {Path(manifest).name}", total, shown=progress) as advance:
            return filing.file_observation(db, observation, progress=advance)
    except filing.FilingError as error:
        raise filing.FilingError([f"{manifest}: {problem}" for problem in error.problems]) from error


def cmd_auth_sync(args: argparse.Namespace) -> None:
    specs = roles.load(args.roles)
    with roles.security_manager() as sm:
        changes = roles.sync(sm, specs)
        if args.dev_users:
            for username, role in roles.DEV_USERS.items():
                if roles.ensure_user(sm, username, role, password=username):
                    changes.append(f"created user {username} (role {role}, password {username})")
    print("\n".join(changes) if changes else "no change")


class DevelopmentCommandError(RuntimeError):
    """A development command (``ccat devdb``) cannot run: no development package here, or a bad setting."""


def _devdb(args: argparse.Namespace):
    """The private PostgreSQL of ``ccat devdb``: :class:`ccat_dev.postgres.LocalPostgres`, imported only here.

    By default the demo's server (:func:`ccat_dev.postgres.demo_server`: ``$CCAT_STATE_DIR``
    and ``$CCAT_DEMO_PORT``, as ``make demo`` and ``make up`` use them); ``--dir`` and
    ``--port`` override either. ``ccat_dev`` is the development package (``dev/``),
    installed in a checkout by ``make install`` and absent from workers and the image; the
    runtime package never needs it.
    """
    try:
        from ccat_dev.postgres import LocalPostgres, demo_port, demo_state_dir
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "ccat_dev":
            raise  # ccat_dev is there but something it needs is not: a real error
        raise DevelopmentCommandError(
            f"`ccat devdb {args.devdb_command}` is a development command: it needs the development package "
            "ccat_dev, which is not installed here (in a checkout: `make install`, or `pip install -e dev`)"
        ) from error
    try:
        directory = Path(args.dir).resolve() if args.dir is not None else demo_state_dir() / "postgres"
        return LocalPostgres(directory, args.port if args.port is not None else demo_port())
    except ValueError as error:  # $CCAT_DEMO_PORT is not a port number
        raise DevelopmentCommandError(str(error)) from error


def cmd_devdb_start(args: argparse.Namespace) -> None:
    server = _devdb(args)
    server.start()
    print(server.create_database(args.database))


def cmd_devdb_stop(args: argparse.Namespace) -> None:
    _devdb(args).stop()


def transfer_pools(loaded: topology.Topology, slots: int) -> dict[str, dict]:
    """One Airflow pool per pair of sites a leg can take: the pools of the transfer DAG's send tasks."""
    return {
        transfer_pool(origin, destination): {
            "slots": slots,
            "description": f"parallel transfers from {origin} to {destination}",
            "include_deferred": False,
        }
        for origin, destination in transfer_site_pairs(loaded)
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccat", description="CCAT data transfer: ops-db and pipeline tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(parent, name: str, handler: Callable, help_text: str, db: bool = True) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        if db:
            sub.add_argument("--db", help="ops-db URL (default: $CCAT_OPS_DB_URL or $AIRFLOW_CONN_CCAT_OPS_DB)")
        return sub

    db = commands.add_parser("db", help="ops-db schema migrations").add_subparsers(dest="db_command", required=True)
    add(db, "upgrade", cmd_db_upgrade, "apply pending migrations from include/sql/migrations")
    add(db, "status", cmd_db_status, "list migrations and whether each is applied")

    topo = commands.add_parser("topology", help="sites, locations, routes and retention")
    topo_commands = topo.add_subparsers(dest="topology_command", required=True)
    add(
        topo_commands, "check", cmd_topology_check, "validate a topology file without a database", db=False
    ).add_argument("file")
    apply_parser = add(topo_commands, "apply", cmd_topology_apply, "make ops-db match a topology file (idempotent)")
    apply_parser.add_argument("file")
    roots = apply_parser.add_mutually_exclusive_group()
    roots.add_argument("--create-dirs", action="store_true",
                       help="create the missing DISK roots of active locations here (mode 0755)")  # fmt: skip
    roots.add_argument("--require-dirs", action="store_true",
                       help="refuse, changing nothing, if one is missing here (default: warn and apply)")  # fmt: skip
    add(topo_commands, "show", cmd_topology_show, "print ops-db's topology in the file format")

    queue_parser = add(commands, "queues", cmd_queues, "list Celery queues of active locations")
    queue_parser.add_argument("--site", help="only this site (short name)")
    queue_parser.add_argument("--location", help="only locations with this name")
    queue_parser.add_argument(
        "--worker-command", action="store_true", help="print the `airflow celery worker` command serving these queues"
    )
    queue_parser.add_argument("--hostname", help="Celery worker name (default: site/location)")

    archive_commands = commands.add_parser("archive", help="long-term archive transfers").add_subparsers(
        dest="archive_command", required=True
    )
    add(archive_commands, "needs-intervention", cmd_archive_pending_intervention,
        "list archive transfers that failed 3 times")  # fmt: skip
    clear = add(archive_commands, "clear", cmd_archive_clear,
                "let failed archive transfers be tried again (`ccat retry archive ID` for each)")  # fmt: skip
    clear.add_argument("--id", type=_positive_int, help="only this transfer (default: all needing intervention)")

    retry = add(commands, "retry", cmd_retry, "hand a FAILED item back to its stage: FAILED -> PENDING")
    retry.formatter_class, retry.epilog = argparse.RawDescriptionHelpFormatter, _retry_epilog()
    retry.add_argument("kind", choices=list(status.STAGES), help="the item's stage")
    retry.add_argument("id", type=_positive_int, help="its id, as `ccat status` lists it")

    audit_parser = add(commands, "audit", cmd_audit,
                       "compare what ops-db records at locations with their storage: lost, corrupt, dark data; "
                       "repair what another verified copy allows (run where the storage is mounted)")  # fmt: skip
    audit_parser.add_argument("--location", help="only this site/location (default: every active one)")
    audit_parser.add_argument("--no-repair", action="store_true", help="report and mark, but repair nothing")

    status_parser = add(
        commands, "status", cmd_status, "counts per stage and state, what waits, what needs an operator"
    )
    status_parser.add_argument(
        "--observations", type=_positive_int, default=20, help="unfinished observations to show (default 20)"
    )

    pools_parser = add(
        commands,
        "pools",
        cmd_pools,
        "print the Airflow pools of the transfer legs routing can make (for `airflow pools import`)",
        db=False,
    )
    pools_parser.add_argument("--topology", default=str(default_topology_file()), help="topology file")
    pools_parser.add_argument("--slots", type=_positive_int, default=4, help="parallel transfers per route (default 4)")

    deploy_commands = commands.add_parser("deploy", help="deployment files from a topology file (no database)")
    deploy_commands = deploy_commands.add_subparsers(dest="deploy_command", required=True)
    compose_help = "print the CeleryExecutor docker-compose.yaml of a topology file"
    compose_parser = add(deploy_commands, "compose", cmd_deploy_compose, compose_help, db=False)
    compose_parser.add_argument(
        "--output", "-o", help="write it to this file (whose directory ./dags, ./include... are relative to)"
    )
    workers_help = "print each site's `airflow celery worker` command, from a topology file"
    workers_parser = add(deploy_commands, "workers", cmd_deploy_workers, workers_help, db=False)
    workers_parser.add_argument("--site", help="print only this site's command")
    for sub in (compose_parser, workers_parser):
        sub.add_argument(
            "topology",
            nargs="?",
            default=str(default_topology_file()),
            help="topology file (default: $CCAT_TOPOLOGY, else include/topology/ccat.yaml)",
        )

    file_parser = add(commands, "file", cmd_file, "file observations from YAML/JSON manifests")
    file_parser.add_argument("manifests", nargs="+", metavar="MANIFEST")
    file_parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                             help="show a progress bar on stderr (default: when it is a terminal)")  # fmt: skip

    auth = commands.add_parser("auth", help="Airflow roles and users (FAB auth manager)")
    auth_sync = add(auth.add_subparsers(dest="auth_command", required=True), "sync", cmd_auth_sync,
                    "make Airflow's roles match include/auth/roles.yaml", db=False)  # fmt: skip
    auth_sync.add_argument("--roles", type=Path, help="roles file (default: include/auth/roles.yaml)")
    auth_sync.add_argument("--dev-users", action="store_true",
                           help="also create users admin, operator, scientist (password = name)")  # fmt: skip

    dev = commands.add_parser("devdb", help="development: a private PostgreSQL server for the demo (needs ccat_dev)")
    dev_commands = dev.add_subparsers(dest="devdb_command", required=True)
    for name, handler, help_text in (
        ("start", cmd_devdb_start, "start (initialising if needed) and print the database URL"),
        ("stop", cmd_devdb_stop, "stop the server"),
    ):
        sub = add(dev_commands, name, handler, help_text, db=False)
        sub.add_argument("--dir", help="cluster directory (default: $CCAT_STATE_DIR/postgres, else .ccat/postgres "
                         "in the checkout: the server of `make demo` and `make up`)")  # fmt: skip
        sub.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: $CCAT_DEMO_PORT, else 54329)")
        sub.add_argument("--database", default="ccat_ops_db", help="database to create (default: %(default)s)")
    return parser


#: Errors that are the user's input or environment, reported as one line without a traceback.
USER_ERRORS = (
    DevelopmentCommandError,
    RetryRefusedError,
    filing.FilingError,
    topology.TopologyError,
    roles.RolesError,
    migrations.MigrationError,
    OpsDbConfigError,
    LookupError,
    OSError,
    psycopg.OperationalError,  # unreachable, timed out, no such database, wrong password
    psycopg.errors.UndefinedTable,  # a database that was never migrated
    psycopg.errors.InsufficientPrivilege,
)

#: LookupErrors that are bugs in ccat, not the user's doing: they keep their traceback.
BUGS = (KeyError, IndexError)


def user_message(error: BaseException) -> str:
    """The one-line message of a user error; a list of problems is joined with "; "."""
    if isinstance(error, filing.FilingError):
        text = "filing refused, nothing recorded: " + "; ".join(error.problems)
    elif isinstance(error, topology.TopologyError):
        text = "; ".join(f"{error.source}: {problem}" for problem in error.problems)
    elif isinstance(error, psycopg.errors.UndefinedTable):
        text = f"ops-db: {error.diag.message_primary}: is its schema migrated? run `ccat db upgrade`"
    elif isinstance(error, psycopg.Error):
        text = f"ops-db: {error.diag.message_primary or error}"
    else:
        text = str(error)
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as error:
        if isinstance(error, BUGS):
            raise
        print(f"ccat: error: {user_message(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
