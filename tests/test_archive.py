"""Archive into a real S3 server (SeaweedFS) that verifies checksums."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ccat_dev.s3 import LocalS3
from ccat_operators import archive, deletion, s3, states
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.helpers import location_row, unguarded


@pytest.fixture
def world(ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch):
    return pipeline.archive_world(ops_db, tmp_path, s3_server, monkeypatch)


def packages(db: OpsDb) -> list[dict]:
    return db.conn.execute("SELECT * FROM raw_data_package ORDER BY id").fetchall()


def lta(db: OpsDb, site: str) -> dict:
    return location_row(db, f"{site}/lta")


def test_archived_objects_equal_the_packages_and_package_becomes_archived(
    ops_db: OpsDb, world, s3_server: LocalS3, data_root: Path
) -> None:
    result = archive.archive_pending(ops_db, lta(ops_db, "cologne"))
    assert result.failed == {} and len(result.completed) == len(packages(ops_db))
    assert all(p["archived_at"] is None for p in packages(ops_db))  # us has no copy yet
    archive.archive_pending(ops_db, lta(ops_db, "us"))
    client = s3_server.client()
    for package in packages(ops_db):
        assert package["archived_at"] is not None
        local = (data_root / "cologne" / "buffer" / package["relative_path"]).read_bytes()
        for site in ("cologne", "us"):
            location = lta(ops_db, site)
            body = client.get_object(Bucket=location.s3_bucket, Key=package["relative_path"])["Body"].read()
            assert body == local
            assert "sha256:" + hashlib.sha256(body).hexdigest() == package["checksum"]
    copies = ops_db.conn.execute(
        "SELECT count(*) AS n FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id "
        "WHERE l.location_type = 'LONG_TERM_ARCHIVE' AND c.status = 'PRESENT' AND c.verified_at IS NOT NULL"
    ).fetchone()
    assert copies["n"] == 2 * len(packages(ops_db))
    # Running again uploads nothing new.
    again = archive.archive_pending(ops_db, lta(ops_db, "cologne"))
    assert again.planned == 0 and again.completed == []


def test_server_refuses_a_wrong_checksum(ops_db: OpsDb, world, s3_server: LocalS3, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # The stage's client: no payload signature, so only the checksum header protects the body.
    client = s3_server.client(s3.client_config())
    bucket = lta(ops_db, "cologne").s3_bucket
    s3.ensure_bucket(client, bucket)
    good = tmp_path / "good.tar"
    good.write_bytes(b"a" * 5000)
    checksum = "sha256:" + hashlib.sha256(good.read_bytes()).hexdigest()
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"a" * 4999 + b"b")
    with pytest.raises(ClientError, match="BadDigest"):
        archive.upload(client, bucket, "single.tar", bad, 5000, checksum)
    assert s3.head(client, bucket, "single.tar") is None

    monkeypatch.setattr(archive, "MULTIPART_THRESHOLD", 1000)

    monkeypatch.setattr(archive, "SINGLE_PUT_LIMIT", 1000)
    monkeypatch.setattr(archive, "MIN_PART_SIZE", 5 * 2**20)
    big = tmp_path / "big.tar"
    big.write_bytes(bytes(range(256)) * 50_000)
    big_checksum = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    expected = archive.upload(client, bucket, "multi.tar", big, big.stat().st_size, big_checksum)
    assert archive.is_verified(s3.head(client, bucket, "multi.tar"), big.stat().st_size, big_checksum, expected)
    with pytest.raises(archive.ArchiveVerificationError, match="does not match"):
        archive.upload(client, bucket, "multi-bad.tar", big, big.stat().st_size, "sha256:" + "0" * 64)
    assert s3.head(client, bucket, "multi-bad.tar") is None


def test_corrupt_buffer_copy_is_never_archived_and_needs_intervention_after_three_tries(
    ops_db: OpsDb, world, data_root: Path, capsys
) -> None:
    victim = packages(ops_db)[0]
    path = data_root / "cologne" / "buffer" / victim["relative_path"]
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    for attempt in (1, 2, 3):
        result = archive.archive_pending(ops_db, lta(ops_db, "cologne"))
        assert victim["name"] in result.failed and "BadDigest" in result.failed[victim["name"]]
        row = ops_db.conn.execute(
            "SELECT * FROM long_term_archive_transfer WHERE raw_data_package_id = %s", (victim["id"],)
        ).fetchone()
        assert row["attempts"] == attempt
    assert row["status"] == "FAILED" and row["requires_intervention"] is True
    assert victim["name"] in result.needs_intervention
    # Left alone from now on, until an operator clears it.
    assert victim["name"] not in archive.archive_pending(ops_db, lta(ops_db, "cologne")).failed
    assert main(["archive", "needs-intervention", "--db", ops_db.conn.info.dsn]) == 0
    assert victim["name"] in capsys.readouterr().out

    path.write_bytes(original)
    assert main(["archive", "clear", "--db", ops_db.conn.info.dsn]) == 0
    assert victim["name"] in archive.archive_pending(ops_db, lta(ops_db, "cologne")).completed


def test_with_s3_down_archive_retries_nothing_is_deleted_and_it_completes_later(
    ops_db: OpsDb, world, s3_server: LocalS3, data_root: Path
) -> None:
    s3_server.stop()
    try:
        result = archive.archive_pending(ops_db, lta(ops_db, "cologne"))
        assert result.completed == [] and len(result.failed) == 1  # stopped at the first: storage-wide failure
        for key in ("ccat/telescope_computer", "ccat/buffer", "cologne/buffer", "us/buffer"):
            deletion.run_deletions(ops_db, location_row(ops_db, key), under_pressure=True)
        # Not one copy of a package went, disk pressure or not: none is archived yet.
        # (The bundle tars may go: they were unpacked at every destination.)
        package_copies = ops_db.conn.execute(
            "SELECT DISTINCT status FROM physical_copy WHERE raw_data_package_id IS NOT NULL"
        ).fetchall()
        assert package_copies == [{"status": "PRESENT"}]
        # An outage of the storage is not counted against the packages.
        attempts = ops_db.conn.execute("SELECT max(attempts) AS a FROM long_term_archive_transfer").fetchone()["a"]
        assert attempts == 0
    finally:
        s3_server.start()
    for site in ("cologne", "us"):
        assert archive.archive_pending(ops_db, lta(ops_db, site)).failed == {}
    assert all(p["archived_at"] is not None for p in packages(ops_db))
    assert all(Path(data_root / "ccat" / "telescope_computer" / f).exists() for f in world)


def test_s3_server_enforces_its_credentials(s3_server: LocalS3) -> None:
    import boto3

    intruder = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id=s3_server.access_key,
        aws_secret_access_key="not-the-secret", region_name="us-east-1",
    )  # fmt: skip
    with pytest.raises(ClientError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        intruder.list_buckets()
    assert "Buckets" in s3_server.client().list_buckets()


@pytest.mark.parametrize("wrong", ["secret", "access key"])
def test_refused_credentials_stop_the_run_and_cost_no_package_an_attempt(
    ops_db: OpsDb, world, s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch, wrong: str
) -> None:
    import json

    connection = {"conn_type": "aws", "login": s3_server.access_key, "password": s3_server.secret_key,
                  "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"}}  # fmt: skip
    connection["password" if wrong == "secret" else "login"] = "not-the-right-one"
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_S3_COLOGNE", json.dumps(connection))
    for _ in range(archive.MAX_ATTEMPTS + 1):
        result = archive.archive_pending(ops_db, lta(ops_db, "cologne"))
        assert result.completed == [] and len(result.failed) == 1  # stopped at the first refusal
    rows = ops_db.conn.execute("SELECT * FROM long_term_archive_transfer").fetchall()
    assert rows and all(r["attempts"] == 0 and r["status"] == "PENDING" for r in rows)
    assert not any(r["requires_intervention"] for r in rows)


def test_a_refused_head_of_an_object_is_the_storage_not_the_package(ops_db: OpsDb, world, s3_server: LocalS3) -> None:
    """A HEAD answered 403 (no body, so no error code but the status) stops the run."""
    import boto3

    bucket = lta(ops_db, "cologne").s3_bucket
    s3.ensure_bucket(s3_server.client(), bucket)

    class HeadRefused:
        def __init__(self) -> None:
            self.real = s3_server.client()
            self.intruder = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                                         aws_access_key_id=s3_server.access_key,
                                         aws_secret_access_key="not-the-secret")  # fmt: skip

        def __getattr__(self, name):
            return getattr(self.intruder if name == "head_object" else self.real, name)

    result = archive.archive_pending(ops_db, lta(ops_db, "cologne"), client_factory=lambda _: HeadRefused())
    assert len(result.failed) == 1 and "403" in next(iter(result.failed.values()))
    rows = ops_db.conn.execute("SELECT * FROM long_term_archive_transfer").fetchall()
    assert all(r["attempts"] == 0 and r["status"] == "PENDING" for r in rows)


def test_clear_leaves_a_running_try_alone(ops_db: OpsDb, ops_db_url: str, world, capsys) -> None:
    archive.plan_archive_transfers(ops_db, lta(ops_db, "cologne"))
    running, failed = ops_db.conn.execute("SELECT id FROM long_term_archive_transfer ORDER BY id LIMIT 2").fetchall()
    # One transfer failed three times; the other's worker is still on a try it started after
    # two failures and a third counted (an older version counted at the start of a try).
    with unguarded(ops_db):
        ops_db.conn.execute("UPDATE long_term_archive_transfer SET status = 'FAILED', attempts = 3 WHERE id = %s",
                            (failed["id"],))  # fmt: skip
        ops_db.conn.execute("UPDATE long_term_archive_transfer SET status = 'IN_PROGRESS', attempts = 3 WHERE id = %s",
                            (running["id"],))  # fmt: skip
    with OpsDb.connect(ops_db_url) as worker, states.lease(worker, states.ARCHIVE, running["id"]) as mine:
        assert mine
        assert main(["archive", "clear", "--db", ops_db_url]) == 0
    out = capsys.readouterr().out
    assert f"archive transfer {running['id']} is being tried by a worker right now: left alone" in out
    assert "cleared 1 archive transfer(s)" in out
    after = {r["id"]: r for r in ops_db.conn.execute("SELECT * FROM long_term_archive_transfer").fetchall()}
    assert (after[running["id"]]["status"], after[running["id"]]["attempts"]) == ("IN_PROGRESS", 3)
    assert (after[failed["id"]]["status"], after[failed["id"]]["attempts"]) == ("PENDING", 0)


# -- incomplete multipart uploads left by killed tries ----------------------------------------


def _upload_until_killed(endpoint: str, access_key: str, secret_key: str, bucket: str, key: str, source: str,
                         size: int, checksum: str) -> None:  # fmt: skip
    """An archive try's upload in a process of its own, in 1 KiB parts read from ``source`` (a FIFO)."""
    import boto3

    archive.MULTIPART_THRESHOLD, archive.SINGLE_PUT_LIMIT, archive.MIN_PART_SIZE = 0, 0, 1024
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                          aws_secret_access_key=secret_key, region_name="us-east-1")  # fmt: skip
    archive.upload(client, bucket, key, Path(source), size, checksum)


def incomplete(client, bucket: str, prefix: str = "") -> list[dict]:
    return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


def test_the_next_try_aborts_what_a_killed_upload_left_and_archives_the_package(
    ops_db: OpsDb, world, s3_server: LocalS3, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing
    import os
    import time

    location = lta(ops_db, "cologne")
    package = packages(ops_db)[0]
    key = archive.object_key(location.s3_prefix, package["relative_path"])
    client = s3_server.client()
    s3.ensure_bucket(client, location.s3_bucket)
    # A try uploading the package is SIGKILLed after its first parts reached the server.
    fifo = tmp_path / "package.fifo"
    os.mkfifo(fifo)
    uploader = multiprocessing.get_context("spawn").Process(
        target=_upload_until_killed,
        args=(s3_server.endpoint_url, s3_server.access_key, s3_server.secret_key, location.s3_bucket, key, str(fifo),
              package["size_bytes"], package["checksum"]),
    )  # fmt: skip
    uploader.start()
    source = (data_root / "cologne" / "buffer" / package["relative_path"]).read_bytes()
    with open(fifo, "wb") as feed:
        feed.write(source[:4096])
        feed.flush()
        deadline = time.monotonic() + 60
        while not (left := incomplete(client, location.s3_bucket, key)) or not client.list_parts(
            Bucket=location.s3_bucket, Key=key, UploadId=left[0]["UploadId"]
        ).get("Parts"):
            assert time.monotonic() < deadline and uploader.is_alive(), "the upload never got going"
            time.sleep(0.05)
        uploader.kill()
        uploader.join()
    assert uploader.exitcode == -9
    assert [upload["Key"] for upload in incomplete(client, location.s3_bucket)] == [key]  # it holds its parts
    assert s3.head(client, location.s3_bucket, key) is None

    monkeypatch.setattr(archive, "MULTIPART_THRESHOLD", 1000)  # every package in parts, as big ones are

    monkeypatch.setattr(archive, "SINGLE_PUT_LIMIT", 1000)
    monkeypatch.setattr(archive, "MIN_PART_SIZE", 5 * 2**20)
    result = archive.archive_pending(ops_db, location)
    assert result.failed == {} and package["name"] in result.completed
    assert incomplete(client, location.s3_bucket) == []
    found = s3.head(client, location.s3_bucket, key)
    assert archive.is_verified(found, package["size_bytes"], package["checksum"])
    body = client.get_object(Bucket=location.s3_bucket, Key=key)["Body"].read()
    assert body == source


def test_a_failed_abort_leaves_the_upload_to_the_next_try_and_keeps_the_packages_fault(
    ops_db: OpsDb, world, s3_server: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffer copy does not match and S3 goes away before the abort: still the package's fault."""
    bucket = lta(ops_db, "cologne").s3_bucket
    client = s3_server.client()
    s3.ensure_bucket(client, bucket)
    monkeypatch.setattr(archive, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(archive, "SINGLE_PUT_LIMIT", 1000)
    monkeypatch.setattr(archive, "MIN_PART_SIZE", 5 * 2**20)
    big = tmp_path / "big.tar"
    big.write_bytes(bytes(range(256)) * 40_000)

    class AbortRefused:
        def __getattr__(self, name):
            return getattr(client, name)

        def abort_multipart_upload(self, **kwargs):
            raise ClientError({"Error": {"Code": "ServiceUnavailable"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                              "AbortMultipartUpload")  # fmt: skip

    with pytest.raises(archive.ArchiveVerificationError, match="does not match") as raised:
        archive.upload(AbortRefused(), bucket, "wrong.tar", big, big.stat().st_size, "sha256:" + "0" * 64)
    assert "could not be aborted" in "".join(raised.value.__notes__)
    assert [upload["Key"] for upload in incomplete(client, bucket)] == ["wrong.tar"]
    checksum = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()
    archive.upload(client, bucket, "wrong.tar", big, big.stat().st_size, checksum)
    assert incomplete(client, bucket) == []
    assert archive.is_verified(s3.head(client, bucket, "wrong.tar"), big.stat().st_size, checksum)


def test_credentials_that_may_not_list_uploads_do_not_stop_the_archive(
    ops_db: OpsDb, world, s3_server: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    bucket = lta(ops_db, "cologne").s3_bucket
    client = s3_server.client()
    s3.ensure_bucket(client, bucket)
    monkeypatch.setattr(archive, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(archive, "SINGLE_PUT_LIMIT", 1000)
    big = tmp_path / "big.tar"
    big.write_bytes(bytes(range(256)) * 40_000)
    checksum = "sha256:" + hashlib.sha256(big.read_bytes()).hexdigest()

    class Refused:
        def paginate(self, **kwargs):
            raise ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                              "ListMultipartUploads")  # fmt: skip

    class ListingRefused:
        def __getattr__(self, name):
            return getattr(client, name)

        def get_paginator(self, name):
            return Refused() if name == "list_multipart_uploads" else client.get_paginator(name)

    expected = archive.upload(ListingRefused(), bucket, "listing.tar", big, big.stat().st_size, checksum)
    assert archive.is_verified(s3.head(client, bucket, "listing.tar"), big.stat().st_size, checksum, expected)
    assert "may not list incomplete uploads" in caplog.text


def test_two_archives_recording_at_once_mark_the_package_archived(
    ops_db: OpsDb, ops_db_url: str, world, s3_server: LocalS3
) -> None:
    """Each archive's record sees the other's copy: the second waits for the first to commit."""
    client = s3_server.client(s3.client_config())
    package = packages(ops_db)[0]
    records = []
    with OpsDb.connect(ops_db_url) as cologne, OpsDb.connect(ops_db_url) as us:
        for db, site in ((cologne, "cologne"), (us, "us")):
            location = lta(db, site)
            s3.ensure_bucket(client, location.s3_bucket)
            archive.plan_archive_transfers(db, location)
            transfer = db.conn.execute(
                "SELECT id FROM long_term_archive_transfer"
                " WHERE raw_data_package_id = %s AND destination_location_id = %s",
                (package["id"], location.id),
            ).fetchone()
            records.append((db, archive._archive(db, transfer["id"], client)))
        (first_db, first), (second_db, second) = records
        second_done = threading.Event()

        def record_second() -> None:
            with second_db.conn.transaction():
                second()
            second_done.set()

        with first_db.conn.transaction():
            first()
            thread = threading.Thread(target=record_second)
            thread.start()
            # The second record waits on the package's row lock until the first commits.
            assert not second_done.wait(1.0)
        thread.join(30)
        assert second_done.is_set()
    row = ops_db.conn.execute("SELECT archived_at FROM raw_data_package WHERE id = %s", (package["id"],)).fetchone()
    assert row["archived_at"] is not None
