"""Deployment from a topology file: the CeleryExecutor compose file and each site's worker command.

``site_workers`` gives one Celery worker per site: it serves exactly the queues of the
site's active locations (``queues.queues_for_location``, the operation-location matrix),
so it must run where those locations' storage is mounted. Tasks tied to no location
(the stuck-work sweep and health summary, the ``announce_*`` tasks, ``ccat_topology``)
go to queue ``default``, served by one dedicated *central* worker that mounts no site
storage; in production it runs beside the scheduler, near ops-db.

``compose`` renders ``docker-compose.yaml``: the shared services (PostgreSQL, Redis,
api-server, scheduler, dag-processor, triggerer, the init job, SeaweedFS, InfluxDB,
Grafana), the central worker, a worker per site with a named volume per active DISK
location mounted at the root path the topology declares, an SSH endpoint per site that
transfers are delivered to (``receiving_buffers``), and an ``AIRFLOW_CONN_*`` entry
per connection the topology names: each S3 archive's ``conn_id`` and each receiving
buffer's ``ssh_conn_id``. Secrets appear only as ``${VARIABLES}``. The output depends
on the topology file alone: the file is read with the containers' environment
(``CONTAINER_ENVIRONMENT``), not the caller's, because that is how the containers read
it when they mount the roots it declares.

``worker_commands`` renders the ``airflow celery worker`` command of every site (and of the
central worker) for hosts outside compose; it reads the file with the caller's
environment, like every other command on a site's host.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ccat_operators import queues, topology
from ccat_operators.states import LocationType, StorageType
from ccat_operators.topology import Location, Site, Topology, TopologyError

#: The queue of tasks tied to no location, and the Celery name of the worker serving it.
CENTRAL_QUEUE = "default"
CENTRAL_WORKER = "central"

AIRFLOW_HOME = "/opt/airflow"
CONTAINER_INCLUDE_DIR = f"{AIRFLOW_HOME}/include"
#: Where a topology file outside ``./include`` is mounted in the Airflow containers.
CONTAINER_TOPOLOGY_DIR = f"{AIRFLOW_HOME}/topology"
S3_SERVICE = "s3"
S3_ENDPOINT = f"http://{S3_SERVICE}:8333"
SSH_PORT = 2222
SSH_KEY_FILE = f"{AIRFLOW_HOME}/keys/id_ed25519"
#: Named volumes of the shared services; a location's volume must not take one of these names.
SHARED_VOLUMES = ("postgres-db-volume", "s3-data", "influxdb-data")
#: The repository directories every Airflow container mounts (host path, container path).
REPOSITORY_MOUNTS = (
    ("./dags", f"{AIRFLOW_HOME}/dags"),
    ("./plugins", f"{AIRFLOW_HOME}/plugins"),
    ("./include", CONTAINER_INCLUDE_DIR),
    ("./logs", f"{AIRFLOW_HOME}/logs"),
    ("./keys", f"{AIRFLOW_HOME}/keys:ro"),
)
#: The ``CCAT_*`` environment of every Airflow container besides ``CCAT_TOPOLOGY``; the
#: topology file is read with exactly these (and ``CCAT_TOPOLOGY``) set, as the
#: containers read it.
CONTAINER_ENVIRONMENT = {
    "CCAT_INCLUDE_DIR": CONTAINER_INCLUDE_DIR,
    "CCAT_DATA_ROOT": "/data",
    "CCAT_S3_ENDPOINT": S3_ENDPOINT,
    "CCAT_METRICS_URL": "http://influxdb:8086",
    "CCAT_METRICS_ORG": "ccat",
    "CCAT_METRICS_BUCKET": "ccat",
}
OPS_DB_CONNECTION = "AIRFLOW_CONN_CCAT_OPS_DB"
#: Connection ids that become environment variable names (``AIRFLOW_CONN_<ID>``) as they are.
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class ComposeError(TopologyError):
    """A valid topology that a compose file cannot express (a root with ``:``, clashing names)."""


# What runs where ------------------------------------------------------------------


@dataclass(frozen=True)
class SiteWorker:
    """The Celery worker of one site: the queues of its active locations."""

    site: Site
    locations: tuple[Location, ...]

    @property
    def queues(self) -> list[queues.Queue]:
        return [
            queue
            for location in self.locations
            for queue in queues.queues_for_location(location.site, location.name, location.type)
        ]

    def argv(self) -> list[str]:
        """``airflow celery worker --queues ... --celery-hostname <site>@%h``."""
        return queues.worker_command(self.queues, self.site.short_name)


def site_workers(loaded: Topology) -> list[SiteWorker]:
    """One worker per site with an active location, in file order."""
    workers = []
    for site in loaded.sites:
        active = tuple(location for location in site.locations if location.active)
        if active:
            workers.append(SiteWorker(site, active))
    return workers


def central_worker_argv() -> list[str]:
    """The worker serving queue ``default`` (tasks tied to no location)."""
    return ["airflow", "celery", "worker", "--queues", CENTRAL_QUEUE, "--celery-hostname", f"{CENTRAL_WORKER}@%h"]


def primary_buffer(site: Site) -> Location | None:
    """The active BUFFER transfers to ``site`` arrive in: lowest priority, then file order (as routing)."""
    buffers = [location for location in site.locations if location.active and location.type == LocationType.BUFFER]
    return min(buffers, key=lambda location: location.priority, default=None)


def receiving_buffers(loaded: Topology) -> list[Location]:
    """Every BUFFER a DataTransfer can be delivered into, in file order.

    As ``routing.Router`` lays legs: from every site with an active SOURCE to every
    other site with an active LONG_TERM_ARCHIVE (any of them may be the round-robin
    primary), and from each of those archive sites to every other (the secondary
    fan-out); a leg between two sites with an active route override follows the route
    (RELAY: the ``via`` site's and the destination's primary buffers; DIRECT and CUSTOM:
    ``to_location``), any other leg ends in the destination's primary buffer. Every
    active route counts, whether or not an automatic leg uses it.
    """
    sites = {site.short_name: site for site in loaded.sites}
    routes = {(route.origin_site, route.destination_site): route for route in loaded.routes if route.active}

    def has(site: Site, location_type: LocationType) -> bool:
        return any(location.active and location.type == location_type for location in site.locations)

    archive_sites = [site.short_name for site in loaded.sites if has(site, LocationType.LONG_TERM_ARCHIVE)]
    legs: set[tuple[str, str]] = set()
    for source in (site.short_name for site in loaded.sites if has(site, LocationType.SOURCE)):
        targets = [site for site in archive_sites if site != source]
        legs.update((source, target) for target in targets)
        legs.update((first, other) for first in targets for other in targets if other != first)
    delivered: set[str] = set()
    for origin, destination in legs:
        if (origin, destination) not in routes:
            buffer = primary_buffer(sites[destination])
            if buffer is not None:
                delivered.add(buffer.key)
    for route in routes.values():
        if route.destination_location is not None:
            delivered.add(route.destination_location)
            continue
        for site in (route.via_site, route.destination_site):
            buffer = primary_buffer(sites[site]) if site in sites else None
            if buffer is not None:
                delivered.add(buffer.key)
    return [location for location in loaded.locations if location.key in delivered]


def ssh_conn_id(location: Location) -> str:
    """The Airflow SSH connection transfers into ``location`` use (as ``transfer.hook_for``)."""
    from ccat_operators.transfer import default_ssh_conn_id  # imports Airflow: only when rendering

    return location.settings.get("ssh_conn_id") or default_ssh_conn_id(location.site, location.name)


def service_name(site: str) -> str:
    """A site's part of service and volume names: ``_`` becomes ``-`` (one-to-one: site names have no ``-``)."""
    return site.replace("_", "-")


def worker_service(site: str) -> str:
    return f"airflow-worker-{service_name(site)}"


def ssh_service(site: str) -> str:
    return f"{service_name(site)}-ssh"


def location_volume(location: Location) -> str:
    """The named volume standing in for a DISK location's storage."""
    return f"{service_name(location.site)}-{location.name.replace('_', '-')}"


# Reading the topology as the containers do ------------------------------------------


@dataclass(frozen=True)
class TopologyFile:
    """Where the compose file finds the topology file, on the host and in the containers."""

    host_path: str  # as the compose file and its header name it: relative to the project directory if inside it
    container_path: str  # CCAT_TOPOLOGY in the containers
    mount: str | None  # the extra volume mounting it, or None when ./include already does


def topology_file(path: str | Path, project_dir: str | Path) -> TopologyFile:
    """Locate ``path`` for a compose file in ``project_dir`` (whose ./include the containers mount)."""
    path, project = Path(path).resolve(), Path(project_dir).resolve()
    if not path.is_relative_to(project):
        host = path.as_posix()
    else:
        relative = path.relative_to(project)
        host = relative.as_posix()
        if relative.parts[0] == "include" and len(relative.parts) > 1:
            container = PurePosixPath(CONTAINER_INCLUDE_DIR, *relative.parts[1:]).as_posix()
            return TopologyFile(host, container, None)
    container = f"{CONTAINER_TOPOLOGY_DIR}/{path.name}"
    source = host if host.startswith("/") else f"./{host}"
    return TopologyFile(host, container, f"{_volume_path(source, 'topology file', str(path))}:{container}:ro")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Run the block with exactly ``values`` as the process environment, then restore it."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def container_environment(located: TopologyFile) -> dict[str, str]:
    return {"CCAT_TOPOLOGY": located.container_path, **CONTAINER_ENVIRONMENT}


def load_as_container(path: str | Path, located: TopologyFile) -> Topology:
    """Load ``path`` with the containers' environment, so ``${VAR:-default}`` gives what they will see."""
    environment = container_environment(located)
    with _environment(environment):
        try:
            return topology.load(path)
        except TopologyError as error:
            if not any("environment variable" in problem for problem in error.problems):
                raise
            pinned = ", ".join(f"{name}={value}" for name, value in sorted(environment.items()))
            hint = (
                f"(top level): the compose file's containers read it with {pinned} and no other "
                "variable set; give every other ${VAR} a default (${VAR:-value})"
            )
            raise TopologyError(error.source, [*error.problems, hint]) from None


# Rendering ------------------------------------------------------------------------


def _literal(text: str) -> str:
    """``text`` safe from compose's ``${VAR}`` interpolation (``$`` -> ``$$``)."""
    return text.replace("$", "$$")


def _quoted(text: str) -> str:
    """A YAML single-quoted scalar (JSON connections, shell words)."""
    return "'" + text.replace("'", "''") + "'"


def _plain(text: str) -> str:
    """A YAML scalar for text from the topology: plain when it is unambiguous, else double-quoted."""
    if re.fullmatch(r"[A-Za-z0-9/._@%-]+(?::[A-Za-z0-9/._@%-]+)*", text) and not text.startswith(("-", "@", "%")):
        return text
    return json.dumps(text)


def _comment(text: str) -> str:
    """Topology text on one printable comment line."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _volume_path(path: str, key: str, source: str) -> str:
    """``path`` for compose's ``source:target`` volume syntax, which has no way to write a ``:``."""
    if ":" in path:
        raise ComposeError(source, [f"{key}: {path!r} contains ':', which a compose volume cannot mount"])
    return _literal(path)


def _disk_mounts(worker: SiteWorker, source: str) -> list[str]:
    mounts = []
    for location in worker.locations:
        if location.storage != StorageType.DISK:
            continue
        volume = location_volume(location)
        key = f"sites.{location.site}.locations.{location.name}"
        if volume in SHARED_VOLUMES:
            raise ComposeError(source, [f"{key}: its volume name {volume!r} is a shared service's; rename it"])
        root = _volume_path(location.storage_details["root_path"], f"{key}.root_path", source)
        mounts.append(f"{volume}:{root}")
    return mounts


@dataclass
class _Connections:
    """``AIRFLOW_CONN_*`` entries, refusing two different connections under one name."""

    source: str
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)  # env key -> (JSON, who declared it)

    def add(self, conn_id: str, value: dict, declared_by: str) -> None:
        if not _CONN_ID.match(conn_id):
            problem = f"{declared_by}: connection id {conn_id!r} is not letters, digits, '_', '-' and '.' only"
            raise ComposeError(self.source, [problem])
        key = f"AIRFLOW_CONN_{conn_id.upper()}"
        text = json.dumps(value)
        if key == OPS_DB_CONNECTION:
            raise ComposeError(self.source, [f"{declared_by}: {conn_id!r} is ops-db's connection; name another"])
        if key in self.entries and self.entries[key][0] != text:
            other = self.entries[key][1]
            raise ComposeError(self.source, [f"{declared_by}: {key} is already {other}'s, a different connection"])
        self.entries.setdefault(key, (text, declared_by))


def _secret_variable(conn_id: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", conn_id.upper())


def _s3_credentials(local: bool, variable: str) -> tuple[str, str]:
    """Login and password of an S3 connection: the local SeaweedFS's keys, else variables the deployer must set."""
    if local:
        return "ccat", "${S3_SECRET:-ccat-s3-secret}"
    return (
        f"${{{variable}_ACCESS_KEY_ID:?set {variable}_ACCESS_KEY_ID}}",
        f"${{{variable}_SECRET_ACCESS_KEY:?set {variable}_SECRET_ACCESS_KEY}}",
    )


def _is_local_s3(endpoint: str | None) -> bool:
    return endpoint is not None and urlsplit(endpoint).hostname == S3_SERVICE


def _connection_lines(loaded: Topology, receiving: list[Location]) -> list[str]:
    """The environment entries of the topology's connections: ``AIRFLOW_CONN_<ID>: '<JSON>'``.

    Plus boto3's default credentials (``AWS_ACCESS_KEY_ID``...) when an active archive
    names no ``conn_id``. Credentials for the local SeaweedFS are its demo keys; for any
    other endpoint they are ``${VARIABLES}`` without which compose refuses to start.
    """
    connections = _Connections(loaded.source)
    anonymous: list[Location] = []
    for location in loaded.locations:
        if not location.active or location.type != LocationType.LONG_TERM_ARCHIVE:
            continue
        details = location.storage_details
        if "conn_id" not in details:
            anonymous.append(location)
            continue
        endpoint = details.get("endpoint_url") or S3_ENDPOINT
        login, password = _s3_credentials(_is_local_s3(endpoint), _secret_variable(details["conn_id"]))
        extra = {"endpoint_url": _literal(endpoint)}
        if "region" in details:
            extra["region_name"] = details["region"]
        value = {"conn_type": "aws", "login": login, "password": password, "extra": extra}
        connections.add(details["conn_id"], value, f"{location.key} (conn_id)")
    for location in receiving:
        value = {
            "conn_type": "ssh",
            "host": ssh_service(location.site),
            "port": SSH_PORT,
            "login": "ccat",
            "extra": {"key_file": SSH_KEY_FILE, "no_host_key_check": "true"},
        }
        connections.add(ssh_conn_id(location), value, f"{location.key} (ssh_conn_id)")
    lines = [f"{key}: {_quoted(text)}" for key, (text, _) in connections.entries.items()]
    if anonymous:
        local = all(_is_local_s3(location.storage_details.get("endpoint_url")) for location in anonymous)
        login, password = _s3_credentials(local, "AWS")
        names = _comment(", ".join(location.key for location in anonymous))
        lines += [f"# {names}: no conn_id, so boto3's default credentials",
                  f"AWS_ACCESS_KEY_ID: {login}", f"AWS_SECRET_ACCESS_KEY: {password}"]  # fmt: skip
    return lines


def _header(loaded: Topology, located: TopologyFile) -> str:
    command = shlex.join(["ccat", "deploy", "compose", located.host_path])
    return f"""\
# Generated by `ccat deploy compose` from the topology file {_comment(located.host_path)}
# ({_comment(loaded.observatory)}, {_comment(loaded.telescope)}). Do not edit: change the topology, then run
#   {_comment(command)} > docker-compose.yaml
# (README, "Deployment (CeleryExecutor)").
#
# Airflow's CeleryExecutor, laid out like the official Airflow docker-compose: one
# PostgreSQL (Airflow metadata + ops-db), Redis, api-server, scheduler, dag-processor,
# triggerer, an init job, a central worker for queue `default`, and one Celery worker
# per site serving exactly that site's location queues (`ccat deploy workers`) with
# that site's DISK locations mounted. Plus an S3 server (SeaweedFS) for the long-term
# archives, InfluxDB 2 + Grafana (provisioned dashboard), and an SSH endpoint per site
# that transfers are delivered to.
#
#   docker compose up airflow-init && docker compose up -d
#   UI: http://localhost:8080 (admin: airflow / airflow; add operators and scientists in
#   Security > Users with the roles `operator` / `scientist`)   Grafana: http://localhost:3000
#
# In production each site's worker and SSH endpoint run at that site; here they share
# a host, with a named volume per DISK location standing in for its disks. Secrets are
# ${{VARIABLES}} with demo defaults (or none: `:?`); set them, e.g. in .env, for real use.

"""


_AIRFLOW_ENVIRONMENT = (
    """\
x-airflow-common:
  &airflow-common
  build: .
  image: ccat-data-transfer:latest
  environment:
    &airflow-common-env
    AIRFLOW__CORE__EXECUTOR: CeleryExecutor
    # Roles (operator, scientist) from include/auth/roles.yaml, applied by airflow-init.
    AIRFLOW__CORE__AUTH_MANAGER: airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager
    AIRFLOW__API__SECRET_KEY: ${AIRFLOW_SECRET_KEY:-change-me-to-a-random-secret}
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN: postgresql+psycopg2://airflow:airflow@postgres/airflow
    AIRFLOW__CELERY__RESULT_BACKEND: db+postgresql://airflow:airflow@postgres/airflow
    AIRFLOW__CELERY__BROKER_URL: redis://:@redis:6379/0
    AIRFLOW__CORE__FERNET_KEY: ''
    AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION: 'true'
    AIRFLOW__CORE__LOAD_EXAMPLES: 'false'
    AIRFLOW__CORE__EXECUTION_API_SERVER_URL: 'http://airflow-apiserver:8080/execution/'
    AIRFLOW__API_AUTH__JWT_SECRET: """
    "${AIRFLOW_JWT_SECRET:-change-me-to-a-long-random-secret-of-at-least-64-bytes-for-production-use}\n"
    """\
    AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK: 'true'
    # a running task reports every 5 s (Airflow's default); DAG layouts change only with
    # the topology file, so each DAG file is parsed every 2 min, not every 30 s
    AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL: '5'
    AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL: '120'
    # ops-db; the topology file and the CCAT_* values `ccat deploy compose` read it with
    AIRFLOW_CONN_CCAT_OPS_DB: postgresql://ccat:ccat@postgres:5432/ccat_ops_db
"""
)

_AIRFLOW_COMMON_REST = """\
  user: "${AIRFLOW_UID:-50000}:0"
  depends_on:
    &airflow-common-depends-on
    redis:
      condition: service_healthy
    postgres:
      condition: service_healthy

# What every Celery worker shares; each sets its command, healthcheck and volumes.
x-airflow-worker:
  &airflow-worker
  <<: *airflow-common
  environment:
    <<: *airflow-common-env
    DUMB_INIT_SETSID: "0"
  healthcheck:
    &airflow-worker-healthcheck
    interval: 30s
    timeout: 10s
    retries: 5
    start_period: 30s
  restart: always
  depends_on:
    <<: *airflow-common-depends-on
    airflow-apiserver:
      condition: service_healthy
    airflow-init:
      condition: service_completed_successfully

# The SSH endpoint of a site that transfers are delivered to (rsync / bbcp land here).
x-ssh-endpoint:
  &ssh-endpoint
  image: lscr.io/linuxserver/openssh-server:latest
  environment:
    USER_NAME: ccat
    PUBLIC_KEY_FILE: /keys/id_ed25519.pub
    PASSWORD_ACCESS: 'false'
    DOCKER_MODS: linuxserver/mods:openssh-server-rsync
  restart: always

"""

_AIRFLOW_SERVICE = """\
  {name}:
    <<: *airflow-common
    command: {command}{ports}
    healthcheck:
      test: {test}
      interval: 30s
      timeout: 10s
      retries: 5
      start_period: 30s
    restart: always
    depends_on:
      <<: *airflow-common-depends-on
      airflow-init:
        condition: service_completed_successfully

"""

_SHARED_SERVICES = (
    """\
services:
  postgres:
    image: postgres:16
    environment:
      POSTGRES_USER: airflow
      POSTGRES_PASSWORD: airflow
      POSTGRES_DB: airflow
    volumes:
      - postgres-db-volume:/var/lib/postgresql/data
      - ./include/compose/create-ops-db.sql:/docker-entrypoint-initdb.d/10-create-ops-db.sql:ro
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "airflow"]
      interval: 10s
      retries: 5
      start_period: 5s
    restart: always

  redis:
    image: redis:7.2-bookworm
    expose:
      - 6379
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 10s
      timeout: 30s
      retries: 50
      start_period: 30s
    restart: always

"""
    + _AIRFLOW_SERVICE.format(
        name="airflow-apiserver",
        command="api-server",
        ports='\n    ports:\n      - "8080:8080"',
        test='["CMD", "curl", "--fail", "http://localhost:8080/api/v2/version"]',
    )
    + _AIRFLOW_SERVICE.format(
        name="airflow-scheduler",
        command="scheduler",
        ports="",
        test='["CMD", "curl", "--fail", "http://localhost:8974/health"]',
    )
    + _AIRFLOW_SERVICE.format(
        name="airflow-dag-processor",
        command="dag-processor",
        ports="",
        test="""["CMD-SHELL", 'airflow jobs check --job-type DagProcessorJob --hostname "$${HOSTNAME}"']""",
    )
    + _AIRFLOW_SERVICE.format(
        name="airflow-triggerer",
        command="triggerer",
        ports="",
        test="""["CMD-SHELL", 'airflow jobs check --job-type TriggererJob --hostname "$${HOSTNAME}"']""",
    )
    + """\
  # Migrates both databases, applies the topology, imports the transfer pools and the roles.
  airflow-init:
    <<: *airflow-common
    entrypoint: /bin/bash
    command:
      - -c
      - |
        airflow db migrate &&
        ccat db upgrade &&
        ccat topology apply "$${CCAT_TOPOLOGY}" &&
        ccat pools > /tmp/pools.json && airflow pools import /tmp/pools.json &&
        ccat auth sync &&
        if ! airflow users list | grep -qw "$${_AIRFLOW_WWW_USER_USERNAME:-airflow}"; then
          airflow users create --role Admin --username "$${_AIRFLOW_WWW_USER_USERNAME:-airflow}" \\
            --password "$${_AIRFLOW_WWW_USER_PASSWORD:-airflow}" --firstname Airflow --lastname Admin \\
            --email admin@localhost;
        fi
    environment:
      <<: *airflow-common-env
      _AIRFLOW_DB_MIGRATE: 'true'
      CCAT_OPS_DB_URL: postgresql://ccat:ccat@postgres:5432/ccat_ops_db
    user: "0:0"

"""
)

_SUPPORT_SERVICES = f"""\
  # The long-term archives' S3 (in production: each site's own object store).
  {S3_SERVICE}:
    image: chrislusf/seaweedfs:latest
    command: server -s3 -dir=/data -s3.port=8333
    environment:
      AWS_ACCESS_KEY_ID: ccat
      AWS_SECRET_ACCESS_KEY: ${{S3_SECRET:-ccat-s3-secret}}
    ports:
      - "8333:8333"
    volumes:
      - s3-data:/data
    restart: always

  influxdb:
    image: influxdb:2.7
    environment:
      DOCKER_INFLUXDB_INIT_MODE: setup
      DOCKER_INFLUXDB_INIT_USERNAME: ccat
      DOCKER_INFLUXDB_INIT_PASSWORD: ${{INFLUXDB_PASSWORD:-ccat-influxdb-password}}
      DOCKER_INFLUXDB_INIT_ORG: ccat
      DOCKER_INFLUXDB_INIT_BUCKET: ccat
      DOCKER_INFLUXDB_INIT_ADMIN_TOKEN: ${{INFLUXDB_TOKEN:-ccat-influxdb-token}}
    ports:
      - "8086:8086"
    volumes:
      - influxdb-data:/var/lib/influxdb2
    restart: always

  grafana:
    image: grafana/grafana:11.3.0
    environment:
      INFLUXDB_TOKEN: ${{INFLUXDB_TOKEN:-ccat-influxdb-token}}
      GF_AUTH_ANONYMOUS_ENABLED: 'true'
    ports:
      - "3000:3000"
    volumes:
      - ./include/grafana/provisioning:/etc/grafana/provisioning:ro
      - ./include/grafana/dashboards:/var/lib/grafana/dashboards:ro
    depends_on:
      - influxdb
    restart: always

"""


def _worker(service: str, comments: list[str], argv: list[str], name: str, volumes: list[str] | None) -> list[str]:
    """A Celery worker service; ``volumes`` None keeps the common ones (no site storage)."""
    ping = (
        f'celery --app airflow.providers.celery.executors.celery_executor.app inspect ping -d "{name}@$${{HOSTNAME}}"'
    )
    lines = [
        *(f"  # {comment}" for comment in comments),
        f"  {service}:",
        "    <<: *airflow-worker",
        f"    command: {shlex.join(argv[1:])}",
        "    healthcheck:",
        "      <<: *airflow-worker-healthcheck",
        f'      test: ["CMD-SHELL", {_quoted(ping)}]',
    ]
    if volumes is not None:
        lines += ["    volumes:", *(f"      - {_plain(volume)}" for volume in volumes)]
    return [*lines, ""]


def compose(loaded: Topology, located: TopologyFile) -> str:
    """The CeleryExecutor ``docker-compose.yaml`` for ``loaded`` (read with ``load_as_container``)."""
    workers = site_workers(loaded)
    receiving = receiving_buffers(loaded)
    common_mounts = [f"{host}:{container}" for host, container in REPOSITORY_MOUNTS]
    if located.mount is not None:
        common_mounts.append(located.mount)
    site_mounts = {worker.site.short_name: _disk_mounts(worker, loaded.source) for worker in workers}
    environment = {
        **container_environment(located),
        "CCAT_TOPOLOGY": _plain(_literal(located.container_path)),
        "CCAT_METRICS_TOKEN": "${INFLUXDB_TOKEN:-ccat-influxdb-token}",
    }

    lines = [
        *(f"    {name}: {value}" for name, value in environment.items()),
        "    # the topology's connections: each S3 archive's conn_id and the ssh_conn_id of each",
        "    # buffer transfers arrive in (default ccat_ssh_<site>_<location>)",
        *(f"    {line}" for line in _connection_lines(loaded, receiving)),
        "  volumes:",
        *(f"    - {_plain(mount)}" for mount in common_mounts),
    ]
    services = _worker(
        "airflow-worker",
        [
            "The central worker (in production beside the scheduler, near ops-db): queue",
            "`default`, the tasks tied to no location (stuck-work sweep, health summary,",
            "announce_*, ccat_topology). It mounts no site storage.",
        ],
        central_worker_argv(),
        CENTRAL_WORKER,
        None,
    )
    for worker in workers:
        site = worker.site.short_name
        described = ", ".join(f"{location.name} ({location.type})" for location in worker.locations)
        comment = f"Site {site} ({_comment(worker.site.name)}): {described}."
        services += _worker(worker_service(site), [comment], worker.argv(), site, common_mounts + site_mounts[site])
    for site in dict.fromkeys(location.site for location in receiving):
        buffers = [location for location in receiving if location.site == site]
        volumes = {location_volume(location) for location in buffers}
        described = ", ".join(f"{location.name} (connection {ssh_conn_id(location)})" for location in buffers)
        services += [
            f"  # Site {site} receives transfers into {_comment(described)}.",
            f"  {ssh_service(site)}:",
            "    <<: *ssh-endpoint",
            "    volumes:",
            "      - ./keys:/keys:ro",
            *(f"      - {_plain(mount)}" for mount in site_mounts[site] if mount.split(":", 1)[0] in volumes),
            "",
        ]
    volumes = [
        "postgres-db-volume",
        *(m.split(":", 1)[0] for ms in site_mounts.values() for m in ms),
        *SHARED_VOLUMES[1:],
    ]
    return "".join(
        [
            _header(loaded, located),
            _AIRFLOW_ENVIRONMENT,
            "\n".join(lines) + "\n",
            _AIRFLOW_COMMON_REST,
            _SHARED_SERVICES,
            "\n".join(services) + "\n",
            _SUPPORT_SERVICES,
            "volumes:\n",
            *(f"  {volume}:\n" for volume in volumes),
        ]
    )


def compose_file(path: str | Path, project_dir: str | Path) -> str:
    """Load the topology file ``path`` as the containers will and render the compose file for ``project_dir``."""
    located = topology_file(path, project_dir)
    return compose(load_as_container(path, located), located)


def worker_commands(loaded: Topology, site: str | None = None) -> str:
    """Each site's worker command, under comments naming what its host must mount; or one site's alone."""
    found = site_workers(loaded)
    if site is not None:
        chosen = [worker for worker in found if worker.site.short_name == site]
        if not chosen:
            names = ", ".join(worker.site.short_name for worker in found)
            raise LookupError(f"{loaded.source}: no site {site!r} with an active location (sites: {names})")
        return shlex.join(chosen[0].argv()) + "\n"
    lines = [
        f"# Celery workers for {_comment(loaded.source)}: run each site's command on its worker host(s), where",
        "# the storage listed above it is mounted at the same path; the central one once, beside the scheduler.",
    ]
    for worker in found:
        lines += ["", f"# site {worker.site.short_name} ({_comment(worker.site.name)})"]
        lines += [
            f"#   {location.name}: {location.type}, {_comment(_where(location))}" for location in worker.locations
        ]
        lines.append(shlex.join(worker.argv()))
    lines += ["", f"# central: queue {CENTRAL_QUEUE} (tasks tied to no location)", shlex.join(central_worker_argv())]
    return "\n".join(lines) + "\n"


def _where(location: Location) -> str:
    details = location.storage_details
    if location.storage == StorageType.DISK:
        host = f" on {details['host']}" if details.get("host") else ""
        return f"{details['root_path']}{host}"
    if location.storage == StorageType.S3:
        connection = f" (connection {details['conn_id']})" if details.get("conn_id") else ""
        return f"s3://{details['bucket']}/{details.get('prefix', '')}{connection}"
    return f"{location.storage} storage"
