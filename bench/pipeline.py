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

Run: ``.venv/bin/python bench/pipeline.py [--gigabytes 10] [--batch-gigabytes 2] [--algorithm sha256]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

# This folder holds packaging.py, which would shadow the `packaging` library: run from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from ccat_dev.postgres import FAST_TEST_SETTINGS, LocalPostgres
from ccat_dev.processes import free_port
from ccat_dev.s3 import LocalS3
from ccat_operators import archive, bundling, deletion, filing, migrations, packaging, routing, topology, transfer
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
            for _ in range(file_size // len(block)):
                stream.write(block)
            stream.write(index.to_bytes(8, "little") + number.to_bytes(8, "little"))
        files.append(filing.RawFile(relative, "280GHz"))
    return filing.Observation("ccat/telescope_computer", "Prime-Cam", "bench", f"scan_{index:05d}", start,
                              start + timedelta(seconds=30), tuple(files))  # fmt: skip


def location(db: OpsDb, key: str) -> LocationRow:
    site, _, name = key.partition("/")
    return db.fetch_one("data_location_by_key", site=site, name=name)


def run_batch(db: OpsDb, timings: dict[str, float]) -> None:
    def timed(stage: str, action) -> None:
        start = time.perf_counter()
        action()
        timings[stage] += time.perf_counter() - start

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
    total = int(args.gigabytes * 1e9)
    batch = int(args.batch_gigabytes * 1e9)
    observation_size = 500 * 10**6
    done, index = 0, 0
    while done < total:
        for _ in range(max(1, min(batch, total - done) // observation_size)):
            filing.file_observation(db, write_observation(root, index, observation_size, 100 * 2**20))
            index += 1
        batch_bytes = db.fetch_value("unpackaged_bytes", location_id=location(db, "ccat/telescope_computer").id)
        run_batch(db, timings)
        done += int(batch_bytes)
        print(f"  {done / 1e9:5.1f} GB through the pipeline", flush=True)
    if db.fetch_value("unarchived_package_count"):
        raise RuntimeError("some packages were not archived")
    seconds = sum(timings.values())
    for stage, spent in timings.items():
        print(f"  {stage:<9} {spent:7.1f} s  {done / spent / 1e6:7.0f} MB/s")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=10.0)
    parser.add_argument("--batch-gigabytes", type=float, default=2.0)
    parser.add_argument("--algorithm", default="sha256", choices=["sha256", "xxh3_128"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ccat-bench-pipeline-", dir=os.environ.get("CCAT_BENCH_DIR")))
    work.chmod(0o755)  # the PostgreSQL server runs as its own user
    os.environ["CCAT_DATA_ROOT"] = str(work / "data")
    postgres = LocalPostgres(work / "postgres", free_port(), settings=FAST_TEST_SETTINGS)
    s3 = LocalS3(work / "s3")
    try:
        postgres.start()
        s3.start()
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
