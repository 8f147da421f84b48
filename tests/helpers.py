"""Small builders for test data that the pipeline stages of later issues create for real."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def apply_topology(db: OpsDb, tmp_path: Path, mutate=None):
    """Apply the example topology, optionally changed by ``mutate(document)`` first."""
    import yaml

    from ccat_operators import topology
    from tests.conftest import EXAMPLE_TOPOLOGY

    document = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    if mutate is not None:
        mutate(document)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    loaded = topology.load(path)
    topology.apply(db, loaded)
    for location in loaded.locations:
        if "root_path" in location.storage_details:
            Path(location.storage_details["root_path"]).mkdir(parents=True, exist_ok=True)
    return loaded, path


def location_row(db: OpsDb, key: str) -> dict:
    site, _, name = key.partition("/")
    return db.fetch_one("data_location_by_key", site=site, name=name)


def file_random_observation(
    db: OpsDb,
    root: Path,
    sizes: list[int],
    module: str = "280GHz",
    obs_unit: str = "orion_map",
    minute: int = 0,
    seed: int = 0,
) -> dict[str, bytes]:
    """Write files of the given sizes under ``root`` and file them as one observation."""
    import random

    rng = random.Random(seed * 1000 + minute)
    contents = {}
    for index, size in enumerate(sizes):
        relative = f"primecam/{obs_unit}_{minute:02d}/{module}/scan_{index:04d}.dat"
        contents[relative] = rng.randbytes(size)
        write_file(root, relative, contents[relative])
    filing.file_observation(
        db, observation([filing.RawFile(p, module) for p in contents], obs_unit=obs_unit, minute=minute)
    )
    return contents


def run_concurrently(url: str, work, count: int) -> list:
    """Run ``work(db)`` in ``count`` threads at once, each on its own connection; re-raise any error."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(count)

    def one(_: int):
        with OpsDb.connect(url) as db:
            start.wait()
            return work(db)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@contextmanager
def unguarded(db: OpsDb) -> Iterator[OpsDb]:
    """A transaction past ops-db's state-machine guard, for building a test's world directly.

    ``session_replication_role = replica`` switches triggers off (the test server's user
    is a superuser); production code never does this.
    """
    with db.transaction():
        db.conn.execute("SET LOCAL session_replication_role = replica")
        yield db


def ssh_keygen(path: Path, passphrase: str = "") -> Path:
    """A new ed25519 key pair at ``path`` (and ``path.pub``)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


def connection(monkeypatch, conn_id: str, **fields) -> str:
    """An Airflow SSH connection in the environment, as a deployment or secrets backend would give it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "ssh", **fields}))
    return conn_id


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is ``pgid``."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found


def wait_for(path: Path, timeout: float = 30) -> None:
    """Wait until ``path`` exists and holds something."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@contextmanager
def small_disk(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``1m``) mounted at ``directory`` for the block: a disk that fills up."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)
