"""Small builders for test data that the pipeline stages of later issues create for real."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ccat_operators import filing
from ccat_operators.opsdb import OpsDb


def write_file(root: Path, relative: str, content: bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def observation(files: list[filing.RawFile], obs_unit: str = "orion_map", minute: int = 0) -> filing.Observation:
    return filing.Observation(
        location="ccat/telescope_computer",
        instrument="Prime-Cam",
        program="commissioning",
        obs_unit=obs_unit,
        start_time=datetime(2026, 11, 20, 3, minute, tzinfo=UTC),
        end_time=datetime(2026, 11, 20, 3, minute, 30, tzinfo=UTC),
        files=tuple(files),
    )


def insert_pending_packages(db: OpsDb, count: int) -> list[int]:
    """Insert ``count`` PENDING RawDataPackages at ccat/telescope_computer (test fixture rows)."""
    rows = db.conn.execute(
        """
        WITH eou AS (
            INSERT INTO executed_obs_unit (obs_unit_id, start_time)
            SELECT ou.id, now() FROM obs_unit ou LIMIT 1
            RETURNING id
        )
        INSERT INTO raw_data_package (name, executed_obs_unit_id, instrument_module_id, source_location_id,
                                      relative_path)
        SELECT 'pkg_' || g, eou.id, (SELECT min(id) FROM instrument_module),
               (SELECT l.id FROM data_location l JOIN site s ON s.id = l.site_id
                 WHERE s.short_name = 'ccat' AND l.name = 'telescope_computer'),
               'packages/pkg_' || g || '.tar'
        FROM eou, generate_series(1, %(count)s) AS g
        RETURNING id
        """,
        {"count": count},
    ).fetchall()
    return [row["id"] for row in rows]


def ensure_obs_unit(db: OpsDb) -> None:
    program = db.fetch_value("upsert_observing_program", name="commissioning")
    db.fetch_value("upsert_obs_unit", observing_program_id=program, name="orion_map")
