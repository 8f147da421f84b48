"""Airflow on one machine for ``make up`` and the UI tests: LocalExecutor, FAB auth manager.

:class:`LocalAirflow` runs the api-server (UI, REST API and task execution API),
scheduler, dag-processor and triggerer as child processes on one metadata database,
with this repository's DAGs and plugins. :meth:`LocalAirflow.start` migrates the
metadata database, imports the transfer pools, syncs the roles of
``include/auth/roles.yaml`` and (``dev_users``) creates the documented local users.
Every process logs to ``<directory>/<name>.log``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ccat_dev.processes import stop_process_groups
from ccat_operators.paths import REPO_ROOT

BIN = Path(sys.executable).parent
FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowError(RuntimeError):
    """An Airflow process or API call failed."""


@dataclass
class LocalAirflow:
    directory: Path
    metadata_url: str  # SQLAlchemy URL of Airflow's metadata database
    host: str = "127.0.0.1"
    port: int = 8080
    dev_users: bool = True
    env_overrides: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.directory),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": self._secret("secret_key"),
            # Airflow's default: a running task reports every 5 s (1 s cost the api-server
            # 0.4 CPU-s per GB moved in bench/pipeline.py --airflow, for nothing we use).
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "5",
            # DAG layouts change only with the topology file: parse each DAG file every 2 min,
            # not every 30 s (0.5 CPU-s per GB moved in bench/pipeline.py --airflow)
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            **self.env_overrides,
        }

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _secret(self, name: str) -> str:
        """A random secret kept in the directory, so sessions and tokens survive a restart."""
        path = self.directory / f".{name}"
        if not path.exists():
            path.write_text(secrets.token_hex(40))
            path.chmod(0o600)
        return path.read_text()

    def run(self, *argv: str) -> str:
        """Run a command (``airflow ...``, ``ccat ...``) in this deployment's environment."""
        result = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=self.env, capture_output=True, text=True,
                                cwd=self.directory)  # fmt: skip
        if result.returncode != 0:
            raise AirflowError(f"{' '.join(argv)} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def prepare(self) -> None:
        """Migrate the metadata database, import the transfer pools, sync roles (and dev users)."""
        self.run("airflow", "db", "migrate")
        pools = self.directory / "pools.json"
        pools.write_text(self.run("ccat", "pools"))
        self.run("airflow", "pools", "import", str(pools))
        self.run("ccat", "auth", "sync", *(["--dev-users"] if self.dev_users else []))

    def start(self, timeout: float = 180) -> LocalAirflow:
        self.prepare()
        for name in SERVICES:
            argv = [str(BIN / "airflow"), name]
            if name == "api-server":
                argv += ["-H", self.host, "-p", str(self.port), "-w", "1"]
            log = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
            self.processes[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                                    cwd=self.directory, start_new_session=True)  # fmt: skip
        self.wait_healthy(timeout)
        return self

    def stop(self) -> None:
        stop_process_groups(self.processes.values())

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowError(f"{name} exited ({process.returncode}):\n{self.log(name)[-3000:]}")

    def wait_healthy(self, timeout: float) -> None:
        """Wait until the api-server answers and reports a healthy metadata database and scheduler."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
            except httpx.HTTPError:
                health = {}  # not listening yet
            if all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler")):
                return
            if time.monotonic() > deadline:
                raise AirflowError(f"Airflow not healthy after {timeout:.0f} s:\n{self.log('api-server')[-3000:]}")
            time.sleep(1)

    def token(self, username: str, password: str) -> str:
        """A REST API token for a user (FAB login)."""
        response = httpx.post(f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=30)
        if response.status_code != 201:
            raise AirflowError(f"login of {username!r} refused: {response.status_code} {response.text[:300]}")
        return response.json()["access_token"]

    def client(self, username: str, password: str | None = None) -> httpx.Client:
        """An HTTP client for the REST API, logged in as ``username`` (password defaults to the name)."""
        token = self.token(username, password if password is not None else username)
        return httpx.Client(base_url=f"{self.url}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def wait_for_dags(self, client: httpx.Client, dag_ids: list[str], timeout: float = 180) -> None:
        """Wait until the dag-processor has serialized every DAG in ``dag_ids``."""
        deadline = time.monotonic() + timeout
        while True:
            listed = {dag["dag_id"] for dag in client.get("/dags", params={"limit": 100}).json().get("dags", [])}
            if set(dag_ids) <= listed:
                return
            self.check_alive()
            if time.monotonic() > deadline:
                missing = sorted(set(dag_ids) - listed)
                raise AirflowError(f"DAGs never appeared: {missing}\n{self.log('dag-processor')[-3000:]}")
            time.sleep(1)
