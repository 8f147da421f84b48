"""Packaging on a real PostgreSQL with real files: tars, checksums, limits, failover, crash safety."""

from __future__ import annotations

import hashlib
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from ccat_operators import packaging, status, work
from ccat_operators.opsdb import OpsDb
from ccat_operators.tarstream import part_path
from tests.conftest import REPO
from tests.helpers import apply_topology, file_random_observation, location_row, run_concurrently, small_disk

SOURCE = "ccat/telescope_computer"


def set_source(document: dict, **settings) -> None:
    document["sites"]["ccat"]["locations"]["telescope_computer"]["settings"].update(settings)


@pytest.fixture
def site(ops_db: OpsDb, data_root: Path, tmp_path: Path):
    """Example topology with a 1 MB package limit; returns the source root."""
    apply_topology(ops_db, tmp_path, lambda d: set_source(d, package_size_limit="1MB"))
    return data_root / "ccat" / "telescope_computer"


def packages(db: OpsDb) -> list[dict]:
    return db.conn.execute("SELECT * FROM raw_data_package ORDER BY id").fetchall()


def tar_contents(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers()}


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def run_packaging(db: OpsDb) -> work.WorkResult:
    source = location_row(db, SOURCE)
    packaging.plan_packages(db, source)
    return packaging.write_packages(db, source)


def test_tars_hold_exactly_the_filed_files_with_verified_checksums(ops_db: OpsDb, site: Path, data_root: Path) -> None:
    filed = file_random_observation(ops_db, site, [300_000, 200_000, 450_000, 100_000, 700_000])
    filed |= file_random_observation(ops_db, site, [50_000, 60_000], module="350GHz")
    result = run_packaging(ops_db)
    assert result.failed == {}

    seen: dict[str, bytes] = {}
    for package in packages(ops_db):
        assert package["status"] == "COMPLETED"
        tar = data_root / "ccat" / "buffer" / package["relative_path"]
        assert package["checksum"] == sha256_of(tar)
        assert package["size_bytes"] == tar.stat().st_size
        contents = tar_contents(tar)
        files = ops_db.fetch_all("files_of_package", package_id=package["id"])
        assert sorted(contents) == [f.relative_path for f in files]
        for f in files:
            assert f.checksum == "sha256:" + hashlib.sha256(contents[f.relative_path]).hexdigest()
        seen |= contents
        copies = ops_db.conn.execute(
            "SELECT l.name, c.status, c.checksum FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id"
            " WHERE c.raw_data_package_id = %s ORDER BY l.name",
            (package["id"],),
        ).fetchall()
        assert copies == [
            {"name": "buffer", "status": "PRESENT", "checksum": package["checksum"]},
            {"name": "telescope_computer", "status": "PRESENT", "checksum": None},
        ]
    assert seen == filed  # every filed file, byte for byte, in exactly one package
    assert not list((data_root / "ccat" / "buffer").rglob("*.part"))


def test_size_limit_holds_and_a_larger_file_gets_its_own_flagged_package(ops_db: OpsDb, site: Path) -> None:
    file_random_observation(ops_db, site, [400_000, 400_000, 400_000, 2_500_000, 100_000, 900_000])
    run_packaging(ops_db)
    rows = packages(ops_db)
    contents = {p["id"]: ops_db.fetch_all("files_of_package", package_id=p["id"]) for p in rows}
    oversized = [p for p in rows if p["oversized"]]
    assert [len(contents[p["id"]]) for p in oversized] == [1]
    assert contents[oversized[0]["id"]][0].size_bytes == 2_500_000
    for p in rows:
        if not p["oversized"]:
            assert sum(f.size_bytes for f in contents[p["id"]]) <= 1_000_000
    assert sum(len(c) for c in contents.values()) == 6


def test_groups_never_mix_observations_or_modules(ops_db: OpsDb, site: Path) -> None:
    file_random_observation(ops_db, site, [10_000] * 3, module="280GHz", minute=0)
    file_random_observation(ops_db, site, [10_000] * 3, module="350GHz", minute=0)
    file_random_observation(ops_db, site, [10_000] * 3, module="280GHz", minute=30)
    run_packaging(ops_db)
    groups = ops_db.conn.execute(
        "SELECT raw_data_package_id, count(DISTINCT (executed_obs_unit_id, instrument_module_id)) AS n "
        "FROM raw_data_file GROUP BY 1"
    ).fetchall()
    assert len(groups) == 3 and all(g["n"] == 1 for g in groups)


def test_rerun_creates_no_duplicates(ops_db: OpsDb, site: Path) -> None:
    file_random_observation(ops_db, site, [300_000] * 7)
    run_packaging(ops_db)
    before = packages(ops_db)
    again = run_packaging(ops_db)
    assert again.completed == [] and packages(ops_db) == before


def test_overlapping_runs_package_every_file_exactly_once(ops_db: OpsDb, ops_db_url: str, site: Path) -> None:
    for minute in range(6):
        file_random_observation(ops_db, site, [150_000] * 8, minute=minute)
    run_concurrently(ops_db_url, run_packaging, 3)
    rows = packages(ops_db)
    assert {p["status"] for p in rows} == {"COMPLETED"}
    unpackaged = ops_db.conn.execute("SELECT count(*) AS n FROM raw_data_file WHERE raw_data_package_id IS NULL")
    assert unpackaged.fetchone()["n"] == 0
    members = [m for p in rows for m in tar_contents(site.parent / "buffer" / p["relative_path"])]
    assert len(members) == len(set(members)) == 48


def test_missing_or_changed_file_fails_only_its_package(ops_db: OpsDb, site: Path) -> None:
    healthy = file_random_observation(ops_db, site, [200_000] * 3, minute=0)
    missing = file_random_observation(ops_db, site, [200_000] * 3, minute=10)
    changed = file_random_observation(ops_db, site, [200_000] * 3, minute=20)
    gone = sorted(missing)[1]
    (site / gone).unlink()
    grown = sorted(changed)[0]
    with open(site / grown, "ab") as stream:
        stream.write(b"late bytes")

    result = run_packaging(ops_db)
    assert len(result.failed) == 2 and len(result.completed) == 1
    failed = [p for p in packages(ops_db) if p["status"] == "FAILED"]
    assert any(gone in p["failure_reason"] and "missing" in p["failure_reason"] for p in failed)
    assert any(grown in p["failure_reason"] and "size on disk" in p["failure_reason"] for p in failed)
    # Nothing was deleted or modified at the source.
    for relative, content in healthy.items():
        assert (site / relative).read_bytes() == content
    assert (site / grown).read_bytes() == changed[grown] + b"late bytes"
    buffer = site.parent / "buffer"
    assert not list(buffer.rglob("*.part"))
    assert len(list(buffer.rglob("*.tar"))) == 1


def test_buffer_failover(ops_db: OpsDb, data_root: Path, tmp_path: Path) -> None:
    def two_buffers(document: dict, primary_active: bool = True, reserve: str = "0") -> None:
        locations = document["sites"]["ccat"]["locations"]
        locations["buffer"]["active"] = primary_active
        locations["buffer"].setdefault("settings", {})["min_free_space"] = reserve
        locations["buffer2"] = {"type": "BUFFER", "root_path": f"{data_root}/ccat/buffer2", "priority": 2}

    apply_topology(ops_db, tmp_path, two_buffers)
    source = data_root / "ccat" / "telescope_computer"
    file_random_observation(ops_db, source, [1000], minute=0)
    run_packaging(ops_db)
    assert len(list((data_root / "ccat" / "buffer").rglob("*.tar"))) == 1

    apply_topology(ops_db, tmp_path, lambda d: two_buffers(d, primary_active=False))
    file_random_observation(ops_db, source, [1000], minute=10)
    run_packaging(ops_db)
    assert len(list((data_root / "ccat" / "buffer2").rglob("*.tar"))) == 1

    # Primary back, but lacking free space (reserve larger than any disk): next buffer.
    apply_topology(ops_db, tmp_path, lambda d: two_buffers(d, reserve="1PB"))
    file_random_observation(ops_db, source, [1000], minute=20)
    run_packaging(ops_db)
    assert len(list((data_root / "ccat" / "buffer2").rglob("*.tar"))) == 2
    buffers = ops_db.conn.execute(
        "SELECT l.name FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id "
        "WHERE l.location_type = 'BUFFER' ORDER BY c.raw_data_package_id"
    ).fetchall()
    assert [b["name"] for b in buffers] == ["buffer", "buffer2", "buffer2"]


def test_no_buffer_with_space_leaves_packages_waiting_with_the_reason(
    ops_db: OpsDb, data_root: Path, tmp_path: Path
) -> None:
    apply_topology(
        ops_db, tmp_path, lambda d: d["sites"]["ccat"]["locations"]["buffer"].update(settings={"min_free_space": "1PB"})
    )
    file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [1000, 2000])
    result = run_packaging(ops_db)
    assert result.completed == [] and len(result.waiting) == len(packages(ops_db))
    for package in packages(ops_db):
        assert package["status"] == "PENDING"
        assert package["failure_reason"].startswith("waiting: no active buffer at site ccat has room for")


WRITER = textwrap.dedent(
    """
    import signal, sys
    from ccat_operators import packaging
    from ccat_operators.opsdb import OpsDb

    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a C program dies of it

    with OpsDb.connect(sys.argv[1]) as db:
        location = db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer")
        packaging.write_packages(db, location)
    """
)
#: The writer may write no file larger than this: the kernel kills it (SIGXFSZ) mid-tar.
FILE_SIZE_LIMIT = 500_000


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_killed_writer_leaves_no_partial_tar_and_rerun_completes(
    ops_db: OpsDb, ops_db_url: str, site: Path, data_root: Path
) -> None:
    filed = file_random_observation(ops_db, site, [900_000] * 1 + [300_000] * 3)
    packaging.plan_packages(ops_db, location_row(ops_db, SOURCE))
    writer = subprocess.run([sys.executable, "-c", WRITER, ops_db_url], cwd=REPO, preexec_fn=limit_file_size)
    assert writer.returncode == -signal.SIGXFSZ  # killed by the kernel in the middle of a tar
    buffer = data_root / "ccat" / "buffer"

    in_flight = [p for p in packages(ops_db) if p["status"] == "IN_PROGRESS"]
    assert len(in_flight) == 1
    final = buffer / in_flight[0]["relative_path"]
    assert not final.exists() and part_path(final).exists()  # partial data only under .part

    result = packaging.write_packages(ops_db, location_row(ops_db, SOURCE))
    assert in_flight[0]["name"] in result.reclaimed
    assert {p["status"] for p in packages(ops_db)} == {"COMPLETED"}
    assert not list(buffer.rglob("*.part"))
    members = {}
    for package in packages(ops_db):
        tar = buffer / package["relative_path"]
        assert package["checksum"] == sha256_of(tar)
        members |= tar_contents(tar)
    assert members == filed
    copies = ops_db.conn.execute("SELECT count(*) AS n FROM physical_copy").fetchone()["n"]
    assert copies == 2 * len(packages(ops_db))


def test_planning_in_small_batches_keeps_groups_whole(ops_db: OpsDb, site: Path) -> None:
    for minute in range(4):
        file_random_observation(ops_db, site, [1000] * 3, minute=minute)
    result = packaging.plan_packages(ops_db, location_row(ops_db, SOURCE), batch=4)
    assert result.files == 12
    sizes = ops_db.conn.execute(
        "SELECT raw_data_package_id, count(*) AS n FROM raw_data_file GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [row["n"] for row in sizes] == [3, 3, 3, 3]


def two_buffers(data_root: Path):
    """The site's primary buffer, and a second one (priority 2) to fail over to."""

    def mutate(document: dict) -> None:
        document["sites"]["ccat"]["locations"]["buffer2"] = {
            "type": "BUFFER", "root_path": f"{data_root}/ccat/buffer2", "priority": 2,
        }  # fmt: skip

    return mutate


def test_the_exact_tar_size_is_reserved_and_a_full_buffer_fails_over(
    ops_db: OpsDb, data_root: Path, tmp_path: Path
) -> None:
    """2,000 files of 1,000 B make a 3,082,240 B tar: more than the 2 MB their sizes sum to."""
    apply_topology(ops_db, tmp_path, two_buffers(data_root))
    with small_disk(data_root / "ccat" / "buffer", "2500k"):
        file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [1000] * 2000)
        result = run_packaging(ops_db)
        assert len(result.completed) == 1 and result.waiting == {}
        assert list((data_root / "ccat" / "buffer").rglob("*")) == []  # nothing was even started there
    (package,) = packages(ops_db)
    tar = data_root / "ccat" / "buffer2" / package["relative_path"]
    assert tar.stat().st_size == package["size_bytes"] == 3_082_240
    assert package["checksum"] == sha256_of(tar)


def test_a_buffer_that_fills_up_while_writing_hands_the_package_to_the_next(
    ops_db: OpsDb, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_topology(ops_db, tmp_path, two_buffers(data_root))
    real_usage = shutil.disk_usage
    with small_disk(data_root / "ccat" / "buffer", "200k") as small:
        # The primary buffer claims room it does not have: the write itself runs out of space.
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=10**12)
                            if Path(p) == small else real_usage(p))  # fmt: skip
        file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [300_000])
        result = run_packaging(ops_db)
        assert len(result.completed) == 1
        assert list(small.rglob("*.part")) == []  # the failed try left nothing behind
    (package,) = packages(ops_db)
    assert sha256_of(data_root / "ccat" / "buffer2" / package["relative_path"]) == package["checksum"]


def test_with_no_buffer_left_a_package_waits_and_the_others_go_on(
    ops_db: OpsDb, data_root: Path, tmp_path: Path
) -> None:
    with small_disk(data_root / "ccat" / "buffer", "500k"):
        apply_topology(ops_db, tmp_path)
        file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [900_000], minute=0)
        file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [20_000], minute=1)
        result = run_packaging(ops_db)
        big, small = packages(ops_db)
        assert result.completed == [small["name"]] and list(result.waiting) == [big["name"]]
        assert big["status"] == "PENDING" and big["failure_reason"].startswith("waiting: no active buffer")
        report = status.report(ops_db)
        assert f"{big['name']}: waiting: no active buffer" in report
        # Another run (room still short): it waits again, and the run ends.
        assert list(run_packaging(ops_db).waiting) == [big["name"]]
