"""Unpacking on hostile and broken bundles: each bad bundle fails (or is sent again) by itself.

Bundles travel with the ``local`` method (every site is a directory here); the subject is
what unpacking does with what arrived: malformed pax records, absurd size claims,
flipped bytes, truncation, links planted in the destination buffer.
"""

from __future__ import annotations

import hashlib
import resource
import tarfile
from pathlib import Path

import pytest

from ccat_operators import unpacking
from ccat_operators.bundling import bundle_path
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import TransferRow
from tests import pipeline
from tests.helpers import location_row
from tests.sites import Sites, primary_transfer


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def arrived(ops_db: OpsDb, data_root: Path, tmp_path: Path) -> list[TransferRow]:
    """Two bundles arrived (not unpacked) at cologne's buffer, oldest first."""
    pipeline.setup(ops_db, tmp_path)
    pipeline.bundle(ops_db, observations=1)
    pipeline.bundle(ops_db, observations=1, first_minute=5)
    pipeline.send_all(ops_db)
    cologne = location_row(ops_db, "cologne/buffer")
    rows = ops_db.conn.execute(
        "SELECT t.id FROM data_transfer t WHERE t.destination_location_id = %s ORDER BY t.id", (cologne.id,)
    ).fetchall()
    assert len(rows) == 2
    return [ops_db.fetch_one("data_transfer", id=row["id"]) for row in rows]


def bundle_file(data_root: Path, transfer: TransferRow) -> Path:
    return data_root / "cologne" / "buffer" / bundle_path(transfer.bundle)


def pax_header(records: bytes, claimed_size: int | None = None) -> bytes:
    """A pax extended header block (type 'x') carrying ``records``, claiming ``claimed_size`` bytes."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(records) if claimed_size is None else claimed_size
    block = info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: base-256 sizes for absurd claims
    return block + records + bytes(-len(records) % tarfile.BLOCKSIZE)


def record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + len(str(len(body)))
    length = len(body) + len(str(length))
    return f"{length}{body.decode()}".encode()


def flip_header_byte(data: bytes) -> bytes:
    return data[:10] + bytes([data[10] ^ 0x20]) + data[11:]


DAMAGE = {
    "non-numeric length": lambda data: pax_header(b"abc path=x\n") + data,
    "size=abc": lambda data: pax_header(record("size", "abc")) + data,
    "length beyond the header": lambda data: pax_header(b"999 path=x\n") + data,
    "1 TiB member size": lambda data: pax_header(record("size", str(2**40))) + data,
    "1 TiB pax header": lambda data: pax_header(b"", claimed_size=2**40) + data,
    "flipped header byte": flip_header_byte,
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
}


def unpack_cologne(db: OpsDb) -> unpacking.UnpackResult:
    return unpacking.unpack_arrived(db, location_row(db, "cologne/buffer"))


def no_part_files(data_root: Path) -> bool:
    return not list(data_root.rglob("*.part"))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_arrival_is_sent_again_and_does_not_block_the_others(
    ops_db: OpsDb, arrived: list[dict], data_root: Path, damage: str
) -> None:
    first, second = arrived
    path = bundle_file(data_root, first)
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    limit = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, limit[1]))  # a 1 TiB claim must not be believed
    try:
        result = unpack_cologne(ops_db)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limit)

    # The other bundle was unpacked in the same run; nothing half-written stays.
    assert result.completed == [second.bundle]
    assert list(result.redelivered) == [first.bundle] and result.failed == {}
    assert no_part_files(data_root)
    row = ops_db.fetch_one("data_transfer", id=first.id)
    assert (row.status, row.unpack_status, row.redeliveries) == ("PENDING", "PENDING", 1)
    assert "damaged" in row.unpack_failure_reason
    assert not path.exists()  # the damaged arrival is gone, its copy is no longer believed
    copy = ops_db.fetch_one("bundle_copy_at", bundle_id=first.data_transfer_package_id,
                            location_id=first.destination_location_id)  # fmt: skip
    assert copy.status == "DELETED"

    # The next runs send a fresh copy from the origin and unpack it, verified.
    pipeline.send_all(ops_db)
    assert unpack_cologne(ops_db).completed == [first.bundle]
    row = ops_db.fetch_one("data_transfer", id=first.id)
    assert (row.status, row.unpack_status) == ("COMPLETED", "COMPLETED")
    for package in ops_db.fetch_all("packages_of_bundle_by_id", bundle_id=first.data_transfer_package_id):
        assert sha256(data_root / "cologne" / "buffer" / package.relative_path) == package.checksum


def test_an_arrival_damaged_every_time_fails_after_a_bounded_number_of_transfers(
    ops_db: OpsDb, arrived: list[dict], data_root: Path
) -> None:
    first = arrived[0]
    path = bundle_file(data_root, first)
    for attempt in range(unpacking.MAX_REDELIVERIES + 1):
        path.write_bytes(flip_header_byte(path.read_bytes()))
        result = unpack_cologne(ops_db)
        if attempt < unpacking.MAX_REDELIVERIES:
            assert list(result.redelivered) == [first.bundle]
            pipeline.send_all(ops_db)
    assert list(result.failed) == [first.bundle]
    row = ops_db.fetch_one("data_transfer", id=first.id)
    assert row.unpack_status == "FAILED" and row.redeliveries == unpacking.MAX_REDELIVERIES
    assert f"already sent again {unpacking.MAX_REDELIVERIES} times" in row.unpack_failure_reason
    assert unpack_cologne(ops_db).completed == []  # left alone from now on
    assert no_part_files(data_root)


@pytest.mark.parametrize("damage", ["size=abc", "1 TiB member size", "flipped header byte"])
def test_a_bundle_recorded_with_a_bad_header_fails_at_once(
    ops_db: OpsDb, arrived: list[dict], data_root: Path, damage: str
) -> None:
    """The recorded bundle itself is malformed: sending it again cannot help."""
    first, second = arrived
    path = bundle_file(data_root, first)
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    ops_db.conn.execute("UPDATE data_transfer_package SET checksum = %s, size_bytes = %s WHERE id = %s",
                        (sha256(path), path.stat().st_size, first.data_transfer_package_id))  # fmt: skip
    result = unpack_cologne(ops_db)
    assert result.completed == [second.bundle] and result.redelivered == {}
    assert list(result.failed) == [first.bundle]
    row = ops_db.fetch_one("data_transfer", id=first.id)
    assert row.unpack_status == "FAILED" and row.unpack_failure_reason.startswith("unpack refused:")
    assert row.redeliveries == 0 and path.exists()
    assert no_part_files(data_root)


def test_a_part_link_planted_in_the_buffer_is_replaced_not_written_through(
    ops_db: OpsDb, arrived: list[dict], data_root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    first = arrived[0]
    packages = ops_db.fetch_all("packages_of_bundle_by_id", bundle_id=first.data_transfer_package_id)
    target = data_root / "cologne" / "buffer" / packages[0].relative_path
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{target}.part").symlink_to(victim)

    assert first.bundle in unpack_cologne(ops_db).completed
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and sha256(target) == packages[0].checksum
    assert no_part_files(data_root)


def test_a_linked_directory_in_the_destination_is_refused_with_the_reason(
    ops_db: OpsDb, arrived: list[dict], data_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    first = arrived[0]
    packages = ops_db.fetch_all("packages_of_bundle_by_id", bundle_id=first.data_transfer_package_id)
    instrument_dir = (data_root / "cologne" / "buffer" / packages[0].relative_path).parents[1]
    instrument_dir.parent.mkdir(parents=True, exist_ok=True)
    instrument_dir.symlink_to(outside, target_is_directory=True)

    result = unpack_cologne(ops_db)
    assert set(result.failed) == {t.bundle for t in arrived}  # both bundles write under that link
    row = ops_db.fetch_one("data_transfer", id=first.id)
    assert row.unpack_status == "FAILED" and "symbolic link" in row.unpack_failure_reason
    assert list(outside.iterdir()) == []
    assert no_part_files(data_root) and no_part_files(outside)


# -- over the site network: what arrived by rsync -------------------------------------------


def test_unpack_retried_after_a_forced_failure_sends_nothing_again(sites: Sites) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    sites.run("ccat", "send", str(transfer["id"]))
    blocker = sites.data_root / site / "buffer" / "raw_data_packages"
    blocker.write_text("not a directory")  # the unpack cannot create its output
    failed = sites.run(site, "unpack", f"{site}/buffer", check=False)
    assert failed.returncode != 0
    assert sites.db.fetch_one("data_transfer", id=transfer["id"]).unpack_status == "PENDING"
    blocker.unlink()

    received = sites.network.received_bytes(site)
    sent_before = sites.network.received_bytes("ccat")
    result = sites.run(site, "unpack", f"{site}/buffer")
    assert "UNPACKED=1" in result.stdout
    assert sites.network.received_bytes(site) - received < 2_000  # no bundle bytes crossed the network
    assert sites.network.received_bytes("ccat") - sent_before < 2_000
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.unpack_status == "COMPLETED" and row.attempts == 1
    packages = sites.db.fetch_all("packages_of_bundle_by_id", bundle_id=row.data_transfer_package_id)
    for package in packages:
        assert sha256(sites.data_root / site / "buffer" / package.relative_path) == package.checksum


MALICIOUS = {
    "absolute": (lambda info: setattr(info, "name", "/tmp/ccat-evil.tar"), "has an absolute path"),
    "dotdot": (lambda info: setattr(info, "name", "../../evil.tar"), "contains '..'"),
    "symlink": (
        lambda info: (setattr(info, "type", tarfile.SYMTYPE), setattr(info, "linkname", "/etc/passwd")),
        "is a link",
    ),
    "hardlink": (
        lambda info: (setattr(info, "type", tarfile.LNKTYPE), setattr(info, "linkname", "/etc/shadow")),
        "is a link",
    ),
    "device": (
        lambda info: (setattr(info, "type", tarfile.CHRTYPE), setattr(info, "devmajor", 1)),
        "is a device or FIFO",
    ),
    "stranger": (
        lambda info: setattr(info, "name", "raw_data_packages/someone_else.tar"),
        "is not expected in this archive",
    ),
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_malicious_bundle_is_refused(sites: Sites, kind: str) -> None:
    from ccat_operators import unpacking

    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    sites.run("ccat", "send", str(transfer["id"]))
    destination = sites.bundle_file(site, transfer["bundle"])
    packages = sites.db.fetch_all("packages_of_bundle_by_id", bundle_id=transfer["data_transfer_package_id"])
    mutate, reason = MALICIOUS[kind]
    with tarfile.open(destination, "w") as archive:
        for index, package in enumerate(packages):
            path = sites.data_root / "ccat" / "buffer" / package.relative_path
            info = archive.gettarinfo(str(path), arcname=package.relative_path)
            if index == 0:
                mutate(info)
            if info.isreg():
                with open(path, "rb") as stream:
                    archive.addfile(info, stream)
            else:
                archive.addfile(info)
    # The bundle's recorded checksum matches the doctored tar: only the member check can catch it.
    sites.db.conn.execute(
        "UPDATE data_transfer_package SET checksum = %s WHERE id = %s",
        (sha256(destination), transfer["data_transfer_package_id"]),
    )
    result = unpacking.unpack_arrived(sites.db, location_row(sites.db, f"{site}/buffer"))
    assert list(result.failed) == [transfer["bundle"]]
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.unpack_status == "FAILED" and reason in row.unpack_failure_reason
    assert not Path("/tmp/ccat-evil.tar").exists()
    assert not list((sites.data_root / site).rglob("*.part"))
    assert not (sites.data_root / site / "buffer" / "raw_data_packages").exists() or not list(
        (sites.data_root / site / "buffer" / "raw_data_packages").rglob("*.tar")
    )


@pytest.mark.parametrize(("algorithm", "member_hashed"), [("sha256", False), ("xxh3_128", True)])
def test_a_bundle_checksum_that_binds_its_content_proves_its_packages(
    tmp_path: Path, algorithm: str, member_hashed: bool
) -> None:
    """sha256 bundle: a matching bundle checksum proves the packages bundling checked, so they
    are not hashed again; xxh3_128 proves nothing against a forger, so each package is hashed."""
    from types import SimpleNamespace

    from ccat_operators.tarstream import Member, TarRefusedError, write_archive

    source = tmp_path / "source"
    source.mkdir()
    package = source / "p.tar"
    package.write_bytes(b"package bytes" * 1000)
    checksum = f"sha256:{hashlib.sha256(package.read_bytes()).hexdigest()}"
    member = Member(package, "raw_data_packages/p.tar", package.stat().st_size, expected_checksum=checksum)
    bundle = write_archive(tmp_path, "bundle.tar", [member], algorithm)
    # The package row's checksum no longer matches its bytes: only a member hash can notice.
    wrong = SimpleNamespace(relative_path=member.arcname, size_bytes=member.size, checksum="sha256:" + "0" * 64)
    destination = tmp_path / "destination"
    destination.mkdir()
    if member_hashed:
        with pytest.raises(TarRefusedError, match="checksum"):
            unpacking.extract_bundle(bundle.path, bundle.checksum, [wrong], destination)
        assert not list(destination.rglob("*.part"))
    else:
        extracted = unpacking.extract_bundle(bundle.path, bundle.checksum, [wrong], destination)
        extracted.publish()
        assert (destination / member.arcname).read_bytes() == package.read_bytes()
