"""The pipeline's scheduled runs, in-process, until nothing is left to do; and the invariant after it.

``run_until_settled`` calls every stage the way its DAG's tasks do (the same functions,
default retries being the next round), with a stage's failure treated as Airflow treats a
failed task: logged, and tried again by the next scheduled run. No round ever does what
an operator would (no retry, no clear). ``assert_settled`` is the invariant every fault
must leave behind: every filed byte in every archive exactly once with its checksum,
nothing deleted early, no ``.part``, no incomplete multipart upload, no item stuck.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tarfile
from datetime import timedelta
from pathlib import Path

from ccat_operators import (
    archive,
    audit,
    bundling,
    deletion,
    monitoring,
    packaging,
    routing,
    transfer,
    unpacking,
)
from ccat_operators.opsdb import OpsDb
from tests.helpers import location_row

log = logging.getLogger(__name__)

SOURCES = ("ccat/telescope_computer",)
BUFFERS = ("ccat/buffer", "cologne/buffer", "us/buffer")
ARCHIVES = ("cologne/lta", "us/lta")
DELETING = ("ccat/telescope_computer", "ccat/buffer", "cologne/buffer", "us/buffer")


def _task(name: str, action) -> bool:
    """Run one task's work; a failure is what Airflow would record (the next run tries again)."""
    try:
        action()
    except Exception as error:  # a failed task: Airflow marks it failed; the next scheduled run goes on
        log.warning("task %s failed (the next run tries again): %s", name, error)
        return False
    return True


def one_round(db: OpsDb, audit_too: bool = True) -> None:
    """Every DAG's tasks once, in pipeline order."""
    for key in SOURCES:
        _task(f"packaging {key}", lambda key=key: (packaging.plan_packages(db, location_row(db, key)),
                                                   packaging.write_packages(db, location_row(db, key))))  # fmt: skip
    for key in BUFFERS:
        _task(f"bundling {key}", lambda key=key: (bundling.plan_bundles(db, location_row(db, key)),
                                                  bundling.write_bundles(db, location_row(db, key))))  # fmt: skip
        _task(f"routing {key}", lambda key=key: routing.route_bundles(db, location_row(db, key)))
    for row in db.conn.execute("SELECT id FROM data_transfer WHERE status <> 'COMPLETED' ORDER BY id").fetchall():
        if db.fetch_one("data_transfer", id=row["id"]).depends_on_status in (None, "COMPLETED"):
            _task(f"send {row['id']}", lambda row=row: transfer.send_transfer(db, row["id"]))
    for key in BUFFERS:
        _task(f"unpack {key}", lambda key=key: unpacking.unpack_arrived(db, location_row(db, key)))
    for key in ARCHIVES:
        _task(f"archive {key}", lambda key=key: _archive(db, key))
    if audit_too:
        for key in (*SOURCES, *BUFFERS, *ARCHIVES):
            _task(f"audit {key}", lambda key=key: audit.audit_location(db, location_row(db, key)))
    for key in DELETING:
        _task(
            f"deletion {key}", lambda key=key: deletion.run_deletions(db, location_row(db, key), under_pressure=False)
        )
    _task("monitoring", lambda: _monitoring(db))


def _archive(db: OpsDb, key: str) -> None:
    result = archive.archive_pending(db, location_row(db, key))
    if result.failed:
        raise RuntimeError(f"{len(result.failed)} not archived: {result.failed}")


def _monitoring(db: OpsDb) -> None:
    monitoring.sweep_stuck(db, timedelta(0))  # the 15-minute sweep, its 2 h threshold passed
    for key in ARCHIVES:
        monitoring.sweep_stale_uploads(location_row(db, key), timedelta(0))


def unfinished(db: OpsDb) -> list[str]:
    """Work not at its end state, one line each."""
    return [f"{r['stage']} {r['name']}: {r['status']} ({r['reason']})" for r in db.conn.execute(
        "SELECT 'package' AS stage, name, status::text, failure_reason AS reason FROM raw_data_package"
        " WHERE status <> 'COMPLETED'"
        " UNION ALL SELECT 'bundle', name, status::text, failure_reason FROM data_transfer_package"
        " WHERE status <> 'COMPLETED'"
        " UNION ALL SELECT 'transfer', t.id::text, t.status::text, t.failure_reason FROM data_transfer t"
        " WHERE t.status <> 'COMPLETED'"
        " UNION ALL SELECT 'unpack', t.id::text, t.unpack_status::text, t.unpack_failure_reason FROM data_transfer t"
        " WHERE t.unpack AND t.unpack_status <> 'COMPLETED'"
        " UNION ALL SELECT 'archive', a.id::text, a.status::text, a.failure_reason FROM long_term_archive_transfer a"
        " WHERE a.status <> 'COMPLETED'"
        " UNION ALL SELECT 'unarchived', name, status::text, NULL FROM raw_data_package WHERE archived_at IS NULL"
    ).fetchall()]  # fmt: skip


def run_until_settled(db: OpsDb, rounds: int = 8) -> int:
    """Scheduled runs until every item is at its end state; returns how many it took."""
    for number in range(1, rounds + 1):
        one_round(db)
        if not unfinished(db) and number > 1:
            return number
    raise AssertionError("not settled after {} rounds:\n  {}".format(rounds, "\n  ".join(unfinished(db))))


def assert_settled(db: OpsDb, s3_client, data_root: Path, filed: dict[str, bytes]) -> None:
    """The invariant after any single fault (see module doc)."""
    assert unfinished(db) == []
    packages = db.conn.execute("SELECT * FROM raw_data_package ORDER BY id").fetchall()
    archived_files: dict[str, list[bytes]] = {}
    for key in ARCHIVES:
        lta = location_row(db, key)
        for package in packages:
            copies = db.conn.execute(
                "SELECT * FROM physical_copy WHERE raw_data_package_id = %s AND data_location_id = %s",
                (package["id"], lta.id),
            ).fetchall()
            assert [c["status"] for c in copies] == ["PRESENT"], (key, package["name"], copies)
            body = s3_client.get_object(Bucket=lta.s3_bucket, Key=copies[0]["path"])["Body"].read()
            assert "sha256:" + hashlib.sha256(body).hexdigest() == package["checksum"]
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar.getmembers():
                    archived_files.setdefault(member.name, []).append(tar.extractfile(member).read())
        uploads = s3_client.list_multipart_uploads(Bucket=lta.s3_bucket).get("Uploads", [])
        assert uploads == [], f"incomplete multipart uploads left in {lta.s3_bucket}: {uploads}"
    # Every filed byte in every archive, exactly once each.
    assert sorted(archived_files) == sorted(filed)
    for path, contents in archived_files.items():
        assert contents == [filed[path]] * len(ARCHIVES), path
    # Nothing deleted early: a deleted source or buffer copy's package is archived everywhere.
    early = db.conn.execute(
        "SELECT c.id FROM physical_copy c JOIN raw_data_package p ON p.id = c.raw_data_package_id"
        " WHERE c.status = 'DELETED' AND p.archived_at IS NULL"
    ).fetchall()
    assert early == []
    assert not list(data_root.rglob("*.part")), list(data_root.rglob("*.part"))
