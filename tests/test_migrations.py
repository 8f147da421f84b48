"""`ccat db upgrade`: ordered, recorded, idempotent, and refusing tampered history."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from ccat_operators import migrations
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from ccat_operators.paths import sql_dir
from tests.helpers import run_concurrently


def table_names(db: OpsDb) -> set[str]:
    rows = db.conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row["tablename"] for row in rows}


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "migrations"
    shutil.copytree(sql_dir() / "migrations", directory)
    return directory


def test_upgrade_applies_every_file_once(empty_db_url: str) -> None:
    with OpsDb.connect(empty_db_url) as db:
        applied = migrations.upgrade(db)
        assert applied == [m.path.name for m in migrations.discover()]
        tables = table_names(db)
        assert {"site", "data_location", "raw_data_file", "raw_data_package", "physical_copy"} <= tables

        assert migrations.upgrade(db) == []
        assert table_names(db) == tables
        recorded = db.fetch_all("applied_migrations")
        assert [row.filename for row in recorded] == applied
        assert all(migrations.status(db)[i][1] for i in range(len(applied)))


def test_edited_migration_is_refused_and_nothing_else_applies(empty_db_url: str, migrations_dir: Path) -> None:
    with OpsDb.connect(empty_db_url) as db:
        migrations.upgrade(db, migrations_dir)
        first = sorted(migrations_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- an innocent-looking edit\n")
        (migrations_dir / "9999_new_table.sql").write_text("CREATE TABLE should_not_exist (id int);")

        with pytest.raises(migrations.MigrationError, match=f"{first.name}: content changed after it was applied"):
            migrations.upgrade(db, migrations_dir)
        assert "should_not_exist" not in table_names(db)


def test_applied_migration_missing_from_directory_is_refused(empty_db_url: str, migrations_dir: Path) -> None:
    with OpsDb.connect(empty_db_url) as db:
        migrations.upgrade(db, migrations_dir)
        for path in migrations_dir.glob("*.sql"):
            path.unlink()
        with pytest.raises(migrations.MigrationError, match="missing from the migrations directory"):
            migrations.upgrade(db, migrations_dir)


def test_failing_migration_applies_nothing(empty_db_url: str, migrations_dir: Path) -> None:
    (migrations_dir / "9998_good.sql").write_text("CREATE TABLE good_one (id int);")
    (migrations_dir / "9999_bad.sql").write_text("CREATE TABLE bad_one (id int); SELECT no_such_function();")
    with OpsDb.connect(empty_db_url) as db:
        with pytest.raises(psycopg.errors.UndefinedFunction, match="no_such_function"):
            migrations.upgrade(db, migrations_dir)
        assert table_names(db) == set()


def test_badly_named_migration_is_refused(migrations_dir: Path) -> None:
    (migrations_dir / "add-table.sql").write_text("SELECT 1;")
    with pytest.raises(migrations.MigrationError, match="add-table.sql: migration files are named"):
        migrations.discover(migrations_dir)


def test_concurrent_upgrades_apply_once(empty_db_url: str) -> None:
    results = run_concurrently(empty_db_url, migrations.upgrade, 3)
    assert sorted(len(r) for r in results) == [0, 0, len(migrations.discover())]


def test_cli_upgrade_reports_and_is_idempotent(empty_db_url: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["db", "upgrade", "--db", empty_db_url]) == 0
    assert "applied 0001_core_schema.sql" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", empty_db_url]) == 0
    assert capsys.readouterr().out.strip() == "ops-db is up to date"


def test_status_refuses_a_migration_this_code_does_not_know(ops_db_url: str, capsys: pytest.CaptureFixture) -> None:
    with OpsDb.connect(ops_db_url) as db:
        db.execute("record_migration", version="0099", filename="0099_x.sql", sha256="0" * 64)
        with pytest.raises(migrations.MigrationError, match="ops-db has migration 0099_x.sql applied"):
            migrations.status(db)
    assert main(["db", "status", "--db", ops_db_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "ccat: error: ops-db has migration 0099_x.sql applied, which this version of ccat does not know "
        "(it is missing from the migrations directory): upgrade ccat\n"
    )
    assert main(["db", "upgrade", "--db", ops_db_url]) == 1
    assert "ops-db has migration 0099_x.sql applied" in capsys.readouterr().err


def test_status_refuses_an_edited_applied_migration(empty_db_url: str, migrations_dir: Path) -> None:
    with OpsDb.connect(empty_db_url) as db:
        migrations.upgrade(db, migrations_dir)
        first = sorted(migrations_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(migrations.MigrationError, match=f"{first.name}: content changed after it was applied"):
            migrations.status(db, migrations_dir)


def test_status_of_an_empty_database_lists_everything_pending(empty_db_url: str, capsys) -> None:
    assert main(["db", "status", "--db", empty_db_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"pending  {m.path.name}" for m in migrations.discover()]
