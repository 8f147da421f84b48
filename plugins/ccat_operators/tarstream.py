"""Write, and read back, a tar archive and its checksums in one pass over the data.

Each member is read once, in 1 MiB blocks; every block is hashed into the member's
checksum and into the archive's checksum, and written out. The member hash runs on a
helper thread (hashlib and xxhash release the GIL on large buffers), so on two cores
both checksums cost little more than one. The archive is written to ``<final>.part``
and renamed to its final name only after it is complete and fsync'ed: a crash never
leaves a partial archive at a final name. No link below the storage root is followed.

The output is a plain POSIX (pax) tar that ``tar xf`` reads.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from ccat_operators import checksums, safefs
from ccat_operators.checksums import Hasher, new_hasher
from ccat_operators.faults import ItemFault

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks
CHUNK = 1 << 20


class MemberChangedError(ItemFault):
    """A member is missing, or its size or checksum differs from what was expected."""


@dataclass(frozen=True)
class Member:
    """One file to add: where it is, its name in the archive, and what it should be."""

    source: Path
    arcname: str
    size: int
    checksum_algorithm: str = "sha256"
    expected_checksum: str | None = None
    #: The storage root ``source`` must stay inside (links leaving it are refused).
    root: Path | None = None

    def open(self) -> int:
        """A read descriptor of the source; MemberChangedError if it is missing or leaves its root."""
        try:
            if self.root is None:
                return os.open(self.source, os.O_RDONLY | os.O_CLOEXEC)
            return safefs.open_resolved(self.root, self.source.relative_to(self.root).as_posix())
        except FileNotFoundError:
            raise MemberChangedError(f"{self.source}: missing") from None
        except safefs.UnsafePathError as error:
            raise MemberChangedError(str(error)) from None


@dataclass(frozen=True)
class WrittenMember:
    arcname: str
    size: int
    checksum: str


@dataclass(frozen=True)
class WrittenArchive:
    path: Path
    size: int
    checksum: str
    members: tuple[WrittenMember, ...]


def part_path(final: Path) -> Path:
    """The temporary name an archive is written under before the rename."""
    return final.with_name(final.name + safefs.PART_SUFFIX)


def archive_size(members: Iterable[tuple[str, int]]) -> int:
    """The exact size of the tar :func:`write_archive` makes of members ``(arcname, size)``.

    Headers (with a pax header where the name or size needs one), padding to 512-byte
    blocks, the end-of-archive blocks and the padding to a 10 KiB record: what a buffer
    must have room for, not just the sum of the file sizes.
    """
    total = 0
    for arcname, size in members:
        info = tarfile.TarInfo(arcname)
        info.size = size
        total += len(info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"))
        total += size + (-size % BLOCK)
    total += 2 * BLOCK
    return total + (-total % RECORD)


def _header(member: Member, stat: os.stat_result) -> bytes:
    info = tarfile.TarInfo(member.arcname)
    info.size = member.size
    info.mtime = int(stat.st_mtime)
    info.mode = stat.st_mode & 0o7777
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


class _Sink:
    """Writes blocks in order while two helper threads hash them.

    The archive hash and the member hash each run on their own single-thread
    executor (FIFO, so updates stay in order); the calling thread reads and writes.
    A buffer is reused only after both hashes of its previous contents are done.
    """

    def __init__(self, fd: int, algorithm: str) -> None:
        self.out = safefs.WriteBehind(fd)
        self.offset = 0
        self.archive_hasher = new_hasher(algorithm)
        self.archive_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-hash")
        self.member_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="member-hash")
        self.buffers = [bytearray(CHUNK) for _ in range(3)]
        self.in_flight: list[list[Future]] = [[] for _ in self.buffers]

    def close(self) -> None:
        self.archive_pool.shutdown(wait=True)
        self.member_pool.shutdown(wait=True)

    def finish(self) -> None:
        """Write what the output still gathers: the archive is then complete on disk."""
        self.out.close()

    def emit(self, data: bytes) -> None:
        """Write small metadata (headers, padding) into the archive."""
        self.archive_pool.submit(self.archive_hasher.update, data)
        self.out.write(data)
        self.offset += len(data)

    def copy_member(self, stream, size: int, member_hasher: Hasher, source: Path) -> None:
        """Copy ``size`` bytes of ``stream`` into the archive, hashing them twice."""
        remaining = size
        index = 0
        while remaining:
            for future in self.in_flight[index]:
                future.result()
            buffer = self.buffers[index]
            read = stream.readinto(buffer)
            if not read:
                raise MemberChangedError(f"{source}: shrank while being read")
            read = min(read, remaining)
            view = memoryview(buffer)[:read]
            self.in_flight[index] = [
                self.member_pool.submit(member_hasher.update, view),
                self.archive_pool.submit(self.archive_hasher.update, view),
            ]
            self.out.write(view)
            self.offset += read
            remaining -= read
            index = (index + 1) % len(self.buffers)
        self.member_pool.submit(lambda: None).result()  # member hash complete

    def archive_checksum(self) -> str:
        self.archive_pool.submit(lambda: None).result()
        return self.archive_hasher.hexdigest()


def write_archive(
    root: Path, relative: str, members: Iterable[Member], algorithm: str = "sha256", durable: bool = True
) -> WrittenArchive:
    """Write ``members`` into the tar ``root/relative`` and return its size and checksums.

    The tar is written as ``relative.part`` below ``root`` without following any link
    (see :mod:`ccat_operators.safefs`), fsync'ed with ``durable`` (the default), then
    renamed.

    Raises MemberChangedError (and leaves nothing at ``relative`` or ``relative.part``) if
    a member is missing, or its size or checksum differs from what the Member expects;
    UnsafePathError if the target path goes through a link.
    """
    written: list[WrittenMember] = []
    with safefs.write_part(root, relative, durable) as fd:
        sink = _Sink(fd, algorithm)
        try:
            for member in members:
                written.append(_write_member(member, sink))
            sink.emit(bytes(2 * BLOCK))
            padding = -sink.offset % RECORD
            if padding:
                sink.emit(bytes(padding))
            sink.finish()
            checksum = sink.archive_checksum()
        finally:
            sink.close()
    safefs.publish(root, relative)
    return WrittenArchive(Path(root) / relative, sink.offset, f"{algorithm}:{checksum}", tuple(written))


def _write_member(member: Member, sink: _Sink) -> WrittenMember:
    with safefs.StreamingFile(member.open()) as stream:
        stat = os.fstat(stream.fileno())
        if stat.st_size != member.size:
            raise MemberChangedError(f"{member.source}: size on disk is {stat.st_size}, expected {member.size}")
        sink.emit(_header(member, stat))
        member_hasher = new_hasher(member.checksum_algorithm)
        sink.copy_member(stream, member.size, member_hasher, member.source)
        if stream.read(1):
            raise MemberChangedError(f"{member.source}: grew while being read")
    padding = -member.size % BLOCK
    if padding:
        sink.emit(bytes(padding))
    checksum = f"{member.checksum_algorithm}:{member_hasher.hexdigest()}"
    if member.expected_checksum is not None and checksum != member.expected_checksum:
        raise MemberChangedError(f"{member.source}: checksum is {checksum}, expected {member.expected_checksum}")
    return WrittenMember(member.arcname, member.size, checksum)


# Reading ------------------------------------------------------------------------------
#
# The tar stream read here is not trusted (an arrived bundle, an object from S3). Every
# header is parsed by our own bounded reader: a pax record that does not parse, a pax
# header larger than MAX_PAX_HEADER, a header with a bad checksum, a size that is not the
# expected one, a stream that ends early - each is a TarRefusedError, never an exception
# that escapes, and no header can make us allocate more than MAX_PAX_HEADER. Members
# that are not plain files with safe relative names are refused: absolute paths, "..",
# symbolic or hard links, devices and FIFOs, and names that are not expected.

#: Largest pax extended header we read; real ones (a path, a size) are a few hundred bytes.
MAX_PAX_HEADER = 64 * 1024
_DECIMAL = re.compile(rb"^[0-9]{1,20}$")


class TarRefusedError(ItemFault):
    """The tar stream is corrupt or holds a member we will not extract."""


class ExpectedMember(Protocol):
    """What a member must be: a package of a bundle, or a raw file of a package (ops-db rows)."""

    @property
    def relative_path(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def checksum(self) -> str: ...


class _TarReader:
    """Reads a tar stream once, hashing every byte for the archive checksum.

    Plain-file contents are copied straight into preallocated buffers and handed to
    two helper threads (bundle hash, member hash; FIFO, so in order) while the calling
    thread writes them out: one read, one write, two checksums (one when the member's
    own checksum is proven by the archive's, see :func:`extract_verified`).
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
            raise TarRefusedError(f"archive ends early ({len(data)} of {size} bytes)")
        self.bundle_pool.submit(self.hasher.update, data)
        return data

    def copy_to(self, fd: int, size: int, member_hasher: checksums.Hasher | None) -> None:
        remaining, index = size, 0
        with safefs.WriteBehind(fd) as out:
            while remaining:
                for future in self.in_flight[index]:
                    future.result()
                view = memoryview(self.buffers[index])[: min(CHUNK, remaining)]
                read = self.raw.readinto(view)
                if not read:
                    raise TarRefusedError("archive ends inside a member")
                view = view[:read]
                self.in_flight[index] = [self.bundle_pool.submit(self.hasher.update, view)]
                if member_hasher is not None:
                    self.in_flight[index].append(self.member_pool.submit(member_hasher.update, view))
                out.write(view)
                remaining -= read
                index = (index + 1) % len(self.buffers)
        self.member_pool.submit(lambda: None).result()

    def checksum(self) -> str:
        """Hash whatever follows the end-of-archive marker too, and return the archive checksum."""
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
            raise TarRefusedError(f"malformed pax header: no record length at byte {position}")
        length = int(data[position:space])
        end = position + length
        if length <= space - position + 1 or end > len(data) or data[end - 1] != 0x0A:
            raise TarRefusedError(f"malformed pax header: record at byte {position} claims {length} bytes")
        key, equals, value = data[space + 1 : end - 1].partition(b"=")
        if not equals or not key:
            raise TarRefusedError(f"malformed pax header: record at byte {position} is not key=value")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position = end
    return records


def _pax_size(value: str) -> int:
    if not _DECIMAL.match(value.encode("utf-8", "surrogateescape")):
        raise TarRefusedError(f"malformed pax header: size {value[:40]!r} is not a number")
    return int(value)


def _parse_header(block: bytes) -> tarfile.TarInfo:
    try:
        return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError, OverflowError) as error:
        raise TarRefusedError(f"not a valid tar header: {error}") from None


def _members(reader: _TarReader):
    """Yield each member's TarInfo; the caller consumes its data before asking for the next."""
    pax: dict[str, str] = {}
    while True:
        block = reader.read_exact(BLOCK)
        if block == bytes(BLOCK):
            return
        info = _parse_header(block)
        if info.type == tarfile.XHDTYPE:
            if not 0 <= info.size <= MAX_PAX_HEADER:
                raise TarRefusedError(f"pax header claims {info.size} bytes (at most {MAX_PAX_HEADER} accepted)")
            pax = _pax_records(reader.read_exact(info.size + (-info.size % BLOCK))[: info.size])
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
            raise TarRefusedError(f"unsupported tar header type {info.type!r} for {info.name!r}")
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
    packages: list[ExpectedMember] = field(default_factory=list)

    def publish(self) -> None:
        """Rename every verified ``.part`` file to its final name."""
        for relative in self.parts:
            safefs.publish(self.root, relative)

    def discard(self) -> None:
        """Remove every ``.part`` file of this try."""
        for relative in self.parts:
            safefs.discard(self.root, relative)


def extract_verified(
    stream: BinaryIO,
    archive_checksum: str,
    members: list[ExpectedMember],
    root: Path,
    directory: str | None = None,
    durable: bool = True,
    members_proven: bool = False,
) -> Extracted:
    """Extract a tar stream whose members must be exactly ``members``, verifying everything.

    ``members`` have ``relative_path``, ``size_bytes`` and ``checksum`` (packages of a
    bundle, or raw files of a package). Each is written to
    ``root/directory/relative_path.part`` (fsync'ed if ``durable``) without following any
    link below ``root``. Raises TarRefusedError on an unsafe, malformed or unexpected
    member or any size or checksum mismatch, UnsafePathError on a link in a target path;
    on any error, every ``.part`` of this call is removed first.

    ``members_proven``: the archive was written by :func:`write_archive`, which checked
    every member against its checksum while hashing the same bytes into the archive
    checksum. If that checksum is collision resistant (:func:`checksums.binds_content`),
    an archive that matches it holds exactly those checked bytes, so each member's own
    hash would prove nothing more and is skipped: one hash per byte instead of two.
    """
    expected = {m.relative_path: m for m in members}
    extracted = Extracted(Path(root))
    algorithm, _ = checksums.parse(archive_checksum)
    hash_member = not (members_proven and checksums.binds_content(algorithm))
    prefix = f"{directory}/" if directory else ""
    try:
        with ThreadPoolExecutor(1) as archive_pool, ThreadPoolExecutor(1) as member_pool:
            reader = _TarReader(stream, algorithm, archive_pool, member_pool)
            done: set[str] = set()
            for member in _members(reader):
                reason = refusal(member)
                if reason is None and member.name not in expected:
                    reason = f"member {member.name!r} is not expected in this archive"
                if reason is None and member.name in done:
                    reason = f"member {member.name!r} appears twice"
                if reason:
                    raise TarRefusedError(reason)
                target = prefix + member.name
                extracted.parts.append(target)
                _extract_member(reader, member, extracted.root, target, expected[member.name], durable, hash_member)
                extracted.packages.append(expected[member.name])
                done.add(member.name)
            actual = reader.checksum()
        if actual != archive_checksum:
            raise TarRefusedError(f"archive checksum is {actual}, expected {archive_checksum}")
        missing = sorted(set(expected) - done)
        if missing:
            raise TarRefusedError(f"archive lacks {', '.join(missing)}")
    except BaseException:
        extracted.discard()
        raise
    return extracted


def _extract_member(
    reader: _TarReader,
    member: tarfile.TarInfo,
    root: Path,
    target: str,
    package: ExpectedMember,
    durable: bool,
    hash_member: bool,
) -> None:
    if member.size != package.size_bytes:
        raise TarRefusedError(f"{member.name}: size {member.size}, expected {package.size_bytes}")
    algorithm, _ = checksums.parse(package.checksum)
    hasher = checksums.new_hasher(algorithm) if hash_member else None
    with safefs.write_part(root, target, durable) as fd:
        reader.copy_to(fd, member.size, hasher)
    reader.read_exact(-member.size % BLOCK)
    if hasher is None:
        return
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != package.checksum:
        raise TarRefusedError(f"{member.name}: checksum {actual}, expected {package.checksum}")
