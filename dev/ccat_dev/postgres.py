"""A private PostgreSQL server for the demo and the tests.

Uses the PostgreSQL binaries installed on the machine (Debian's ``postgresql``
package, found under ``/usr/lib/postgresql/<version>/bin`` or on ``PATH``). The server
listens on 127.0.0.1 only, with its unix socket inside its own directory, so it never
clashes with a system server. PostgreSQL refuses to run as root: when we are root the
binaries run as the ``postgres`` user, which then owns the data directory.

:func:`demo_server` is the one server of ``make demo``, ``make up``, ``ccat devdb`` and
``make clean``: ``<state dir>/postgres`` on 127.0.0.1, both taken from the environment
(:func:`demo_state_dir`, :func:`demo_port`), so they all find the same server.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ccat_operators.opsdb import compose_query, load_query
from ccat_operators.paths import REPO_ROOT

SERVICE_USER = "postgres"
SUPERUSER = "ccat"
FAST_TEST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
#: The demo server's port when ``CCAT_DEMO_PORT`` is not set.
DEMO_PORT = 54329


def demo_state_dir() -> Path:
    """The demo's state directory (database, storage, S3, Airflow): ``$CCAT_STATE_DIR``, else ``<checkout>/.ccat``."""
    return Path(os.environ.get("CCAT_STATE_DIR") or REPO_ROOT / ".ccat").resolve()


def demo_port() -> int:
    """The demo server's TCP port: ``$CCAT_DEMO_PORT``, else :data:`DEMO_PORT`; ValueError if it is not a port."""
    text = os.environ.get("CCAT_DEMO_PORT") or str(DEMO_PORT)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"$CCAT_DEMO_PORT: expected a TCP port number (1-65535), got {text!r}")
    return int(text)


def demo_server() -> LocalPostgres:
    """The server of ``make demo`` and ``make up``: ``<demo_state_dir()>/postgres`` on ``demo_port()``."""
    return LocalPostgres(demo_state_dir() / "postgres", demo_port())


class PostgresNotFoundError(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb``/``pg_ctl``, newest Debian version first."""
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresNotFoundError(
        "PostgreSQL server binaries not found: install them with "
        "`apt-get install postgresql` (or run `make system-deps` as root)"
    )


@dataclass
class LocalPostgres:
    """A PostgreSQL cluster in ``directory``, started and stopped by us.

    ``directory`` holds ``data/`` (the cluster), ``run/`` (socket) and ``server.log``.
    """

    directory: Path
    port: int
    settings: tuple[str, ...] = ()

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        """Return the libpq URL of database ``dbname`` on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def socket_url(self, dbname: str = "postgres") -> str:
        """URL of ``dbname`` over the unix socket (reachable from other network namespaces)."""
        return f"postgresql://{SUPERUSER}@localhost:{self.port}/{dbname}?host={self.directory / 'run'}"

    def _as_service_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", SERVICE_USER, "--", *argv]

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(path, user.pw_uid, user.pw_gid)

    def init(self) -> None:
        """Create the cluster if it does not exist yet (idempotent)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        bindir = find_bindir()
        for path in (self.directory, self.directory / "run"):
            path.mkdir(parents=True, exist_ok=True)
            self._chown(path)
        argv = [
            str(bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        result = subprocess.run(self._as_service_user(argv), capture_output=True, text=True)
        if result.returncode != 0:
            hint = " (every parent directory must be searchable by the postgres user)" if os.geteuid() == 0 else ""
            raise RuntimeError(f"initdb in {self.data_dir} failed{hint}: {result.stderr.strip()}")

    def is_running(self) -> bool:
        """Return True if a server answers on our port."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self, timeout: float = 30.0) -> None:
        """Initialise if needed and start the server; return once it accepts connections."""
        self.init()
        if self.is_running():
            return
        options = [f"-h 127.0.0.1 -p {self.port} -k {self.directory / 'run'}"]
        options += [f"-c {setting}" for setting in self.settings]
        argv = [
            str(find_bindir() / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ]
        if not self.log_file.exists():
            self.log_file.touch()
            self._chown(self.log_file)
        result = subprocess.run(self._as_service_user(argv), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start on port {self.port}: {result.stderr.strip()}\n"
                f"{self.log_file.read_text()[-2000:]}"
            )
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} did not accept connections")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown); a no-op if it is not running."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        argv = [str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
        subprocess.run(self._as_service_user(argv), check=True, capture_output=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` if it does not exist and return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute(load_query("database_exists"), {"name": name}).fetchone()
            if not exists:
                conn.execute(compose_query("create_database", name=name, template=template or "template1"))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting its clients."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(compose_query("drop_database", name=name))
