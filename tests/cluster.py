"""A real Airflow CeleryExecutor deployment for tests, across the site network namespaces.

Host side (root namespace, on the bridge address the sites can reach): Redis (broker),
api-server (with the task execution API), scheduler and dag-processor, with Airflow's
metadata in a database of the test PostgreSQL. Each site's Celery worker runs inside the
site's namespace and serves exactly that site's queues (as ``ccat queues --site S
--worker-command`` prints), with ``CCAT_WORKER_NAME`` set to the site so the tasks can
record where they ran. PostgreSQL is reached through its unix socket everywhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from ccat_dev.postgres import LocalPostgres
from ccat_dev.processes import free_port, stop_process_groups
from tests.sitenet import SiteNetwork

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


@dataclass
class AirflowCluster:
    directory: Path
    network: SiteNetwork
    postgres: LocalPostgres
    ops_db: str  # database name of ops-db
    site_queues: dict[str, list[str]]
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.host = self.network.host_address()
        self.redis_port = free_port()
        self.redis_password = secrets.token_hex(12)
        self.api_port = free_port()
        self.meta_db = f"airflow_{secrets.token_hex(3)}"
        self.postgres.create_database(self.meta_db)
        socket_dir = self.postgres.directory / "run"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.directory / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://ccat@/{self.meta_db}?host={socket_dir}&port={self.postgres.port}"
            ),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{self.redis_password}@{self.host}:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://:{self.redis_password}@{self.host}:{self.redis_port}/1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{self.host}:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(40),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_CCAT_OPS_DB": self.postgres.socket_url(self.ops_db),
            **self.extra_env,
        }
        self.env.pop("CCAT_OPS_DB_URL", None)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.processes[name] = subprocess.Popen(
            argv, env=env or self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, start_new_session=True
        )

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def start(self) -> AirflowCluster:
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self._start("redis", [redis, "--bind", self.host, "--port", str(self.redis_port), "--save", "",
                              "--appendonly", "no", "--dir", str(self.directory),
                              "--requirepass", self.redis_password])  # fmt: skip
        subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, check=True, capture_output=True, cwd=self.directory)
        # The deployment step docker-compose's airflow-init does too: one pool per route.
        pools = self.directory / "pools.json"
        ccat = str(Path(sys.executable).parent / "ccat")
        pools.write_text(subprocess.run([ccat, "pools", "--topology", self.env["CCAT_TOPOLOGY"]], env=self.env,
                                        check=True, capture_output=True, text=True).stdout)  # fmt: skip
        self.airflow("pools", "import", str(pools))
        self._start("api-server", [AIRFLOW, "api-server", "-H", self.host, "-p", str(self.api_port), "-w", "1"])
        self._start("scheduler", [AIRFLOW, "scheduler"])
        self._start("dag-processor", [AIRFLOW, "dag-processor"])
        for site, queues in self.site_queues.items():
            env = {**self.env, "CCAT_WORKER_NAME": site,
                   "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}  # fmt: skip
            argv = [AIRFLOW, "celery", "worker", "--queues", ",".join(queues), "--celery-hostname", f"{site}@%h",
                    "--concurrency", "2", "--skip-serve-logs"]  # fmt: skip
            self._start(f"worker-{site}", self.network.argv(site, argv), env)
        return self

    def stop(self) -> None:
        stop_process_groups(self.processes.values(), timeout=20)

    def meta(self) -> psycopg.Connection:
        return psycopg.connect(self.postgres.url(self.meta_db), autocommit=True)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.meta() as conn:
                found = {row[0] for row in conn.execute("SELECT dag_id FROM dag WHERE dag_id = ANY(%s)", (dag_ids,))}
            if found == set(dag_ids):
                return
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAGs never appeared: {set(dag_ids) - found}\n{self.log('dag-processor')[-3000:]}")
            time.sleep(1)

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.log(name)[-3000:]}")

    def airflow(self, *args: str) -> str:
        result = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result.stdout

    def run_dag(self, dag_id: str, timeout: float = 300) -> str:
        """Trigger ``dag_id`` and wait for the run to finish; return its final state."""
        run_id = f"test__{dag_id}__{secrets.token_hex(3)}"
        self.airflow("dags", "unpause", dag_id)
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id)
        deadline = time.monotonic() + timeout
        while True:
            with self.meta() as conn:
                row = conn.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s",
                                   (dag_id, run_id)).fetchone()  # fmt: skip
            if row and row[0] in ("success", "failed"):
                return row[0]
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {row}\n{self.log('scheduler')[-3000:]}")
            time.sleep(1)

    def task_states(self, dag_id: str) -> list[tuple]:
        with self.meta() as conn:
            return conn.execute(
                "SELECT task_id, map_index, state, queue, hostname FROM task_instance WHERE dag_id = %s ORDER BY 1, 2",
                (dag_id,),
            ).fetchall()
