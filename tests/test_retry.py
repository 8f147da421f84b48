"""`ccat retry`: an operator hands a FAILED item back to its stage, under its lease."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccat_dev.s3 import LocalS3
from ccat_operators import archive, bundling, packaging, routing, states, status, unpacking
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import Status
from tests import pipeline
from tests.helpers import ensure_obs_unit, file_random_observation, insert_pending_packages, location_row, unguarded
from tests.test_cli import one_line_error
from tests.test_states import World


def retry(url: str, kind: str, item: int) -> int:
    return main(["retry", kind, str(item), "--db", url])


def inserted(world: World, column: states.StatusColumn, status_: str) -> int:
    """A row of ``column``'s table in ``status_`` (inserts are not guarded); its id."""
    return int(world.insert(column, status_).removeprefix("id = "))


@pytest.fixture
def world(ops_db: OpsDb, example_topology) -> World:
    ensure_obs_unit(ops_db)
    return World(ops_db, insert_pending_packages(ops_db, 1)[0])


def test_a_package_whose_raw_file_changed_is_retried_once_restored_and_ends_archived(
    ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, s3_server: LocalS3,
    monkeypatch: pytest.MonkeyPatch, capsys,
) -> None:  # fmt: skip
    pipeline.setup(ops_db, tmp_path, s3_server)
    pipeline.s3_connections(monkeypatch, s3_server)
    suffix = tmp_path.name[-8:].lower().replace("_", "-")
    ops_db.conn.execute("UPDATE data_location SET s3_bucket = s3_bucket || '-' || %s WHERE storage_type = 'S3'",
                        (suffix,))  # fmt: skip
    source = location_row(ops_db, "ccat/telescope_computer")
    filed = {}
    for minute in (0, 10):
        filed |= file_random_observation(ops_db, Path(source.root_path), [120_000, 90_000], minute=minute)
    packaging.plan_packages(ops_db, source)
    relative = next(iter(filed))
    changed = Path(source.root_path) / relative
    changed.write_bytes(b"x" * len(filed[relative]))  # changed after filing

    result = packaging.write_packages(ops_db, source)
    assert len(result.completed) == 1  # the other observation's package is not held up
    (name,) = result.failed
    package = ops_db.conn.execute("SELECT id FROM raw_data_package WHERE name = %s", (name,)).fetchone()["id"]
    assert states.status_of(ops_db, states.PACKAGE, package) == Status.FAILED

    # `ccat status` counts it, with its reason, what to fix and the command that hands it back.
    assert main(["status", "--db", ops_db_url]) == 0
    out = capsys.readouterr().out
    assert "needing intervention: 1" in out
    assert f"packages (1): {status.STAGES['package'].fix}, then:" in out
    assert f"ccat retry package {package}  # {name}, for " in out
    assert "source file changed or missing" in out

    changed.write_bytes(filed[relative])  # the operator restores it
    assert retry(ops_db_url, "package", package) == 0
    assert capsys.readouterr().out.strip() == f"package {package} is PENDING again: {status.STAGES['package'].follows}"
    row = ops_db.conn.execute("SELECT status, failure_reason FROM raw_data_package WHERE id = %s", (package,))
    assert row.fetchone() == {"status": "PENDING", "failure_reason": None}

    # The stages' ordinary runs take it from there.
    assert packaging.write_packages(ops_db, source).completed == [name]
    buffer = location_row(ops_db, "ccat/buffer")
    bundling.plan_bundles(ops_db, buffer)
    assert bundling.write_bundles(ops_db, buffer).failed == {}
    routing.route_bundles(ops_db, buffer)
    pipeline.send_all(ops_db)
    for site in ("cologne", "us"):
        assert unpacking.unpack_arrived(ops_db, location_row(ops_db, f"{site}/buffer")).failed == {}
    for site in ("cologne", "us"):
        assert archive.archive_pending(ops_db, location_row(ops_db, f"{site}/lta")).failed == {}
    packages = ops_db.conn.execute("SELECT status, archived_at FROM raw_data_package").fetchall()
    assert len(packages) == 2
    assert all(p["status"] == "COMPLETED" and p["archived_at"] is not None for p in packages)
    assert "needing intervention: 0" in status.report(ops_db)


def test_retry_refuses_what_is_not_failed_and_what_does_not_exist(
    ops_db: OpsDb, ops_db_url: str, world: World, capsys
) -> None:
    assert retry(ops_db_url, "package", world.package) == 1
    assert one_line_error(capsys) == f"package {world.package} is PENDING, not FAILED: nothing to retry"
    assert retry(ops_db_url, "bundle", 999_999) == 1
    assert one_line_error(capsys) == "no bundle 999999"
    # A transfer that arrived but could not be unpacked: the unpack is what is retried.
    arrived = inserted(world, states.UNPACK, "FAILED")
    assert retry(ops_db_url, "transfer", arrived) == 1
    assert one_line_error(capsys) == (
        f"transfer {arrived} is COMPLETED, not FAILED: nothing to retry "
        f"(its unpack is FAILED: ccat retry unpack {arrived})"
    )
    job = inserted(world, states.STAGING_JOB, "COMPLETED")
    assert retry(ops_db_url, "staging", job) == 1
    assert one_line_error(capsys) == f"staging job {job} is COMPLETED, not FAILED: nothing to retry"
    assert states.status_of(ops_db, states.PACKAGE, world.package) == Status.PENDING
    assert states.status_of(ops_db, states.STAGING_JOB, job) == Status.COMPLETED


def test_retry_leaves_alone_an_item_a_live_worker_holds(ops_db: OpsDb, ops_db_url: str, world: World, capsys) -> None:
    with unguarded(ops_db):
        ops_db.conn.execute("UPDATE raw_data_package SET status = 'FAILED', failure_reason = 'gone' WHERE id = %s",
                            (world.package,))  # fmt: skip
    with OpsDb.connect(ops_db_url) as worker, states.lease(worker, states.PACKAGE, world.package) as held:
        assert held
        assert retry(ops_db_url, "package", world.package) == 1
        assert one_line_error(capsys) == (
            f"package {world.package} is FAILED and a live worker holds it right now: left alone"
        )
        assert states.status_of(ops_db, states.PACKAGE, world.package) == Status.FAILED
    assert retry(ops_db_url, "package", world.package) == 0  # the worker is gone
    assert states.status_of(ops_db, states.PACKAGE, world.package) == Status.PENDING


@pytest.mark.parametrize("column", [states.BUNDLE, states.TRANSFER], ids=str)
def test_retry_of_a_bundle_or_transfer_clears_its_reason(ops_db: OpsDb, world: World, column) -> None:
    item = inserted(world, column, "FAILED")
    ops_db.conn.execute(f"UPDATE {column.table} SET failure_reason = 'refused' WHERE id = %s", (item,))  # noqa: S608
    assert states.retry(ops_db, column, item) == states.Retry("FAILED", retried=True)
    row = ops_db.conn.execute(f"SELECT status, failure_reason FROM {column.table} WHERE id = %s", (item,))  # noqa: S608
    assert row.fetchone() == {"status": "PENDING", "failure_reason": None}


def test_retry_of_an_archive_transfer_resets_its_tries(ops_db: OpsDb, ops_db_url: str, world: World, capsys) -> None:
    failed = inserted(world, states.ARCHIVE, "FAILED")
    ops_db.conn.execute("UPDATE long_term_archive_transfer SET attempts = 3, failure_reason = 'attempt 3: BadDigest'")
    assert retry(ops_db_url, "archive", failed) == 0
    row = ops_db.conn.execute("SELECT * FROM long_term_archive_transfer WHERE id = %s", (failed,)).fetchone()
    assert (row["status"], row["attempts"], row["failure_reason"], row["requires_intervention"]) == (
        "PENDING", 0, None, False,
    )  # fmt: skip
    # `ccat archive clear` is the same retry, for every transfer needing intervention.
    ops_db.conn.execute("UPDATE long_term_archive_transfer SET attempts = 3")  # out of tries, left PENDING
    assert main(["archive", "clear", "--db", ops_db_url]) == 0
    assert "cleared 1 archive transfer(s)" in capsys.readouterr().out
    assert ops_db.conn.execute("SELECT attempts FROM long_term_archive_transfer").fetchone()["attempts"] == 0
    assert main(["archive", "clear", "--id", str(failed), "--db", ops_db_url]) == 1
    assert one_line_error(capsys) == f"archive transfer {failed} does not need intervention"


def test_retry_of_an_unpack_sends_a_damaged_bundle_again_three_more_times(ops_db: OpsDb, world: World) -> None:
    transfer = inserted(world, states.UNPACK, "FAILED")
    ops_db.conn.execute("UPDATE data_transfer SET redeliveries = 3, unpack_failure_reason = 'damaged' WHERE id = %s",
                        (transfer,))  # fmt: skip
    assert states.retry(ops_db, states.UNPACK, transfer).retried
    row = ops_db.conn.execute("SELECT * FROM data_transfer WHERE id = %s", (transfer,)).fetchone()
    assert (row["status"], row["unpack_status"], row["unpack_failure_reason"], row["redeliveries"]) == (
        "COMPLETED", "PENDING", None, 0,
    )  # fmt: skip
    assert not states.retry(ops_db, states.UNPACK, transfer).retried  # PENDING now: nothing to retry


def test_retry_of_a_staging_job_hands_its_failed_packages_back(ops_db: OpsDb, world: World) -> None:
    job = inserted(world, states.STAGING_JOB, "FAILED")
    ops_db.conn.execute("INSERT INTO staging_job_package (staging_job_id, raw_data_package_id, status) "
                        "VALUES (%s, %s, 'FAILED')", (job, world.package))  # fmt: skip
    assert states.retry(ops_db, states.STAGING_JOB, job).retried
    assert [p.status for p in ops_db.fetch_all("staging_job_packages", job_id=job)] == ["PENDING"]
    assert states.status_of(ops_db, states.STAGING_JOB, job) == Status.PENDING


def test_only_work_items_are_retried(ops_db: OpsDb) -> None:
    with pytest.raises(ValueError, match="physical_copy.status is not a work item"):
        states.retry(ops_db, states.COPY, 1)


def test_every_stage_an_operator_retries_is_a_work_column() -> None:
    assert [stage.column for stage in status.STAGES.values()] == list(states.WORK_COLUMNS)
