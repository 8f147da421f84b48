"""Whole-pipeline throughput on this machine, and how many Airflow tasks a busy hour makes.

1. **Throughput**: ``--gigabytes`` (default 10) of synthetic instrument files flow through
   package -> bundle -> route + transfer -> unpack -> archive (S3, SeaweedFS), with the
   production code paths the DAG tasks call, on a private PostgreSQL and S3. The data
   goes in hourly-like batches (``--batch-gigabytes``, default 2); between batches the
   deletion stage frees what the rules allow (untimed), so the disk holds about one batch
   per stage. Printed: MB/s of raw data through all timed stages, per-stage MB/s, and the
   ratio to the seeds' peak of 8 TB/day (93 MB/s). Goal: >= 2x.
   The sites are directories here (``local`` transfers), one archive site (cologne), and
   the checksum algorithm is ``--algorithm`` (sha256 by default).
2. **Task count**: 1,000 small observations filed in one hour, then the number of task
   instances one run of each DAG creates for them (mapped tasks counted per map index).

3. **Through the real scheduler** (``--airflow``): Airflow with the LocalExecutor as
   ``make up`` runs it (api-server, scheduler, dag-processor, triggerer; parallelism 4),
   the pipeline DAGs unpaused and started by their assets. ``--gigabytes`` of
   observations (500 MB each, written before the clock starts) are filed over HTTP
   (``POST /ccat/api/v1/observations``) in batches of ``--batch-gigabytes``; the next
   batch is filed as soon as the last one is packaged, so the stages of different
   batches overlap as in production. Printed, from the same run:

   - end-to-end MB/s: first filing request -> last package archived (ops-db times);
   - the bound: the S3 server's own ingest rate measured alone before Airflow starts
     (the same amount in 1 GB objects, one streamed PUT each, the client hashing
     nothing: ``archive.upload``), median of 3 runs;
   - the product's CPU per GB: per stage, the CPU seconds its tasks recorded in ops-db
     (``task_execution.cpu_seconds``: the task process, its threads and the commands
     it ran); in total, every Airflow process (services and task processes, from
     /proc) and PostgreSQL (ops-db and Airflow's metadata). The S3 server is shown
     apart, and is not the product's.

   Goals: end-to-end >= 0.8x the S3 bound and >= 1.0x the 8 TB/day peak (93 MB/s);
   product CPU <= 8 core-seconds per GB.

Run: ``.venv/bin/python bench/pipeline.py [--gigabytes 10] [--batch-gigabytes 2] [--algorithm sha256] [--airflow]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

# This folder holds packaging.py, which would shadow the `packaging` library: run from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import yaml
from bench import machine

from ccat_dev.local_airflow import LocalAirflow
from ccat_dev.postgres import FAST_TEST_SETTINGS, LocalPostgres
from ccat_dev.processes import free_port
from ccat_dev.s3 import LocalS3
from ccat_operators import (
    archive,
    bundling,
    deletion,
    filing,
    migrations,
    packaging,
    routing,
    topology,
    transfer,
)
from ccat_operators import (
    s3 as s3_client,
)
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow
from ccat_operators.unpacking import unpack_arrived

REPO = Path(__file__).resolve().parents[1]
PEAK_MB_S = 8e12 / 86400 / 1e6  # 8 TB/day


def bench_topology(work: Path, s3: LocalS3, algorithm: str) -> Path:
    document = yaml.safe_load((REPO / "include/topology/ccat.yaml").read_text())
    sites = document["sites"]
    del sites["us"]  # one archive site: every byte crosses each stage once
    source = sites["ccat"]["locations"]["telescope_computer"]
    source["settings"].update(package_size_limit="2GB", checksum_algorithm=algorithm)
    source["retention"]["period"] = "0s"
    buffer = sites["ccat"]["locations"]["buffer"]
    buffer["settings"].update(bundle_size_limit="20GB", bundle_max_age="0s", transfer_method="local",
                              checksum_algorithm=algorithm)  # fmt: skip
    buffer["retention"]["period"] = "0s"
    cologne = sites["cologne"]["locations"]
    cologne["buffer"]["settings"]["transfer_method"] = "local"
    cologne["buffer"]["retention"]["period"] = "0s"
    cologne["lta"]["endpoint_url"] = s3.endpoint_url
    path = work / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def write_observation(root: Path, index: int, size: int, file_size: int) -> filing.Observation:
    block = os.urandom(1 << 20)
    files = []
    start = datetime(2026, 11, 21, tzinfo=UTC) + timedelta(minutes=index)
    for number in range(max(1, size // file_size)):
        relative = f"primecam/{start:%Y-%m-%d}/scan_{index:05d}/280GHz/part_{number:04d}.dat"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(index.to_bytes(8, "little") + number.to_bytes(8, "little"))  # no two files alike
            for offset in range(16, file_size, len(block)):
                stream.write(block[: file_size - offset])
        files.append(filing.RawFile(relative, "280GHz"))
    return filing.Observation("ccat/telescope_computer", "Prime-Cam", "bench", f"scan_{index:05d}", start,
                              start + timedelta(seconds=30), tuple(files))  # fmt: skip


def location(db: OpsDb, key: str) -> LocationRow:
    site, _, name = key.partition("/")
    return db.fetch_one("data_location_by_key", site=site, name=name)


def cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and the commands it waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_batch(db: OpsDb, timings: dict[str, float], cpu: dict[str, float]) -> None:
    def timed(stage: str, action) -> None:
        start, used = time.perf_counter(), cpu_seconds()
        action()
        timings[stage] += time.perf_counter() - start
        cpu[stage] += cpu_seconds() - used

    source, buffer = location(db, "ccat/telescope_computer"), location(db, "ccat/buffer")
    destination, lta = location(db, "cologne/buffer"), location(db, "cologne/lta")
    timed("package", lambda: (packaging.plan_packages(db, source), packaging.write_packages(db, source)))
    timed("bundle", lambda: (bundling.plan_bundles(db, buffer), bundling.write_bundles(db, buffer)))

    def send() -> None:
        for transfer_id in routing.route_bundles(db, buffer):
            transfer.send_transfer(db, transfer_id)

    timed("transfer", send)
    timed("unpack", lambda: unpack_arrived(db, destination))
    timed("archive", lambda: archive.archive_pending(db, lta))
    for key in ("ccat/telescope_computer", "ccat/buffer", "cologne/buffer"):
        deletion.run_deletions(db, location(db, key), under_pressure=False)


def throughput(args: argparse.Namespace, work: Path, db: OpsDb, s3: LocalS3) -> None:
    loaded = topology.load(bench_topology(work, s3, args.algorithm))
    topology.apply(db, loaded)
    for site_location in loaded.locations:
        if "root_path" in site_location.storage_details:
            Path(site_location.storage_details["root_path"]).mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_CONN_CCAT_S3_COLOGNE"] = (
        f'{{"conn_type": "aws", "login": "{s3.access_key}", "password": "{s3.secret_key}", '
        f'"extra": {{"endpoint_url": "{s3.endpoint_url}", "region_name": "us-east-1"}}}}'
    )
    root = Path(location(db, "ccat/telescope_computer").root_path)
    timings: dict[str, float] = defaultdict(float)
    cpu: dict[str, float] = defaultdict(float)
    total = int(args.gigabytes * 1e9)
    batch = int(args.batch_gigabytes * 1e9)
    observation_size = 500 * 10**6
    done, index = 0, 0
    while done < total:
        for _ in range(max(1, min(batch, total - done) // observation_size)):
            filing.file_observation(db, write_observation(root, index, observation_size, 100 * 10**6))
            index += 1
        batch_bytes = db.fetch_value("unpackaged_bytes", location_id=location(db, "ccat/telescope_computer").id)
        run_batch(db, timings, cpu)
        done += int(batch_bytes)
        print(f"  {done / 1e9:5.1f} GB through the pipeline", flush=True)
    if db.fetch_value("unarchived_package_count"):
        raise RuntimeError("some packages were not archived")
    seconds = sum(timings.values())
    for stage, spent in timings.items():
        print(f"  {stage:<9} {spent:7.1f} s  {done / spent / 1e6:7.0f} MB/s  {cpu[stage] / (done / 1e9):5.2f} CPU-s/GB")
    slowest = max(timings, key=timings.get)
    bound = done / timings[slowest] / 1e6
    print(f"  upper bound if the stages overlapped perfectly (slowest stage, {slowest}): {bound:.0f} MB/s = "
          f"{bound / PEAK_MB_S:.2f}x")  # fmt: skip
    rate = done / seconds / 1e6
    ratio = rate / PEAK_MB_S
    print(
        f"pipeline: {done / 1e9:.1f} GB in {seconds:.0f} s = {rate:.0f} MB/s = {ratio:.2f}x the 8 TB/day peak "
        f"({PEAK_MB_S:.0f} MB/s) (goal >= 2x) {'PASS' if ratio >= 2 else 'FAIL'}"
    )


def task_count(work: Path, db: OpsDb) -> None:
    """Task instances one run of each DAG makes for 1,000 small observations."""
    os.environ.update({"AIRFLOW_HOME": str(work / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                       "CCAT_TOPOLOGY": str(work / "topology.yaml")})  # fmt: skip
    from airflow.dag_processing.dagbag import DagBag

    root = Path(location(db, "ccat/telescope_computer").root_path)
    for index in range(1000):
        filing.file_observation(db, write_observation(root, 100_000 + index, 20_000, 10_000))
    source, buffer = location(db, "ccat/telescope_computer"), location(db, "ccat/buffer")
    plan = packaging.plan_packages(db, source)
    packaging.write_packages(db, source)
    bundles = bundling.plan_bundles(db, buffer)
    bundling.write_bundles(db, buffer)
    transfers = routing.route_bundles(db, buffer)
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    counts = {dag_id: len(dag.tasks) for dag_id, dag in dagbag.dags.items()}
    mapped = sum(1 for task in dagbag.dags["ccat_transfer"].tasks if task.task_id.endswith("send_to_cologne"))
    counts["ccat_transfer"] += len(transfers) - mapped  # one send task per transfer instead of one template
    print(
        f"1,000 small observations -> {len(plan.packages)} packages, {len(bundles)} bundle(s), "
        f"{len(transfers)} transfer(s); task instances per DAG run: "
        + ", ".join(f"{dag_id} {n}" for dag_id, n in sorted(counts.items()))
    )
    print(
        f"one hourly round of every DAG: {sum(counts.values())} task instances (bounded by the topology, "
        f"not by the {plan.files} files or {len(plan.packages)} packages)"
    )


#: The DAGs the pipeline runs through, unpaused for --airflow (ccat_filing starts unpaused).
AIRFLOW_DAGS = ["ccat_filing", "ccat_packaging", "ccat_bundling", "ccat_transfer", "ccat_unpacking", "ccat_archive",
                "ccat_deletion"]  # fmt: skip
OBSERVATION_BYTES = 500 * 10**6
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(sessions: set[int]) -> float:
    """CPU seconds of every process in ``sessions``, and of the children they have reaped."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile: its parent's cutime has it
        fields = text[text.rindex(")") + 2 :].split()  # from field 3 (state) on
        if int(fields[3]) in sessions:  # field 6: session id
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / CLOCK_TICKS


def postgres_session(postgres: LocalPostgres) -> int:
    """The session of the PostgreSQL server (its postmaster and every backend)."""
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    return os.getsid(postmaster)


def s3_bound(s3: LocalS3, work: Path, total: int, runs: int = 3) -> tuple[float, list[float]]:
    """The S3 server's ingest rate alone: ``total`` bytes in 1 GB objects, one streamed PUT each (MB/s, runs)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=s3.access_key,
                          aws_secret_access_key=s3.secret_key, region_name="us-east-1",
                          config=s3_client.client_config())  # fmt: skip
    s3_client.ensure_bucket(client, "ccat-bench-bound")
    objects = []
    for index in range(max(1, round(total / 1e9))):
        path = work / f"bound_{index}.bin"
        digest = hashlib.sha256()
        with open(path, "wb") as stream:
            for _ in range(min(total, 10**9) // (1 << 20)):
                block = os.urandom(1 << 20)
                stream.write(block)
                digest.update(block)
        objects.append((path, path.stat().st_size, f"sha256:{digest.hexdigest()}"))
    seconds = []
    for run in range(runs + 1):  # the first is a warm-up
        start = time.perf_counter()
        for path, size, checksum in objects:
            archive.upload(client, "ccat-bench-bound", f"{run}/{path.name}", path, size, checksum)
        seconds.append(time.perf_counter() - start)
        for path, _, _ in objects:
            client.delete_object(Bucket="ccat-bench-bound", Key=f"{run}/{path.name}")
    for path, _, _ in objects:
        path.unlink()
    size = sum(size for _, size, _ in objects)
    rates = [size / t / 1e6 for t in seconds[1:]]
    return statistics.median(rates), rates


def manifest(observation: filing.Observation) -> dict:
    """The filing API's JSON for an observation (no checksums: the SOURCE worker computes them)."""
    return {
        "location": observation.location, "instrument": observation.instrument, "program": observation.program,
        "obs_unit": observation.obs_unit, "start_time": observation.start_time.isoformat(),
        "end_time": observation.end_time.isoformat(),
        "files": [{"path": f.path, "module": f.module} for f in observation.files],
    }  # fmt: skip


def wait_until(condition, what: str, airflow: LocalAirflow, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        airflow.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.5)


def through_airflow(args: argparse.Namespace, work: Path, postgres: LocalPostgres, s3: LocalS3) -> None:
    ops_db_url = postgres.create_database("bench")
    metadata_url = postgres.create_database("airflow").replace("postgresql://", "postgresql+psycopg://", 1)
    topology_file = bench_topology(work, s3, args.algorithm)
    with OpsDb.connect(ops_db_url) as db:
        migrations.upgrade(db)
        loaded = topology.load(topology_file)
        topology.apply(db, loaded)
        for site_location in loaded.locations:
            if "root_path" in site_location.storage_details:
                Path(site_location.storage_details["root_path"]).mkdir(parents=True, exist_ok=True)
        root = Path(location(db, "ccat/telescope_computer").root_path)
    total = int(args.gigabytes * 1e9)
    per_batch = max(1, int(args.batch_gigabytes * 1e9) // OBSERVATION_BYTES)
    size = min(OBSERVATION_BYTES, total)
    file_size = min(100 * 10**6, size)
    observations = [write_observation(root, index, size, file_size) for index in range(max(1, total // size))]
    batches = [observations[i : i + per_batch] for i in range(0, len(observations), per_batch)]
    print(f"  {len(observations)} observations of {size / 1e6:.0f} MB in {len(batches)} batches; "
          f"algorithm {args.algorithm}", flush=True)  # fmt: skip

    bound, bound_runs = s3_bound(s3, work, min(total, 2 * 10**9))
    print(f"  S3 server ingest alone (1 GB objects, one PUT each): median {bound:.0f} MB/s "
          f"runs {[round(rate) for rate in bound_runs]}", flush=True)  # fmt: skip

    s3_connection = {"conn_type": "aws", "login": s3.access_key, "password": s3.secret_key,
                     "extra": {"endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}}  # fmt: skip
    env = {
        "CCAT_TOPOLOGY": str(topology_file),
        "CCAT_DATA_ROOT": os.environ["CCAT_DATA_ROOT"],
        "AIRFLOW_CONN_CCAT_OPS_DB": ops_db_url,
        "AIRFLOW_CONN_CCAT_S3_COLOGNE": json.dumps(s3_connection),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    airflow = LocalAirflow(work / "airflow", metadata_url, port=free_port(), env_overrides=env)
    try:
        airflow.start()
        admin = airflow.client("admin")
        airflow.wait_for_dags(admin, AIRFLOW_DAGS)
        for dag_id in AIRFLOW_DAGS:
            admin.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        token = airflow.token("instrument", "instrument")
        api = httpx.Client(base_url=f"{airflow.url}/ccat/api/v1", headers={"Authorization": f"Bearer {token}"},
                           timeout=60)  # fmt: skip
        sessions = {name: {process.pid} for name, process in airflow.processes.items()}
        sessions |= {"PostgreSQL": {postgres_session(postgres)}, "S3 server": {s3.process.pid}}
        cpu_before = {name: session_cpu_seconds(session) for name, session in sessions.items()}
        since, started = datetime.now(UTC), time.monotonic()
        with OpsDb.connect(ops_db_url) as db:

            def progress():
                return db.fetch_one("http_filing_progress", since=since)

            for number, batch in enumerate(batches, 1):
                for observation in batch:
                    api.post("/observations", json=manifest(observation)).raise_for_status()
                wait_until(lambda: (p := progress()).open_requests == 0 and p.unpackaged_files == 0,
                           f"batch {number} to be packaged", airflow)  # fmt: skip
                print(f"  batch {number} filed and packaged", flush=True)
            wait_until(lambda: (p := progress()).packages and p.unarchived_packages == 0, "the archive", airflow)
            done = progress()

            def idle() -> bool:
                runs = admin.get("/dags/~/dagRuns", params={"state": ["queued", "running"], "limit": 1}).json()
                return runs["total_entries"] == 0

            wait_until(idle, "the last DAG runs (deletion) to finish", airflow)
            cpu = {name: session_cpu_seconds(session) - cpu_before[name] for name, session in sessions.items()}
            costs = db.fetch_all("task_cost_by_dag", since=since)
        if done.refused_requests:
            raise RuntimeError(f"{done.refused_requests} filing request(s) refused")
    finally:
        airflow.stop()

    gigabytes = done.filed_bytes / 1e9
    seconds = (done.last_archived_at - done.first_requested_at).total_seconds()
    rate = done.filed_bytes / seconds / 1e6
    print(f"  {done.packages} packages; per DAG, the CPU its tasks recorded (task process, threads, commands):")
    for cost in costs:
        print(f"    {cost.dag_id:<15} {cost.tasks:4d} tasks  {cost.cpu_seconds:7.1f} CPU-s  "
              f"{cost.cpu_seconds / gigabytes:5.2f} CPU-s/GB  {cost.wall_seconds:7.1f} s of task time")  # fmt: skip
    tasks_cpu = sum(cost.cpu_seconds for cost in costs)
    print(f"  CPU of each process tree over {time.monotonic() - started:.0f} s (the scheduler's has the task "
          "processes the LocalExecutor ran):")  # fmt: skip
    for name, used in cpu.items():
        print(f"    {name:<15} {used:7.1f} CPU-s  {used / gigabytes:6.2f} CPU-s/GB")
    product = sum(used for name, used in cpu.items() if name != "S3 server")
    verdict = "PASS" if product / gigabytes <= 8 else "FAIL"
    print(f"  product CPU (Airflow and PostgreSQL, not the S3 server): {product / gigabytes:.2f} core-s/GB, of which "
          f"the tasks' own work {tasks_cpu / gigabytes:.2f} (goal <= 8) {verdict}")  # fmt: skip
    verdict = "PASS" if rate >= 0.8 * bound and rate >= PEAK_MB_S else "FAIL"
    print(
        f"pipeline through Airflow: {gigabytes:.1f} GB in {seconds:.0f} s (first filing -> last archived) = "
        f"{rate:.0f} MB/s = {rate / bound:.2f}x the S3 bound ({bound:.0f} MB/s) = {rate / PEAK_MB_S:.2f}x the "
        f"8 TB/day peak (goals >= 0.8x and >= 1.0x) {verdict}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=10.0)
    parser.add_argument("--batch-gigabytes", type=float, default=2.0)
    parser.add_argument("--algorithm", default="sha256", choices=["sha256", "xxh3_128"])
    parser.add_argument("--airflow", action="store_true", help="through the real scheduler (see 3. above)")
    args = parser.parse_args()
    print(machine.describe())
    work = Path(tempfile.mkdtemp(prefix="ccat-bench-pipeline-", dir=os.environ.get("CCAT_BENCH_DIR")))
    work.chmod(0o755)  # the PostgreSQL server runs as its own user
    os.environ["CCAT_DATA_ROOT"] = str(work / "data")
    postgres = LocalPostgres(work / "postgres", free_port(), settings=FAST_TEST_SETTINGS)
    s3 = LocalS3(work / "s3")
    try:
        postgres.start()
        s3.start()
        if args.airflow:
            through_airflow(args, work, postgres, s3)
            return 0
        with OpsDb.connect(postgres.create_database("bench")) as db:
            migrations.upgrade(db)
            throughput(args, work, db, s3)
            task_count(work, db)
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
