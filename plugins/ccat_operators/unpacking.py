"""Unpacking: an arrived DataTransferPackage -> verified RawDataPackages in the buffer.

One streaming pass over the bundle tar: the bundle checksum is computed on the bytes as
they are read while each member (a RawDataPackage tar) is written to ``<path>.part``
with its own checksum. Only when the bundle checksum and every package checksum match
ops-db are the ``.part`` files renamed and PhysicalCopy rows recorded; otherwise every
``.part`` of this try is removed.

Members that are not plain files with safe relative names are refused: absolute paths,
``..``, symbolic or hard links, devices and FIFOs, and names that are not packages of
this bundle. A refused or corrupt bundle marks the unpack FAILED with the reason.
Unpacking has its own status, so retrying it never re-transfers anything.
"""

from __future__ import annotations

import logging
import os
import tarfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ccat_operators import checksums
from ccat_operators.bundling import bundle_path
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import Status
from ccat_operators.tarstream import BLOCK as BLOCKSIZE
from ccat_operators.tarstream import CHUNK, part_path

log = logging.getLogger(__name__)

UNPACK_KIND = "unpack"
CLAIM_BATCH = 100


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
    """Parse a pax extended header (``"<len> key=value\\n"`` records)."""
    records, position = {}, 0
    while position < len(data) and data[position] != 0:
        space = data.index(b" ", position)
        length = int(data[position:space])
        if length <= 0:
            raise BundleRefusedError("malformed pax header")
        key, _, value = data[space + 1 : position + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records


def _members(reader: _BundleReader):
    """Yield each member's TarInfo; the caller consumes its data before asking for the next."""
    pax: dict[str, str] = {}
    while True:
        block = reader.read_exact(BLOCKSIZE)
        if block == bytes(BLOCKSIZE):
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as error:
            raise BundleRefusedError(f"not a valid tar header: {error}") from None
        if info.type == tarfile.XHDTYPE:
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
            info.size = int(pax["size"])
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
    parts: list[Path] = field(default_factory=list)
    packages: list[dict[str, Any]] = field(default_factory=list)

    def publish(self) -> None:
        """Rename every verified ``.part`` file to its final name."""
        for part in self.parts:
            part.rename(part.with_name(part.name.removesuffix(".part")))


def extract_bundle(
    bundle_file: Path, bundle_checksum: str, packages: list[dict[str, Any]], root: Path, durable: bool = True
) -> Extracted:
    """Extract and verify every package of a bundle file into ``root`` as ``.part`` files."""
    with open(bundle_file, "rb", buffering=0) as raw:
        return extract_verified(raw, bundle_checksum, packages, root, durable)


def extract_verified(
    stream: BinaryIO, archive_checksum: str, members: list[dict[str, Any]], root: Path, durable: bool = True
) -> Extracted:
    """Extract a tar stream whose members must be exactly ``members``, verifying everything.

    ``members`` are rows with ``relative_path``, ``size_bytes`` and ``checksum`` (packages
    of a bundle, or raw files of a package). Each is written to ``root/relative_path.part``
    (fsync'ed if ``durable``). Raises BundleRefusedError, after removing every ``.part``
    of this call, on an unsafe or unexpected member or any size or checksum mismatch.
    """
    expected = {m["relative_path"]: m for m in members}
    extracted = Extracted()
    algorithm, _ = checksums.parse(archive_checksum)
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
                target = part_path(root / member.name)
                extracted.parts.append(target)
                _extract_member(reader, member, target, expected[member.name], durable)
                extracted.packages.append(expected[member.name])
                done.add(member.name)
            actual = reader.checksum()
        if actual != archive_checksum:
            raise BundleRefusedError(f"archive checksum is {actual}, expected {archive_checksum}")
        missing = sorted(set(expected) - done)
        if missing:
            raise BundleRefusedError(f"archive lacks {', '.join(missing)}")
    except BundleRefusedError:
        for part in extracted.parts:
            part.unlink(missing_ok=True)
        raise
    return extracted


def _extract_member(
    reader: _BundleReader, member: tarfile.TarInfo, target: Path, package: dict[str, Any], durable: bool
) -> None:
    if member.size != package["size_bytes"]:
        raise BundleRefusedError(f"{member.name}: size {member.size}, expected {package['size_bytes']}")
    algorithm, _ = checksums.parse(package["checksum"])
    hasher = checksums.new_hasher(algorithm)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        reader.copy_to(fd, member.size, hasher)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    reader.read_exact(-member.size % BLOCKSIZE)
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != package["checksum"]:
        raise BundleRefusedError(f"{member.name}: checksum {actual}, expected {package['checksum']}")


@dataclass
class UnpackResult:
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def unpack_arrived(db: OpsDb, location: dict[str, Any]) -> UnpackResult:
    """Unpack every arrived bundle waiting at a destination buffer."""
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
    try:
        extracted = extract_bundle(root / bundle_path(transfer["bundle"]), transfer["checksum"], packages, root)
    except (BundleRefusedError, FileNotFoundError) as error:
        reason = f"unpack refused: {error}"
        db.transition_unpack(transfer_id, Status.IN_PROGRESS, Status.FAILED, reason)
        log.error("bundle %s at %s: %s", transfer["bundle"], location["name"], reason)
        result.failed[transfer["bundle"]] = reason
        return
    except BaseException:
        db.transition_unpack(transfer_id, Status.IN_PROGRESS, Status.PENDING, "interrupted; will retry")
        raise
    extracted.publish()
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
