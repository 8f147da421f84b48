"""The audit: lost, corrupt and dark data found at every kind of location, and repaired from verified copies."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from ccat_operators import archive, audit, deletion, s3, states, unpacking
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.helpers import location_row


@pytest.fixture
def delivered(ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch):
    """Packages unpacked at both archive sites' buffers, not archived yet; every copy due for re-reading."""
    filed = pipeline.archive_world(ops_db, tmp_path, s3_server, monkeypatch)
    ops_db.conn.execute("UPDATE data_location SET settings = settings || %s::jsonb",
                        (json.dumps({"audit_period": 0, "audit_dark_grace": 3600}),))  # fmt: skip
    return filed


@pytest.fixture
def archived(ops_db: OpsDb, delivered):
    for site in ("cologne", "us"):
        assert archive.archive_pending(ops_db, location_row(ops_db, f"{site}/lta")).failed == {}
    return delivered


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def a_package(db: OpsDb) -> dict:
    return db.conn.execute("SELECT * FROM raw_data_package ORDER BY id LIMIT 1").fetchone()


def copy_of(db: OpsDb, package: dict, key: str) -> dict:
    return db.conn.execute("SELECT * FROM physical_copy WHERE raw_data_package_id = %s AND data_location_id = %s",
                           (package["id"], location_row(db, key).id)).fetchone()  # fmt: skip


def run_audit(db: OpsDb, key: str, repair: bool = True) -> audit.AuditResult:
    return audit.audit_location(db, location_row(db, key), repair=repair)


def flip_a_byte(path: Path, offset: int = 1000) -> None:
    with open(path, "r+b") as stream:
        stream.seek(offset)
        byte = stream.read(1)
        stream.seek(offset)
        stream.write(bytes([byte[0] ^ 0xFF]))


def findings(db: OpsDb) -> list[dict]:
    return db.conn.execute("SELECT * FROM audit_finding ORDER BY id").fetchall()


def test_a_clean_location_has_nothing_to_report_and_every_copy_is_reverified(ops_db: OpsDb, archived) -> None:
    before = ops_db.conn.execute("SELECT max(verified_at) AS t FROM physical_copy").fetchone()["t"]
    for key in ("ccat/telescope_computer", "ccat/buffer", "cologne/buffer", "us/buffer", "cologne/lta", "us/lta"):
        result = run_audit(ops_db, key)
        assert (result.lost, result.corrupt, result.dark) == ([], [], []), result.lines()
        assert result.checked > 0 and result.verified == result.checked
    after = ops_db.conn.execute("SELECT min(verified_at) AS t FROM physical_copy WHERE status = 'PRESENT'").fetchone()
    assert after["t"] > before
    assert findings(ops_db) == []


def test_a_flipped_byte_in_a_buffer_copy_is_found_and_repaired_from_the_archive(
    ops_db: OpsDb, archived, data_root: Path
) -> None:
    package = a_package(ops_db)
    tar = data_root / "cologne" / "buffer" / package["relative_path"]
    flip_a_byte(tar)
    result = run_audit(ops_db, "cologne/buffer")
    assert result.corrupt == [package["relative_path"]] and result.repaired == [package["relative_path"]]
    assert sha256(tar) == package["checksum"]  # the archive's verified copy came back
    assert copy_of(ops_db, package, "cologne/buffer")["status"] == "PRESENT"
    (finding,) = findings(ops_db)
    assert finding["kind"] == "corrupt" and "fetched again from an archive" in finding["repair"]
    run_audit(ops_db, "cologne/buffer")  # the next run sees it repaired
    assert findings(ops_db)[0]["resolved_at"] is not None
    assert not list((data_root / "cologne").rglob("*.part"))


def test_a_lost_buffer_copy_before_archiving_is_sent_again(ops_db: OpsDb, delivered, data_root: Path) -> None:
    package = a_package(ops_db)
    tar = data_root / "cologne" / "buffer" / package["relative_path"]
    tar.unlink()
    result = run_audit(ops_db, "cologne/buffer")
    assert result.lost == [package["relative_path"]] and result.repaired == [package["relative_path"]]
    copy = copy_of(ops_db, package, "cologne/buffer")
    assert copy["status"] == "LOST"
    # Not counted as a copy any more: the archive cannot read it, deletion cannot count it.
    assert ops_db.fetch_one("transfer_into", bundle_id=package["data_transfer_package_id"],
                            location_id=copy["data_location_id"]).status == "PENDING"  # fmt: skip
    pipeline.send_all(ops_db)
    assert unpacking.unpack_arrived(ops_db, location_row(ops_db, "cologne/buffer")).failed == {}
    assert sha256(tar) == package["checksum"] and copy_of(ops_db, package, "cologne/buffer")["status"] == "PRESENT"
    assert archive.archive_pending(ops_db, location_row(ops_db, "cologne/lta")).failed == {}


def test_a_lost_archive_object_is_archived_again_even_when_its_buffer_copy_is_gone(
    ops_db: OpsDb, archived, data_root: Path, s3_server
) -> None:
    package = a_package(ops_db)
    us_lta = location_row(ops_db, "us/lta")
    s3_server.client().delete_object(Bucket=us_lta.s3_bucket, Key=package["relative_path"])
    # The us buffer copy went too (retention): the repair must fetch it from cologne's archive first.
    (data_root / "us" / "buffer" / package["relative_path"]).unlink()
    buffer_copy = copy_of(ops_db, package, "us/buffer")
    for new in ("DELETION_SCHEDULED", "DELETION_IN_PROGRESS", "DELETED"):
        states.move(ops_db, states.COPY, buffer_copy["id"], buffer_copy["status"], new)
        buffer_copy["status"] = new

    result = run_audit(ops_db, "us/lta")
    assert result.lost == [package["relative_path"]] and result.repaired == [package["relative_path"]]
    assert copy_of(ops_db, package, "us/lta")["status"] == "LOST"
    assert copy_of(ops_db, package, "us/buffer")["status"] == "PRESENT"  # fetched from cologne's archive
    assert archive.archive_pending(ops_db, us_lta).completed == [package["name"]]
    body = s3.client(us_lta).get_object(Bucket=us_lta.s3_bucket, Key=package["relative_path"])["Body"].read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == package["checksum"]
    assert copy_of(ops_db, package, "us/lta")["status"] == "PRESENT"


def test_a_corrupt_archive_object_is_found_by_its_head(ops_db: OpsDb, archived, s3_server) -> None:
    package = a_package(ops_db)
    lta = location_row(ops_db, "cologne/lta")
    data = bytearray(s3_server.client().get_object(Bucket=lta.s3_bucket, Key=package["relative_path"])["Body"].read())
    data[1000] ^= 0xFF  # same size, other bytes, and no checksum metadata: a foreign rewrite
    s3_server.client().put_object(Bucket=lta.s3_bucket, Key=package["relative_path"], Body=bytes(data))
    result = run_audit(ops_db, "cologne/lta", repair=False)
    assert result.corrupt == [package["relative_path"]] and result.repaired == []
    assert copy_of(ops_db, package, "cologne/lta")["status"] == "CORRUPT"
    # Deletion no longer counts it: the cologne buffer copy stays until it is archived again.
    run_audit(ops_db, "cologne/lta")
    assert archive.archive_pending(ops_db, lta).completed == [package["name"]]
    assert copy_of(ops_db, package, "cologne/lta")["status"] == "PRESENT"


def test_a_lost_archive_copy_is_no_longer_counted_by_deletion(ops_db: OpsDb, delivered, s3_server) -> None:
    """Deletion must not let a buffer copy go on the strength of an archive copy that is not there."""
    cologne_lta = location_row(ops_db, "cologne/lta")
    assert archive.archive_pending(ops_db, cologne_lta).failed == {}  # archived at cologne only
    package = a_package(ops_db)
    s3_server.client().delete_object(Bucket=cologne_lta.s3_bucket, Key=package["relative_path"])
    run_audit(ops_db, "cologne/lta", repair=False)
    assert copy_of(ops_db, package, "cologne/lta")["status"] == "LOST"
    # Under disk pressure a buffer copy may go once a verified archive copy exists: none does now.
    for key in ("us/buffer", "cologne/buffer"):
        deletion.run_deletions(ops_db, location_row(ops_db, key), under_pressure=True)
        assert copy_of(ops_db, package, key)["status"] == "PRESENT"


def test_dark_files_are_reported_never_deleted_and_resolved_when_gone(
    ops_db: OpsDb, delivered, data_root: Path, s3_server
) -> None:
    stranger = data_root / "cologne" / "buffer" / "raw_data_packages" / "someone_elses.tar"
    stranger.write_bytes(b"not ours")
    fresh = data_root / "cologne" / "buffer" / "just_arrived.tmp"
    fresh.write_bytes(b"too young to judge")
    old = time.time() - 2 * 3600
    os.utime(stranger, (old, old))
    result = run_audit(ops_db, "cologne/buffer")
    assert result.dark == ["raw_data_packages/someone_elses.tar"]
    assert stranger.read_bytes() == b"not ours" and fresh.exists()  # reported, never deleted
    (finding,) = findings(ops_db)
    assert finding["kind"] == "dark" and "unknown to ops-db: 8 bytes" in finding["detail"]
    stranger.unlink()
    run_audit(ops_db, "cologne/buffer")
    assert findings(ops_db)[0]["resolved_at"] is not None

    lta = location_row(ops_db, "cologne/lta")
    s3.ensure_bucket(s3_server.client(), lta.s3_bucket)
    s3_server.client().put_object(Bucket=lta.s3_bucket, Key="raw_data_packages/not_ours.tar", Body=b"x")
    ops_db.conn.execute("UPDATE data_location SET settings = settings || '{\"audit_dark_grace\": 0}' WHERE id = %s",
                        (lta.id,))  # fmt: skip
    assert run_audit(ops_db, "cologne/lta").dark == ["raw_data_packages/not_ours.tar"]


def test_ccat_audit_reports_and_status_lists_open_findings(
    ops_db: OpsDb, ops_db_url: str, archived, data_root: Path, capsys
) -> None:
    package = a_package(ops_db)
    (data_root / "ccat" / "buffer" / package["relative_path"]).unlink()
    assert main(["audit", "--location", "ccat/buffer", "--no-repair", "--db", ops_db_url]) == 0
    out = capsys.readouterr().out
    assert f"lost: {package['relative_path']}" in out and "1 finding(s)" in out
    assert main(["audit", "--location", "mars/x", "--db", ops_db_url]) == 1
    assert "is not an active location" in capsys.readouterr().err
