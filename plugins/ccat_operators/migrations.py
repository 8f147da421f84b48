"""Ordered SQL migrations for ops-db (``ccat db upgrade``).

Migration files are ``include/sql/migrations/NNNN_description.sql`` and are applied in
version order, all in one transaction under an advisory lock, each recorded in
``schema_migrations``: either every pending file lands or none does. Re-running is a
no-op. A file that was applied and has since been edited is refused: the database no
longer matches the file, and silently carrying on would hide that.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ccat_operators.opsdb import OpsDb
from ccat_operators.paths import sql_dir

MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The migrations directory and the database disagree."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    """Return the migration files in version order, refusing malformed or duplicate names."""
    directory = directory or sql_dir() / "migrations"
    migrations: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: migration files are named NNNN_description.sql")
        version = match["version"]
        if version in migrations:
            raise MigrationError(f"{path}: version {version} also used by {migrations[version].path.name}")
        migrations[version] = Migration(version, path)
    return [migrations[v] for v in sorted(migrations)]


def upgrade(db: OpsDb, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet applied; return the file names applied now.

    Raises MigrationError, before applying anything, if an applied file changed or
    disappeared.
    """
    migrations = discover(directory)
    applied_now: list[str] = []
    with db.transaction():
        # Lock first: concurrent CREATE TABLE IF NOT EXISTS races in the catalog.
        db.fetch_value("lock_schema_migrations")
        db.execute("create_schema_migrations")
        applied = {row.version: row for row in db.fetch_all("applied_migrations")}
        _check_applied_unchanged(migrations, applied)
        for migration in migrations:
            if migration.version in applied:
                continue
            db.execute_script(migration.text)
            db.execute(
                "record_migration",
                version=migration.version,
                filename=migration.path.name,
                sha256=migration.sha256,
            )
            applied_now.append(migration.path.name)
    return applied_now


def _check_applied_unchanged(migrations: list[Migration], applied: dict[str, dict]) -> None:
    by_version = {m.version: m for m in migrations}
    for version, row in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"ops-db has migration {row.filename} applied, which this version of ccat does not know "
                "(it is missing from the migrations directory): upgrade ccat"
            )
        if migration.sha256 != row.sha256:
            raise MigrationError(
                f"{migration.path}: content changed after it was applied on {row.applied_at:%Y-%m-%d %H:%M} "
                f"(recorded sha256 {row.sha256[:12]}…, file now {migration.sha256[:12]}…); "
                "add a new migration instead of editing an applied one"
            )


def status(db: OpsDb, directory: Path | None = None) -> list[tuple[str, bool]]:
    """Return ``(file name, applied?)`` for every migration file.

    Raises MigrationError, as :func:`upgrade` would, if ops-db has a migration applied
    that has no file here (ops-db is ahead of this code) or whose file has changed.
    """
    migrations = discover(directory)
    db.execute("create_schema_migrations")
    applied = {row.version: row for row in db.fetch_all("applied_migrations")}
    _check_applied_unchanged(migrations, applied)
    return [(m.path.name, m.version in applied) for m in migrations]
