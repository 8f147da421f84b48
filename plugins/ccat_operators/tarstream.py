"""Write a tar archive and its checksums in one pass over the data.

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
import tarfile
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ccat_operators import safefs
from ccat_operators.checksums import Hasher, new_hasher

BLOCK = tarfile.BLOCKSIZE  # 512
RECORD = tarfile.RECORDSIZE  # 20 blocks
CHUNK = 1 << 20


class MemberChangedError(RuntimeError):
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


def _header(member: Member, stat: os.stat_result) -> bytes:
    info = tarfile.TarInfo(member.arcname)
    info.size = member.size
    info.mtime = int(stat.st_mtime)
    info.mode = stat.st_mode & 0o7777
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def _write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _Sink:
    """Writes blocks in order while two helper threads hash them.

    The archive hash and the member hash each run on their own single-thread
    executor (FIFO, so updates stay in order); the calling thread reads and writes.
    A buffer is reused only after both hashes of its previous contents are done.
    """

    def __init__(self, fd: int, algorithm: str) -> None:
        self.fd = fd
        self.offset = 0
        self.archive_hasher = new_hasher(algorithm)
        self.archive_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-hash")
        self.member_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="member-hash")
        self.buffers = [bytearray(CHUNK) for _ in range(3)]
        self.in_flight: list[list[Future]] = [[] for _ in self.buffers]

    def close(self) -> None:
        self.archive_pool.shutdown(wait=True)
        self.member_pool.shutdown(wait=True)

    def emit(self, data: bytes) -> None:
        """Write small metadata (headers, padding) into the archive."""
        self.archive_pool.submit(self.archive_hasher.update, data)
        _write_all(self.fd, data)
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
            _write_all(self.fd, view)
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
            checksum = sink.archive_checksum()
        finally:
            sink.close()
    safefs.publish(root, relative)
    return WrittenArchive(Path(root) / relative, sink.offset, f"{algorithm}:{checksum}", tuple(written))


def _write_member(member: Member, sink: _Sink) -> WrittenMember:
    with open(member.open(), "rb", buffering=0) as stream:
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
