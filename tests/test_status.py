"""`ccat status` on a seeded ops-db: counts, what waits, per-observation progress."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccat_operators import bundling, packaging, routing, status
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.helpers import file_random_observation, location_row


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
