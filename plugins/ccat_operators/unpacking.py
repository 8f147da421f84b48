"""Unpacking: an arrived DataTransferPackage -> verified RawDataPackages in the buffer.

One streaming pass over the bundle tar: the bundle checksum is computed on the bytes as
they are read while each member (a RawDataPackage tar) is written to ``<path>.part``
with its own checksum. Only when the bundle checksum and every package checksum match
ops-db are the ``.part`` files renamed and PhysicalCopy rows recorded; otherwise every
``.part`` of this try is removed, whatever stopped it.

The tar stream is not trusted. Every header is parsed by our own bounded reader: a pax
record that does not parse, a pax header larger than ``MAX_PAX_HEADER``, a header with
a bad checksum, a size that is not the recorded one, a stream that ends early - each is
a refusal of that bundle (:class:`BundleRefusedError`), never an exception that escapes,
and no header can make us allocate more than ``MAX_PAX_HEADER``. Members that are not
plain files with safe relative names are refused: absolute paths, ``..``, symbolic or
hard links, devices and FIFOs, and names that are not packages of this bundle. Files are
written without following any link in the destination (:mod:`ccat_operators.safefs`).

What a refusal leads to depends on whether the arrived file is the bundle that was sent:

- it is not (its checksum differs from the recorded one, or it is missing): the copy
  was damaged after it arrived. It is removed and the transfer goes back to PENDING, so
  the next transfer run sends a fresh copy from the origin buffer (as FTS3 does on a
  destination checksum mismatch), at most ``MAX_REDELIVERIES`` times; after that the
  unpack is FAILED with the reason.
- it is (the recorded bundle itself holds a member we will not extract), or a link
  stands in the destination path: the unpack is FAILED with the reason at once.

Either way the location carries on with its other bundles. Unpacking has its own status,
so retrying it never re-transfers a good bundle.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ccat_operators import checksums, safefs
from ccat_operators.bundling import bundle_path
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import PhysicalCopyStatus, Status
from ccat_operators.tarstream import BLOCK as BLOCKSIZE
from ccat_operators.tarstream import CHUNK

log = logging.getLogger(__name__)

UNPACK_KIND = "unpack"
CLAIM_BATCH = 100
#: Largest pax extended header we read; real ones (a path, a size) are a few hundred bytes.
MAX_PAX_HEADER = 64 * 1024
#: Fresh transfers of a bundle that arrived damaged before the unpack is FAILED.
MAX_REDELIVERIES = 3
_DECIMAL = re.compile(rb"^[0-9]{1,20}$")


class BundleRefusedError(ValueError):
    """The bundle is corrupt or holds a member we will not extract."""


class _BundleReader:
    """Reads a tar stream once, hashing every byte for the bundle checksum.

    Plain-file contents are copied straight into preallocated buffers and handed to
    two helper threads (bundle hash, member hash; FIFO, so in order) while the calling
    thread writes them out: one read, one write, two checksums.
    """

    def __init__(self, raw: BinaryIO, algorithm: str, bundle_pool: ThreadPoolExecutor, member_pool: ThreadPoolExecutor):
        self.raw = raw
        self.algorithm = algorithm
        self.hasher = checksums.new_hasher(algorithm)
        self.bundle_pool = bundle_pool
        self.member_pool = member_pool
        self.buffers = [bytearray(CHUNK) for _ in range(3)]
        self.in_flight: list[list[Future]] = [[] for _ in self.buffers]

    def read_exact(self, size: int) -> bytes:
        data = self.raw.read(size)
        if len(data) != size:
            raise BundleRefusedError(f"bundle ends early ({len(data)} of {size} bytes)")
        self.bundle_pool.submit(self.hasher.update, data)
        return data

    def copy_to(self, fd: int, size: int, member_hasher: checksums.Hasher) -> None:
        remaining, index = size, 0
        while remaining:
            for future in self.in_flight[index]:
                future.result()
            view = memoryview(self.buffers[index])[: min(CHUNK, remaining)]
            read = self.raw.readinto(view)
            if not read:
                raise BundleRefusedError("bundle ends inside a member")
            view = view[:read]
            self.in_flight[index] = [
                self.bundle_pool.submit(self.hasher.update, view),
                self.member_pool.submit(member_hasher.update, view),
            ]
            while view:
                view = view[os.write(fd, view) :]
            remaining -= read
            index = (index + 1) % len(self.buffers)
        self.member_pool.submit(lambda: None).result()

    def checksum(self) -> str:
        """Hash whatever follows the end-of-archive marker too, and return the bundle checksum."""
        while data := self.raw.read(CHUNK):
            self.bundle_pool.submit(self.hasher.update, data)
        self.bundle_pool.submit(lambda: None).result()
        return f"{self.algorithm}:{self.hasher.hexdigest()}"


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse a pax extended header (``"<len> key=value\\n"`` records); refuse anything malformed."""
    records, position = {}, 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position, position + 21)
        if space < 0 or not _DECIMAL.match(data[position:space]):
            raise BundleRefusedError(f"malformed pax header: no record length at byte {position}")
        length = int(data[position:space])
        end = position + length
        if length <= space - position + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise BundleRefusedError(f"malformed pax header: record at byte {position} claims {length} bytes")
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise BundleRefusedError(f"malformed pax header: record at byte {position} is not key=value")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position = end
    return records


def _pax_size(value: str) -> int:
    if not _DECIMAL.match(value.encode("utf-8", "surrogateescape")):
        raise BundleRefusedError(f"malformed pax header: size {value[:40]!r} is not a number")
    return int(value)


def _header(block: bytes) -> tarfile.TarInfo:
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError, OverflowError) as error:
        raise BundleRefusedError(f"not a valid tar header: {error}") from None


def _members(reader: _BundleReader):
    """Yield each member's TarInfo; the caller consumes its data before asking for the next."""
    pax: dict[str, str] = {}
    while True:
        block = reader.read_exact(BLOCKSIZE)
        if block == bytes(BLOCKSIZE):
            return
        info = _header(block)
        if info.type == tarfile.XHDTYPE:
            if not 0 <= info.size <= MAX_PAX_HEADER:
                raise BundleRefusedError(f"pax header claims {info.size} bytes (at most {MAX_PAX_HEADER} accepted)")
            pax = _pax_records(reader.read_exact(info.size + (-info.size % BLOCKSIZE))[: info.size])
            continue
        if info.type not in (
            tarfile.REGTYPE,
            tarfile.AREGTYPE,
            tarfile.SYMTYPE,
            tarfile.LNKTYPE,
            tarfile.CHRTYPE,
            tarfile.BLKTYPE,
            tarfile.FIFOTYPE,
            tarfile.DIRTYPE,
        ):
            raise BundleRefusedError(f"unsupported tar header type {info.type!r} for {info.name!r}")
        info.name = pax.get("path", info.name)
        info.linkname = pax.get("linkpath", info.linkname)
        if "size" in pax:
            info.size = _pax_size(pax["size"])
        pax = {}
        yield info


def refusal(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None if it is a safe plain file."""
    path = PurePosixPath(member.name)
    if path.is_absolute():
        return f"member {member.name!r} has an absolute path"
    if ".." in path.parts:
        return f"member {member.name!r} contains '..'"
    if member.issym() or member.islnk():
        return f"member {member.name!r} is a link (to {member.linkname!r})"
    if member.isdev() or member.isfifo():
        return f"member {member.name!r} is a device or FIFO"
    if not member.isreg():
        return f"member {member.name!r} is not a regular file"
    return None


@dataclass
class Extracted:
    """Verified members written as ``.part`` files below ``root`` (paths relative to it)."""

    root: Path
    parts: list[str] = field(default_factory=list)
    packages: list[dict[str, Any]] = field(default_factory=list)

    def publish(self) -> None:
        """Rename every verified ``.part`` file to its final name."""
        for relative in self.parts:
            safefs.publish(self.root, relative)

    def discard(self) -> None:
        """Remove every ``.part`` file of this try."""
        for relative in self.parts:
            safefs.discard(self.root, relative)


def extract_bundle(
    bundle_file: Path, bundle_checksum: str, packages: list[dict[str, Any]], root: Path, durable: bool = True
) -> Extracted:
    """Extract and verify every package of a bundle file into ``root`` as ``.part`` files."""
    with open(bundle_file, "rb", buffering=0) as raw:
        return extract_verified(raw, bundle_checksum, packages, root, durable=durable)


def extract_verified(
    stream: BinaryIO,
    archive_checksum: str,
    members: list[dict[str, Any]],
    root: Path,
    directory: str | None = None,
    durable: bool = True,
) -> Extracted:
    """Extract a tar stream whose members must be exactly ``members``, verifying everything.

    ``members`` are rows with ``relative_path``, ``size_bytes`` and ``checksum`` (packages
    of a bundle, or raw files of a package). Each is written to
    ``root/directory/relative_path.part`` (fsync'ed if ``durable``) without following any
    link below ``root``. Raises BundleRefusedError on an unsafe, malformed or unexpected
    member or any size or checksum mismatch, UnsafePathError on a link in a target path;
    on any error, every ``.part`` of this call is removed first.
    """
    expected = {m["relative_path"]: m for m in members}
    extracted = Extracted(Path(root))
    algorithm, _ = checksums.parse(archive_checksum)
    prefix = f"{directory}/" if directory else ""
    try:
        with ThreadPoolExecutor(1) as archive_pool, ThreadPoolExecutor(1) as member_pool:
            reader = _BundleReader(stream, algorithm, archive_pool, member_pool)
            done: set[str] = set()
            for member in _members(reader):
                reason = refusal(member)
                if reason is None and member.name not in expected:
                    reason = f"member {member.name!r} is not expected in this archive"
                if reason is None and member.name in done:
                    reason = f"member {member.name!r} appears twice"
                if reason:
                    raise BundleRefusedError(reason)
                target = prefix + member.name
                extracted.parts.append(target)
                _extract_member(reader, member, extracted.root, target, expected[member.name], durable)
                extracted.packages.append(expected[member.name])
                done.add(member.name)
            actual = reader.checksum()
        if actual != archive_checksum:
            raise BundleRefusedError(f"archive checksum is {actual}, expected {archive_checksum}")
        missing = sorted(set(expected) - done)
        if missing:
            raise BundleRefusedError(f"archive lacks {', '.join(missing)}")
    except BaseException:
        extracted.discard()
        raise
    return extracted


def _extract_member(
    reader: _BundleReader, member: tarfile.TarInfo, root: Path, target: str, package: dict[str, Any], durable: bool
) -> None:
    if member.size != package["size_bytes"]:
        raise BundleRefusedError(f"{member.name}: size {member.size}, expected {package['size_bytes']}")
    algorithm, _ = checksums.parse(package["checksum"])
    hasher = checksums.new_hasher(algorithm)
    with safefs.write_part(root, target, durable) as fd:
        reader.copy_to(fd, member.size, hasher)
    reader.read_exact(-member.size % BLOCKSIZE)
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != package["checksum"]:
        raise BundleRefusedError(f"{member.name}: checksum {actual}, expected {package['checksum']}")


@dataclass
class UnpackResult:
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    redelivered: dict[str, str] = field(default_factory=dict)


def unpack_arrived(db: OpsDb, location: dict[str, Any]) -> UnpackResult:
    """Unpack every arrived bundle waiting at a destination buffer.

    A refused bundle fails (or is sent again) by itself; the others are unpacked. An
    error of the storage itself (disk full, I/O error) puts the bundle back to PENDING
    and is raised, so the task retries.
    """
    result = UnpackResult()
    root = Path(location["root_path"])
    for row in db.fetch_all("claim_unpackable_transfers", location_id=location["id"], limit=CLAIM_BATCH):
        with db.lease(UNPACK_KIND, row["id"]) as mine:
            if mine:
                _unpack_one(db, row["id"], root, location, result)
    return result


def _to_in_progress(db: OpsDb, transfer_id: int) -> bool:
    for expected, new in ((Status.PENDING, Status.SCHEDULED), (Status.SCHEDULED, Status.IN_PROGRESS)):
        db.transition_unpack(transfer_id, expected, new)
    transfer = db.fetch_one("data_transfer", id=transfer_id)
    return transfer["unpack_status"] == Status.IN_PROGRESS


def _unpack_one(db: OpsDb, transfer_id: int, root: Path, location: dict[str, Any], result: UnpackResult) -> None:
    if not _to_in_progress(db, transfer_id):
        return
    transfer = db.fetch_one("data_transfer", id=transfer_id)
    packages = db.fetch_all("packages_of_bundle_by_id", bundle_id=transfer["data_transfer_package_id"])
    relative = bundle_path(transfer["bundle"])
    try:
        extracted = extract_bundle(root / relative, transfer["checksum"], packages, root)
    except (BundleRefusedError, FileNotFoundError) as error:
        if _arrived_intact(root, relative, transfer["checksum"]):
            _fail(db, transfer, location, f"unpack refused: {error}", result)
        else:
            _redeliver(db, transfer, location, root, f"arrived copy is damaged ({error})", result)
        return
    except safefs.UnsafePathError as error:
        _fail(db, transfer, location, f"unpack refused: {error}", result)
        return
    except BaseException as error:
        db.transition_unpack(transfer_id, Status.IN_PROGRESS, Status.PENDING, f"interrupted ({error}); will retry")
        raise
    try:
        extracted.publish()
    except safefs.UnsafePathError as error:
        extracted.discard()
        _fail(db, transfer, location, f"unpack refused: {error}", result)
        return
    with db.transaction():
        for package in extracted.packages:
            db.fetch_value(
                "upsert_package_copy",
                location_id=location["id"],
                package_id=package["id"],
                path=package["relative_path"],
                checksum=package["checksum"],
            )
        if not db.transition_unpack(transfer_id, Status.IN_PROGRESS, Status.COMPLETED):
            raise RuntimeError(f"unpack of transfer {transfer_id} left IN_PROGRESS while it ran")
    log.info("bundle %s: %d package(s) unpacked and verified", transfer["bundle"], len(extracted.packages))
    result.completed.append(transfer["bundle"])


def _arrived_intact(root: Path, relative: str, checksum: str) -> bool:
    """True if the arrived bundle file is byte for byte the bundle that was recorded and sent."""
    try:
        fd = safefs.open_resolved(root, relative)
    except (FileNotFoundError, safefs.UnsafePathError):
        return False
    with open(fd, "rb", buffering=0) as stream:
        return checksums.stream_checksum(stream, checksums.parse(checksum)[0]) == checksum


def _fail(db: OpsDb, transfer: dict[str, Any], location: dict[str, Any], reason: str, result: UnpackResult) -> None:
    db.transition_unpack(transfer["id"], Status.IN_PROGRESS, Status.FAILED, reason)
    log.error("bundle %s at %s: %s", transfer["bundle"], location["name"], reason)
    result.failed[transfer["bundle"]] = reason


def _redeliver(
    db: OpsDb, transfer: dict[str, Any], location: dict[str, Any], root: Path, reason: str, result: UnpackResult
) -> None:
    """Remove a damaged arrival and send the transfer again, or fail it after ``MAX_REDELIVERIES``."""
    if transfer["redeliveries"] >= MAX_REDELIVERIES:
        _fail(db, transfer, location, f"{reason}; already sent again {MAX_REDELIVERIES} times", result)
        return
    relative = bundle_path(transfer["bundle"])
    with db.transaction():
        copy = db.fetch_one(
            "bundle_copy_at", bundle_id=transfer["data_transfer_package_id"], location_id=location["id"]
        )
        if copy is not None and copy["status"] == PhysicalCopyStatus.PRESENT:
            for new in (PhysicalCopyStatus.DELETION_SCHEDULED, PhysicalCopyStatus.DELETION_IN_PROGRESS):
                db.transition_copy(copy["id"], copy["status"], new)
                copy["status"] = new
            db.transition_copy(copy["id"], copy["status"], PhysicalCopyStatus.DELETED, reason)
        attempt = db.fetch_value("redeliver_transfer", id=transfer["id"], reason=f"{reason}; sent again")
        if attempt is None:
            raise RuntimeError(f"transfer {transfer['id']} changed while its unpack was refused")
        _remove_damaged(root, relative)
    log.error("bundle %s at %s: %s; it will be sent again (%d of %d)", transfer["bundle"], location["name"], reason,
              attempt, MAX_REDELIVERIES)  # fmt: skip
    result.redelivered[transfer["bundle"]] = reason


def _remove_damaged(root: Path, relative: str) -> None:
    """Remove our damaged arrived file (a link planted at its name is removed as a link)."""
    found = None
    try:
        found = safefs.regular_file(root, relative)
    except safefs.UnsafePathError as error:
        log.warning("damaged arrival not removed: %s", error)
    if found is not None:
        safefs.unlink_file(root, relative, found.st_ino)
