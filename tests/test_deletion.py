"""Deletion: the full lifecycle on real data, and a property-based test of the safety rules."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccat_dev.s3 import LocalS3
from ccat_operators import archive, deletion
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.helpers import apply_topology, location_row, unguarded

DATA_CHECKSUM = "sha256:" + hashlib.sha256(b"data").hexdigest()  # what the World writes in every file
DELETING = ("ccat/telescope_computer", "ccat/buffer", "cologne/buffer", "us/buffer", "cologne/ramses")


def copies(db: OpsDb) -> list[dict]:
    return db.conn.execute(
        "SELECT c.*, s.short_name || '/' || l.name AS location, l.location_type, l.root_path "
        "FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id JOIN site s ON s.id = l.site_id "
        "ORDER BY c.id"
    ).fetchall()


def test_full_lifecycle_cleans_everything_but_the_archives(
    ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.setup(ops_db, tmp_path, s3_server)
    pipeline.s3_connections(monkeypatch, s3_server)
    ops_db.conn.execute("UPDATE data_location SET s3_bucket = s3_bucket || '-lifecycle' WHERE storage_type = 'S3'")
    filed = pipeline.deliver(ops_db)
    for site in ("cologne", "us"):
        assert archive.archive_pending(ops_db, location_row(ops_db, f"{site}/lta")).failed == {}
    # Before the retention periods pass nothing goes (except bundles, unpacked everywhere).
    for key in DELETING:
        deletion.run_deletions(ops_db, location_row(ops_db, key), under_pressure=False)
    assert {c["status"] for c in copies(ops_db) if c["raw_data_package_id"]} == {"PRESENT"}

    ops_db.conn.execute("UPDATE physical_copy SET created_at = created_at - interval '30 days'")
    for key in DELETING:
        deletion.run_deletions(ops_db, location_row(ops_db, key), under_pressure=False)
    by_type: dict[str, set[str]] = {}
    for copy in copies(ops_db):
        by_type.setdefault(copy["location_type"], set()).add(copy["status"])
    assert by_type == {"SOURCE": {"DELETED"}, "BUFFER": {"DELETED"}, "LONG_TERM_ARCHIVE": {"PRESENT"}}
    for relative in filed:
        assert not (data_root / "ccat" / "telescope_computer" / relative).exists()
    assert not list((data_root / "cologne" / "buffer").rglob("*.tar"))
    # The archives still hold every package, byte for byte.
    client = s3_server.client()
    for package in ops_db.conn.execute("SELECT * FROM raw_data_package").fetchall():
        for site in ("cologne", "us"):
            lta = location_row(ops_db, f"{site}/lta")
            body = client.get_object(Bucket=lta.s3_bucket, Key=package["relative_path"])["Body"].read()
            assert "sha256:" + hashlib.sha256(body).hexdigest() == package["checksum"]


@pytest.fixture
def deletable_world(ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server: LocalS3,
                    monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:  # fmt: skip
    """Packages archived in both archives, every copy past its retention period."""
    filed = pipeline.archive_world(ops_db, tmp_path, s3_server, monkeypatch)
    for site in ("cologne", "us"):
        assert archive.archive_pending(ops_db, location_row(ops_db, f"{site}/lta")).failed == {}
    ops_db.conn.execute("UPDATE physical_copy SET created_at = created_at - interval '30 days'")
    return filed


def source_copy_of(db: OpsDb, relative: str) -> dict:
    return db.conn.execute(
        "SELECT c.* FROM physical_copy c JOIN raw_data_file f ON f.raw_data_package_id = c.raw_data_package_id"
        " JOIN data_location l ON l.id = c.data_location_id"
        " WHERE f.relative_path = %s AND l.location_type = 'SOURCE'", (relative,),
    ).fetchone()  # fmt: skip


def delete_at(db: OpsDb, key: str) -> deletion.DeletionResult:
    return deletion.run_deletions(db, location_row(db, key), under_pressure=False)


def test_a_source_directory_swapped_for_a_link_outside_is_not_deleted_through(
    ops_db: OpsDb, deletable_world: dict[str, bytes], data_root: Path, tmp_path: Path
) -> None:
    source = data_root / "ccat" / "telescope_computer"
    relative = next(iter(deletable_world))
    directory = (source / relative).parent
    outside = tmp_path / "outside"
    directory.rename(outside)  # the same files, now outside the root...
    directory.symlink_to(outside, target_is_directory=True)  # ...reached through a link
    result = delete_at(ops_db, "ccat/telescope_computer")
    copy = source_copy_of(ops_db, relative)
    assert copy["id"] in result.failed and copy["status"] == "DELETION_FAILED"
    assert "outside the root" in copy["failure_reason"]
    assert (outside / Path(relative).name).read_bytes() == deletable_world[relative]
    # The other observation's files, untouched by the link, went.
    others = [r for r in deletable_world if Path(r).parent != Path(relative).parent]
    assert others and not any((source / r).exists() for r in others)


def test_a_source_file_replaced_after_filing_is_not_deleted(
    ops_db: OpsDb, deletable_world: dict[str, bytes], data_root: Path
) -> None:
    source = data_root / "ccat" / "telescope_computer"
    relative = next(iter(deletable_world))
    replacement = bytes(len(deletable_world[relative]))  # same size, other bytes, another inode
    (source / relative).unlink()
    (source / relative).write_bytes(replacement)
    delete_at(ops_db, "ccat/telescope_computer")
    copy = source_copy_of(ops_db, relative)
    assert copy["status"] == "DELETION_FAILED" and "changed since it was filed" in copy["failure_reason"]
    assert (source / relative).read_bytes() == replacement
    # Nothing of that copy went: its other file is still there too.
    siblings = [r for r in deletable_world if Path(r).parent == Path(relative).parent and r != relative]
    assert siblings and all((source / r).exists() for r in siblings)


def test_a_source_file_copied_back_identically_is_deleted(
    ops_db: OpsDb, deletable_world: dict[str, bytes], data_root: Path
) -> None:
    source = data_root / "ccat" / "telescope_computer"
    relative = next(iter(deletable_world))
    (source / relative).unlink()
    (source / relative).write_bytes(deletable_world[relative])  # new inode, the filed bytes: re-hashed, same
    delete_at(ops_db, "ccat/telescope_computer")
    assert source_copy_of(ops_db, relative)["status"] == "DELETED"
    assert not (source / relative).exists()


def test_a_buffer_tar_replaced_by_a_link_is_not_deleted_through(
    ops_db: OpsDb, deletable_world: dict[str, bytes], data_root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.tar"
    package = ops_db.conn.execute("SELECT * FROM raw_data_package ORDER BY id LIMIT 1").fetchone()
    tar = data_root / "cologne" / "buffer" / package["relative_path"]
    victim.write_bytes(tar.read_bytes())
    tar.unlink()
    tar.symlink_to(victim)
    delete_at(ops_db, "cologne/buffer")
    copy = ops_db.conn.execute(
        "SELECT * FROM physical_copy WHERE raw_data_package_id = %s AND data_location_id = %s",
        (package["id"], location_row(ops_db, "cologne/buffer").id),
    ).fetchone()
    assert copy["status"] == "DELETION_FAILED" and "symbolic link" in copy["failure_reason"]
    assert victim.exists() and tar.is_symlink()


# -- property-based ---------------------------------------------------------------------

SITES = ("cologne", "us")
TRANSFER_STATES = st.sampled_from(["PENDING", "IN_PROGRESS", "FAILED", "COMPLETED"])
ARCHIVE_STATES = st.sampled_from([None, "PENDING", "FAILED", "COMPLETED"])

package_strategy = st.fixed_dictionaries(
    {
        "transfer": TRANSFER_STATES,  # primary leg (to cologne) of the package's bundle
        "unpacked": st.booleans(),
        "fanout": TRANSFER_STATES,  # secondary leg (cologne -> us)
        "archive": st.fixed_dictionaries({site: ARCHIVE_STATES for site in SITES}),
        "age_days": st.integers(min_value=0, max_value=20),
    }
)
action_strategy = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(DELETING[:4]), st.booleans()),
    st.tuples(st.just("archive"), st.integers(0, 3), st.sampled_from(SITES), st.booleans()),
    st.tuples(st.just("transfer"), st.integers(0, 3)),
    st.tuples(st.just("age"), st.integers(1, 10)),
)


class World:
    """Packages in every stage of the pipeline, written straight into ops-db and onto disk."""

    def __init__(self, db: OpsDb, root: Path) -> None:
        self.db, self.root = db, root
        self.loc = {key: location_row(db, key) for key in (*DELETING, "cologne/lta", "us/lta")}

    def reset(self) -> None:
        self.db.conn.execute(
            "TRUNCATE physical_copy, long_term_archive_transfer, data_transfer_log, data_transfer, raw_data_file,"
            " raw_data_package, data_transfer_package, executed_obs_unit RESTART IDENTITY CASCADE"
        )

    def sql(self, text: str, *params):
        with unguarded(self.db):  # the world is written straight into ops-db, in any state
            return self.db.conn.execute(text, params)

    def copy(self, package: int, key: str, path: str, verified: bool = True, age: int = 0, write: bool = True) -> None:
        self.sql(
            "INSERT INTO physical_copy (data_location_id, raw_data_package_id, path, checksum, status, verified_at,"
            " created_at) VALUES (%s, %s, %s, %s, 'PRESENT', CASE WHEN %s THEN now() END,"
            " now() - %s * interval '1 day') ON CONFLICT DO NOTHING",
            self.loc[key].id, package, path, None, verified, age,
        )  # fmt: skip
        if write and self.loc[key].location_type != "LONG_TERM_ARCHIVE":
            target = Path(self.loc[key].root_path) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"data")

    def build(self, specs: list[dict]) -> None:
        unit = self.sql("SELECT id FROM obs_unit LIMIT 1").fetchone()["id"]
        module = self.sql("SELECT min(id) AS id FROM instrument_module").fetchone()["id"]
        for index, spec in enumerate(specs):
            eou = self.sql("INSERT INTO executed_obs_unit (obs_unit_id, start_time) VALUES (%s, now() - %s * "
                           "interval '1 minute') RETURNING id", unit, index).fetchone()["id"]  # fmt: skip
            bundle = self.sql(
                "INSERT INTO data_transfer_package (name, origin_location_id, status, routed_at) "
                "VALUES (%s, %s, 'COMPLETED', now()) RETURNING id", f"b{index}", self.loc["ccat/buffer"].id
            ).fetchone()["id"]  # fmt: skip
            package = self.sql(
                "INSERT INTO raw_data_package (name, executed_obs_unit_id, instrument_module_id, source_location_id,"
                " relative_path, size_bytes, checksum, status, data_transfer_package_id) VALUES (%s, %s, %s, %s, %s,"
                " 4, %s, 'COMPLETED', %s) RETURNING id",
                f"p{index}", eou, module, self.loc["ccat/telescope_computer"].id, f"raw_data_packages/p{index}.tar",
                "sha256:" + "0" * 64, bundle,
            ).fetchone()["id"]  # fmt: skip
            self.sql(
                "INSERT INTO raw_data_file (executed_obs_unit_id, instrument_module_id, source_location_id,"
                " relative_path, size_bytes, checksum, raw_data_package_id) VALUES (%s, %s, %s, %s, 4, %s, %s)",
                eou, module, self.loc["ccat/telescope_computer"].id, f"raw/p{index}/f.dat", DATA_CHECKSUM,
                package,
            )  # fmt: skip
            age = spec["age_days"]
            # The source copy is the package's raw files (one here), at their directory.
            self.copy(package, "ccat/telescope_computer", f"raw/p{index}", verified=False, age=age, write=False)
            path = Path(self.loc["ccat/telescope_computer"].root_path) / f"raw/p{index}/f.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"data")
            self.copy(package, "ccat/buffer", f"raw_data_packages/p{index}.tar", age=age)
            primary = self.sql(
                "INSERT INTO data_transfer (data_transfer_package_id, origin_location_id, destination_location_id,"
                " status, unpack_status) VALUES (%s, %s, %s, %s, %s) RETURNING id",
                bundle, self.loc["ccat/buffer"].id, self.loc["cologne/buffer"].id, spec["transfer"],
                "COMPLETED" if spec["transfer"] == "COMPLETED" and spec["unpacked"] else "PENDING",
            ).fetchone()["id"]  # fmt: skip
            arrived_cologne = spec["transfer"] == "COMPLETED" and spec["unpacked"]
            fanout = spec["fanout"] if arrived_cologne else "PENDING"
            self.sql(
                "INSERT INTO data_transfer (data_transfer_package_id, origin_location_id, destination_location_id,"
                " status, unpack_status, depends_on_transfer_id) VALUES (%s, %s, %s, %s, %s, %s)",
                bundle, self.loc["cologne/buffer"].id, self.loc["us/buffer"].id, fanout,
                "COMPLETED" if fanout == "COMPLETED" else "PENDING", primary,
            )  # fmt: skip
            arrived = {"cologne": arrived_cologne, "us": arrived_cologne and fanout == "COMPLETED"}
            for site in SITES:
                if not arrived[site]:
                    continue
                self.copy(package, f"{site}/buffer", f"raw_data_packages/p{index}.tar", age=age)
                state = spec["archive"][site]
                if state is not None:
                    self.archive_transfer(package, site, state)
            self.db.fetch_value("mark_package_archived", id=package)

    def archive_transfer(self, package: int, site: str, state: str) -> None:
        self.sql(
            "INSERT INTO long_term_archive_transfer (raw_data_package_id, origin_location_id, destination_location_id,"
            " status, attempts) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (raw_data_package_id, destination_location_id)"
            " DO UPDATE SET status = EXCLUDED.status",
            package, self.loc[f"{site}/buffer"].id, self.loc[f"{site}/lta"].id, state,
            3 if state == "FAILED" else 1,
        )  # fmt: skip
        if state == "COMPLETED":
            self.copy(package, f"{site}/lta", f"raw_data_packages/p{package}.tar")
        self.db.fetch_value("mark_package_archived", id=package)

    def state(self) -> dict[int, dict]:
        """Per package: its copies, archive copies, and what is unfinished."""
        result = {}
        for package in self.sql("SELECT * FROM raw_data_package").fetchall():
            rows = self.sql(
                "SELECT c.id, c.status, c.verified_at IS NOT NULL AS verified, l.location_type, s.short_name || '/' ||"
                " l.name AS key FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id JOIN site s ON"
                " s.id = l.site_id WHERE c.raw_data_package_id = %s", package["id"],
            ).fetchall()  # fmt: skip
            unfinished_transfer = self.sql(
                "SELECT count(*) AS n FROM data_transfer WHERE data_transfer_package_id = %s AND (status <> 'COMPLETED'"
                " OR (unpack AND unpack_status <> 'COMPLETED'))", package["data_transfer_package_id"],
            ).fetchone()["n"]  # fmt: skip
            unfinished_archive = self.sql(
                "SELECT count(*) AS n FROM long_term_archive_transfer WHERE raw_data_package_id = %s AND status <>"
                " 'COMPLETED'", package["id"],
            ).fetchone()["n"]  # fmt: skip
            result[package["id"]] = {
                "archived": package["archived_at"] is not None,
                "copies": {row["key"]: row for row in rows},
                "lta_copies": sum(
                    1
                    for r in rows
                    if r["location_type"] == "LONG_TERM_ARCHIVE" and r["status"] == "PRESENT" and r["verified"]
                ),
                "unfinished_transfers": unfinished_transfer,
                "unfinished_archive": unfinished_archive,
            }
        return result


@pytest.fixture
def world(ops_db: OpsDb, data_root: Path, tmp_path: Path) -> World:
    apply_topology(ops_db, tmp_path, pipeline.local_topology(None))
    program = ops_db.fetch_value("upsert_observing_program", name="p")
    ops_db.fetch_value("upsert_obs_unit", observing_program_id=program, name="u")
    return World(ops_db, data_root)


def check_deletion_step(before: dict[int, dict], after: dict[int, dict], under_pressure: bool) -> None:
    for package, old in before.items():
        new = after[package]
        for key, copy in new["copies"].items():
            was = old["copies"].get(key)
            if was is None or copy["status"] != "DELETED" or was["status"] == "DELETED":
                continue
            kind = copy["location_type"]
            assert kind != "LONG_TERM_ARCHIVE", "an archive copy was deleted"
            if kind == "SOURCE":
                assert old["archived"] and old["lta_copies"] >= 1, "source deleted before it was archived"
                assert old["unfinished_transfers"] == 0, "source deleted while a transfer of it was unfinished"
                assert old["unfinished_archive"] == 0, "source deleted while its archiving was unfinished"
            if kind == "BUFFER":
                assert old["lta_copies"] >= 1, "buffer copy deleted without a verified archive copy"
                others = [c for k, c in old["copies"].items() if k != key and c["status"] == "PRESENT"
                          and c["verified"] and c["location_type"] in ("BUFFER", "LONG_TERM_ARCHIVE")]  # fmt: skip
                assert others, "the last verified copy was deleted"
                if not under_pressure:
                    assert old["archived"] and old["unfinished_transfers"] == 0, "buffer copy deleted too early"
        # Never lose the data: a verified copy, or the source files, always remain.
        alive = [c for c in new["copies"].values() if c["status"] == "PRESENT"
                 and (c["verified"] or c["location_type"] == "SOURCE")]  # fmt: skip
        assert alive, f"package {package} has no copy left"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(package_strategy, min_size=1, max_size=3), actions=st.lists(action_strategy, max_size=8))
def test_deletion_never_breaks_the_safety_rules(world: World, specs: list[dict], actions: list[tuple]) -> None:
    world.reset()
    world.build(specs)
    packages = sorted(world.state())
    for action in [*actions, ("delete", "ccat/telescope_computer", False), ("delete", "ccat/buffer", True)]:
        kind = action[0]
        if kind == "delete":
            _, key, pressure = action
            before = world.state()
            deletion.run_deletions(world.db, world.loc[key], under_pressure=pressure)
            check_deletion_step(before, world.state(), pressure)
        elif kind == "archive":
            _, index, site, success = action
            package = packages[index % len(packages)]
            buffer_copy = world.state()[package]["copies"].get(f"{site}/buffer")
            if buffer_copy is not None and buffer_copy["status"] == "PRESENT":
                world.archive_transfer(package, site, "COMPLETED" if success else "PENDING")
        elif kind == "transfer":
            package = packages[action[1] % len(packages)]
            world.sql("UPDATE data_transfer SET status = 'COMPLETED', unpack_status = 'COMPLETED' "
                      "WHERE data_transfer_package_id = (SELECT data_transfer_package_id FROM raw_data_package "
                      "WHERE id = %s) AND depends_on_transfer_id IS NULL", package)  # fmt: skip
        elif kind == "age":
            world.sql("UPDATE physical_copy SET created_at = created_at - %s * interval '1 day'", action[1])
    # Files on disk follow ops-db: a DELETED copy's files are gone, a live copy's are there.
    for copy in copies(world.db):
        if copy["location_type"] == "LONG_TERM_ARCHIVE" or copy["data_transfer_package_id"]:
            continue
        location = world.loc[copy["location"]]
        files = deletion.copy_files(world.db, location, SimpleNamespace(**copy, package_size=None, bundle_size=None))
        root = Path(location.root_path)
        assert all((root / f.relative).exists() == (copy["status"] != "DELETED") for f in files), copy
