"""Fault injection: after any single fault the ordinary scheduled runs bring every item home, unaided.

Each test injects one fault into a real run - a worker SIGKILLed mid-write or
mid-upload, PostgreSQL stopped or its postmaster SIGKILLed, S3 killed mid-upload, a
buffer on a tmpfs too small, a flipped byte - then lets the scheduled runs go on
(``tests/settle.py``: every stage as its DAG runs it, a failed task tried again by the
next run, never an operator's action) and checks the invariant: every filed byte in
every archive exactly once with its checksum, nothing deleted early, no ``.part``, no
incomplete multipart upload, no item stuck.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from ccat_operators import archive, bundling, packaging, routing, unpacking
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.conftest import REPO
from tests.helpers import file_random_observation, location_row, small_disk
from tests.settle import assert_settled, one_round, run_until_settled, unfinished

BIG = 12 * 2**20  # files large enough for multipart uploads (parts of 5 MiB below)


@pytest.fixture
def world(ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch):
    """The example topology on local disks and the test S3 server; its own buckets; uploads in 5 MiB parts."""
    pipeline.setup(ops_db, tmp_path, s3_server)
    pipeline.s3_connections(monkeypatch, s3_server)
    suffix = tmp_path.name[-8:].lower().replace("_", "-")
    ops_db.conn.execute("UPDATE data_location SET s3_bucket = s3_bucket || '-' || %s WHERE storage_type = 'S3'",
                        (suffix,))  # fmt: skip
    ops_db.conn.execute("UPDATE data_location SET settings = settings || %s::jsonb",
                        (json.dumps({"audit_period": 0}),))  # fmt: skip
    ops_db.conn.execute("UPDATE retention_policy SET retention_period = '0 seconds'")
    monkeypatch.setattr(archive, "MULTIPART_THRESHOLD", 6 * 2**20)
    monkeypatch.setattr(archive, "SINGLE_PUT_LIMIT", 6 * 2**20)
    monkeypatch.setattr(archive, "MIN_PART_SIZE", 5 * 2**20)
    return ops_db


def file_data(db: OpsDb, sizes=(120_000, 90_000), observations: int = 2, first_minute: int = 0) -> dict[str, bytes]:
    source = Path(location_row(db, "ccat/telescope_computer").root_path)
    filed: dict[str, bytes] = {}
    for minute in range(first_minute, first_minute + observations):
        filed |= file_random_observation(db, source, list(sizes), minute=minute)
    return filed


def settle(db_url: str, data_root: Path, s3_server, filed: dict[str, bytes]) -> None:
    with OpsDb.connect(db_url) as db:  # a fresh connection, as the next task run has
        run_until_settled(db)
        assert_settled(db, s3_server.client(), data_root, filed)


def stage_in_a_process(script: str, db_url: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """One task's work in its own process group (a worker the test can kill)."""
    code = textwrap.dedent(
        """
        import sys
        from ccat_operators import archive, packaging
        from ccat_operators.opsdb import OpsDb
        archive.MULTIPART_THRESHOLD = archive.SINGLE_PUT_LIMIT = 6 * 2**20
        archive.MIN_PART_SIZE = 5 * 2**20
        with OpsDb.connect(sys.argv[1]) as db:
            location = lambda key: db.fetch_one("data_location_by_key", site=key.split("/")[0], name=key.split("/")[1])
        """
    ) + textwrap.indent(textwrap.dedent(script), "    ")
    return subprocess.Popen([sys.executable, "-c", code, db_url], cwd=REPO, env=env or os.environ.copy(),
                            start_new_session=True, **kwargs)  # fmt: skip


def wait_until(condition, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def deliver_to_buffers(db: OpsDb) -> None:
    """Package, bundle, route, transfer and unpack (no archive yet)."""
    source, buffer = location_row(db, "ccat/telescope_computer"), location_row(db, "ccat/buffer")
    packaging.plan_packages(db, source)
    assert packaging.write_packages(db, source).failed == {}
    bundling.plan_bundles(db, buffer)
    assert bundling.write_bundles(db, buffer).failed == {}
    routing.route_bundles(db, buffer)
    pipeline.send_all(db)
    for site in ("cologne", "us"):
        assert unpacking.unpack_arrived(db, location_row(db, f"{site}/buffer")).failed == {}


def test_a_packaging_worker_killed_mid_write(world: OpsDb, ops_db_url: str, data_root: Path, s3_server) -> None:
    filed = file_data(world, sizes=(BIG, 300_000))
    packaging.plan_packages(world, location_row(world, "ccat/telescope_computer"))
    buffer = data_root / "ccat" / "buffer"
    worker = stage_in_a_process('packaging.write_packages(db, location("ccat/telescope_computer"))', ops_db_url)
    wait_until(lambda: list(buffer.rglob("*.part")) or worker.poll() is not None, what="a tar being written")
    kill_group(worker)
    assert worker.returncode == -signal.SIGKILL
    settle(ops_db_url, data_root, s3_server, filed)


def test_an_archive_worker_killed_mid_upload(world: OpsDb, ops_db_url: str, data_root: Path, s3_server) -> None:
    filed = file_data(world, sizes=(BIG, BIG))
    deliver_to_buffers(world)
    lta = location_row(world, "cologne/lta")
    client = s3_server.client()
    worker = stage_in_a_process('archive.archive_pending(db, location("cologne/lta"))', ops_db_url)

    def uploading() -> bool:
        try:
            return bool(client.list_multipart_uploads(Bucket=lta.s3_bucket).get("Uploads"))
        except client.exceptions.NoSuchBucket:
            return False

    wait_until(lambda: uploading() or worker.poll() is not None, what="a multipart upload")
    kill_group(worker)
    assert uploading(), "the worker finished before it could be killed mid-upload"
    settle(ops_db_url, data_root, s3_server, filed)
    attempts = world.conn.execute("SELECT max(attempts) AS n FROM long_term_archive_transfer").fetchone()["n"]
    assert attempts == 0  # a killed worker is not the package's fault


def test_s3_dying_mid_upload(world: OpsDb, ops_db_url: str, data_root: Path, s3_server) -> None:
    filed = file_data(world, sizes=(BIG, BIG))
    deliver_to_buffers(world)
    lta = location_row(world, "us/lta")
    client = s3_server.client()
    errors: list[BaseException] = []

    def archive_run() -> None:
        with OpsDb.connect(ops_db_url) as db:
            errors.append(archive.archive_pending(db, location_row(db, "us/lta")).failed)

    runner = threading.Thread(target=archive_run)
    runner.start()
    try:
        wait_until(lambda: _has_uploads(client, lta.s3_bucket) or not runner.is_alive(), what="an upload")
    finally:
        s3_server.stop()
    runner.join(timeout=120)
    assert errors and errors[0], "the archive run did not notice S3 dying"
    s3_server.start()
    settle(ops_db_url, data_root, s3_server, filed)
    attempts = world.conn.execute("SELECT max(attempts) AS n FROM long_term_archive_transfer").fetchone()["n"]
    assert attempts == 0  # S3 dying is not the package's fault


def _has_uploads(client, bucket: str) -> bool:
    try:
        return bool(client.list_multipart_uploads(Bucket=bucket).get("Uploads"))
    except client.exceptions.NoSuchBucket:
        return False


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_postgres_stopped_or_killed_mid_run(
    world: OpsDb, ops_db_url: str, data_root: Path, s3_server, postgres_server, how: str
) -> None:
    filed = file_data(world, sizes=(BIG, 300_000))
    packaging.plan_packages(world, location_row(world, "ccat/telescope_computer"))
    buffer = data_root / "ccat" / "buffer"
    worker = stage_in_a_process('packaging.write_packages(db, location("ccat/telescope_computer"))', ops_db_url,
                                stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: list(buffer.rglob("*.part")) or worker.poll() is not None, what="a tar being written")
    if how == "stop":
        postgres_server.stop()
    else:
        pid = int((postgres_server.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the postmaster to die")
    try:
        assert worker.wait(timeout=60) != 0  # the task failed: its database went away
    finally:
        postgres_server.start()
    settle(ops_db_url, data_root, s3_server, filed)


def test_a_buffer_too_small(world: OpsDb, ops_db_url: str, data_root: Path, s3_server) -> None:
    filed = file_data(world, sizes=(900_000,), observations=1)
    filed |= file_data(world, sizes=(20_000,), observations=3, first_minute=10)
    with small_disk(data_root / "ccat" / "buffer", "600k") as small:
        with OpsDb.connect(ops_db_url) as db:
            one_round(db)
        waiting = [line for line in unfinished(world) if "waiting: no active buffer" in line]
        assert len(waiting) == 1  # the large package waits, with the reason; the small ones went on
        subprocess.run(["mount", "-o", "remount,size=20m", str(small)], check=True)
        settle(ops_db_url, data_root, s3_server, filed)


def test_a_flipped_byte_in_an_arrived_package(world: OpsDb, ops_db_url: str, data_root: Path, s3_server) -> None:
    filed = file_data(world)
    deliver_to_buffers(world)
    package = world.conn.execute("SELECT * FROM raw_data_package ORDER BY id LIMIT 1").fetchone()
    tar = data_root / "cologne" / "buffer" / package["relative_path"]
    with open(tar, "r+b") as stream:
        stream.seek(700)
        byte = stream.read(1)
        stream.seek(700)
        stream.write(bytes([byte[0] ^ 0xFF]))
    settle(ops_db_url, data_root, s3_server, filed)
