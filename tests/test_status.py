"""`ccat status` on a seeded ops-db: counts, what waits, per-observation progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccat_operators import bundling, monitoring, packaging, routing, states, status
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.helpers import ensure_obs_unit, file_random_observation, insert_pending_packages, location_row
from tests.test_states import World


def test_status_shows_stages_waiting_work_and_observation_progress(
    ops_db: OpsDb, ops_db_url: str, data_root: Path, tmp_path: Path, capsys
) -> None:
    pipeline.setup(ops_db, tmp_path)
    source = location_row(ops_db, "ccat/telescope_computer")
    for minute in (0, 10):
        file_random_observation(ops_db, Path(source.root_path), [200_000, 200_000], minute=minute)
    packaging.plan_packages(ops_db, source)
    packaging.write_packages(ops_db, source)
    buffer = location_row(ops_db, "ccat/buffer")
    bundling.plan_bundles(ops_db, buffer)
    bundling.write_bundles(ops_db, buffer)
    routing.route_bundles(ops_db, buffer)
    ops_db.conn.execute("UPDATE data_transfer SET status_changed_at = now() - interval '2 hours'")

    text = status.report(ops_db, now=datetime.now(UTC) + timedelta(minutes=1))
    lines = text.splitlines()
    assert lines[0].split() == ["stage", "PENDING", "SCHEDULED", "IN_PROGRESS", "COMPLETED", "FAILED"]
    transfers = next(line for line in lines if line.startswith("data_transfer "))
    assert transfers.split()[1:] == ["2", "0", "0", "0", "0"]
    assert "oldest waiting: data_transfer PENDING, for 2 h" in text
    assert "needing intervention: 0" in text
    progress = [line.strip() for line in lines if line.strip().startswith("observation ")]
    assert len(progress) == 2
    assert all("0/2 packages archived, 2 transferring for 2 h" in line for line in progress)

    assert main(["status", "--db", ops_db_url]) == 0
    assert "unfinished observations:" in capsys.readouterr().out


def test_age_is_short_and_human() -> None:
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert [status.age(now - timedelta(seconds=s), now) for s in (5, 600, 7300, 200_000)] == [
        "5 s", "10 min", "2 h", "2 d",
    ]  # fmt: skip


def test_needing_intervention_counts_failed_work_of_every_stage_with_what_to_do(
    ops_db: OpsDb, example_topology
) -> None:
    ensure_obs_unit(ops_db)
    packages = insert_pending_packages(ops_db, 3)
    world = World(ops_db, packages[0])
    failed = {column: int(world.insert(column, "FAILED").removeprefix("id = ")) for column in states.WORK_COLUMNS}
    ops_db.conn.execute("UPDATE raw_data_package SET status = 'FAILED', failure_reason = %s WHERE id <> %s",
                        ("line one\n  line two " + "x" * 300, failed[states.PACKAGE]))  # fmt: skip
    # An archive transfer out of tries but left PENDING (its worker died in between) waits too.
    ops_db.conn.execute("UPDATE long_term_archive_transfer SET status = 'PENDING', attempts = 3")

    text = status.report(ops_db, shown=2)
    lines = text.splitlines()
    assert "needing intervention: 9" in lines  # 4 packages, a bundle, transfer, unpack, archive transfer, job
    assert monitoring.health_summary(ops_db).lines()[-1] == "needing intervention: 9"
    for stage in status.STAGES.values():
        heading = next(line for line in lines if line.startswith(f"  {stage.plural} ("))
        assert heading.endswith(f"): {stage.fix}, then:")
    assert "  packages (4): " in text
    assert sum(line.startswith("    ccat retry package ") for line in lines) == 2
    assert "    ... and 2 more packages" in lines
    assert f"    ccat retry unpack {failed[states.UNPACK]}  # " in text
    assert f"    ccat retry archive {failed[states.ARCHIVE]}  # " in text
    assert f"    ccat retry staging {failed[states.STAGING_JOB]}  # " in text
    assert "      line one line two xxx" in text  # the reason, on one line
    assert max(len(line) for line in lines if line.startswith("      line one")) == 6 + status.REASON_WIDTH
    assert "      no reason recorded" in lines


def test_a_reason_is_one_line_cut_where_too_long() -> None:
    assert status.one_line("a\n b\tc") == "a b c"
    assert status.one_line("x" * 300, width=10) == "x" * 9 + "…"
    assert status.one_line(None) == "no reason recorded"
