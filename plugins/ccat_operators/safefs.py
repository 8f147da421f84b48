"""Writing, reading and deleting under a storage root without following any link.

What lies in storage is not trusted: a name, a directory or a ``<name>.part`` can be a
symbolic link planted by anyone with write access, pointing anywhere. The root of a
location comes from ops-db and is trusted (it may itself be a mount point reached
through a link); everything *below* it is walked one component at a time from a
directory file descriptor, each opened with ``O_NOFOLLOW``, so a link anywhere in a
target path is refused with :class:`UnsafePathError` instead of being followed.

- :func:`write_part` creates ``<name>.part`` afresh (``O_EXCL | O_NOFOLLOW``: whatever
  stood at that name, link included, is removed as an entry, never written through),
  creating missing directories one by one; :func:`publish` renames it to its final name
  within the same directory; :func:`discard` removes it.
- :func:`resolve_within` resolves a path that may legitimately pass through links (an
  instrument's source tree) and refuses it if it leaves the root; :func:`open_resolved`
  opens the resolved path by the same link-free walk.
- :func:`regular_file` / :func:`unlink_file` look at and delete one regular file, and
  refuse links, directories and devices.

Data files are streamed past the page cache, not kept in it: :class:`WriteBehind`
writes a file with direct I/O (or, where the filesystem has none, with the disk
following close behind, dropping what is on disk from the cache), and
:class:`StreamingFile` reads one and drops what it has read. A package is
written once and read a few times, each time start to end, and is usually larger than
what the cache would keep of it, so caching it only evicts what is worth keeping (ops-db
pages among them) and costs the CPU of filling and reclaiming the cache: on the build
machine filling fresh page cache costs about 2 CPU-seconds per GB (the hypervisor backs
each new page), streaming 0.1-0.2.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import mmap
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath

from ccat_operators.faults import ItemFault

PART_SUFFIX = ".part"
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LINK_ERRORS = (errno.ELOOP, errno.ENOTDIR)


#: Bytes written (read) between two requests to write back and drop (to drop) what went
#: before (see :class:`WriteBehind`, :class:`StreamingFile`).
WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_AFTER = 4
#: What :class:`UncachedFile` reads, and :class:`WriteBehind` writes, with direct I/O at a time.
DIRECT_BLOCK = 8 << 20
#: Alignment of direct I/O offsets, lengths and buffers (the page size covers every common device).
DIRECT_ALIGNMENT = 4096


def _sync_file_range():
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return function


_sync_range = _sync_file_range()


class WriteBehind:
    """Write a new file past the page cache; a context manager (its end writes the tail).

    Where the filesystem takes direct I/O, the data is gathered in an aligned buffer and
    each full ``DIRECT_BLOCK`` is written with ``O_DIRECT`` by a helper thread while the
    caller fills the next: no page of the file passes through the cache, so the kernel
    neither allocates, writes back nor reclaims one (on a VM each fresh page costs CPU).
    The last, unaligned piece is written normally when the block ends. Where direct I/O
    is refused (tmpfs, an unaligned start, a device with larger sectors) the file is
    written through the cache with the disk close behind instead: every
    ``WRITEBACK_STEP`` bytes the range just written is handed to the disk
    (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), and the range before it, by now
    written, is waited for and dropped from the cache.

    Either way the file occupies little cache and the final ``fsync`` has little left
    to write; durability is still the caller's ``fsync`` (:func:`write_part`). A block
    that ends with an exception writes nothing more (its ``.part`` is discarded).
    """

    def __init__(self, fd: int) -> None:
        self.fd, self.offset, self.mark = fd, 0, 0
        self.previous: tuple[int, int] | None = None
        self._direct = _start_direct(fd)
        self._refused = False  # a direct write was refused (set by whichever thread wrote)
        self._buffer = _direct_buffers.take() if self._direct else None
        self._filled = 0
        self._spare: mmap.mmap | None = None
        self._pending: Future | None = None  # the helper's write of the spare buffer
        self._writer: ThreadPoolExecutor | None = None

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self._release(wait=lambda future: futures_wait([future]))

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view and self._direct:
            taken = min(len(view), DIRECT_BLOCK - self._filled)
            self._buffer[self._filled : self._filled + taken] = view[:taken]
            self._filled += taken
            view = view[taken:]
            if self._filled == DIRECT_BLOCK:
                self._hand_over()
        if view:
            self._write_cached(view)

    def close(self) -> None:
        """Write what is still gathered; the file is then complete (not yet fsync'ed)."""
        self._finish_pending()
        self._direct = self._direct and not self._refused
        done = 0
        if self._direct:
            done = self._filled - self._filled % DIRECT_ALIGNMENT
            if done:
                self._write_block(self._buffer, done)
        if self._buffer is not None:
            tail = bytes(self._buffer[done : self._filled])
            self._release(wait=lambda future: future.result())
            self._write_cached(memoryview(tail))

    def _hand_over(self) -> None:
        """Give the full buffer to the helper thread and go on filling the spare."""
        self._finish_pending()
        if self._refused:  # the helper found direct I/O refused: this block and the rest go through the cache
            self._direct = False
            full = bytes(self._buffer[: self._filled])
            self._filled = 0
            self._write_cached(memoryview(full))
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="write-behind")
            self._spare = _direct_buffers.take()
        self._pending = self._writer.submit(self._write_block, self._buffer, self._filled)
        self._buffer, self._spare, self._filled = self._spare, self._buffer, 0

    def _finish_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write_block(self, buffer: mmap.mmap, length: int) -> None:
        """Write ``buffer[:length]`` (aligned) with direct I/O, or through the cache where that is refused."""
        view = memoryview(buffer)[:length]
        try:
            written = os.write(self.fd, view)
        except OSError as error:
            if error.errno != errno.EINVAL:
                view.release()
                raise
            written = 0  # this file's alignment is not ours
        self.offset += written
        if written != length:
            self._refused = True  # seen by the caller's thread once it has waited for this write
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            self._write_cached(view[written:])
        view.release()

    def _release(self, wait: Callable[[Future], object]) -> None:
        """Wait for the helper (``wait``), go back to cached writes, hand the buffers back."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            wait(pending)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            _direct_buffers.give(self._spare)
            self._writer = self._spare = None
        if self._buffer is not None:
            if self._direct and not self._refused:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            _direct_buffers.give(self._buffer)
            self._buffer, self._direct, self._filled = None, False, 0

    def _write_cached(self, view: memoryview) -> None:
        length = len(view)
        while view:
            view = view[os.write(self.fd, view) :]
        self.offset += length
        if _sync_range is not None and self.offset - self.mark >= WRITEBACK_STEP:
            _sync_range(self.fd, self.mark, self.offset - self.mark, _SYNC_FILE_RANGE_WRITE)
            if self.previous is not None:
                start, length = self.previous
                waited = _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER
                _sync_range(self.fd, start, length, waited)
                drop_cached(self.fd, start, length)
            self.previous = (self.mark, self.offset - self.mark)
            self.mark = self.offset


def _start_direct(fd: int) -> bool:
    """Switch ``fd`` (a regular file at an aligned offset) to direct I/O; False where that is refused."""
    if not stat.S_ISREG(os.fstat(fd).st_mode) or os.lseek(fd, 0, os.SEEK_CUR) % DIRECT_ALIGNMENT:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: this filesystem has no direct I/O
            raise
        return False
    return True


class _BufferPool:
    """Page-aligned ``DIRECT_BLOCK`` buffers, reused: fresh pages cost CPU (the hypervisor backs each)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.free: list[mmap.mmap] = []
        self.lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self.lock:
            if self.free:
                return self.free.pop()
        return mmap.mmap(-1, DIRECT_BLOCK)

    def give(self, buffer: mmap.mmap) -> None:
        with self.lock:
            if len(self.free) < self.keep:
                self.free.append(buffer)
                return
        buffer.close()


_direct_buffers = _BufferPool()


class StreamingFile(io.FileIO):
    """A file read from start to end once: what has been read leaves the page cache.

    A :class:`io.FileIO` (``seek``, ``tell``, ``fileno`` work; a path or a descriptor
    it takes over), for the big sequential reads of data files: hashing, tarring,
    copying, uploading. Every ``WRITEBACK_STEP`` bytes of progress, the pages before the
    position are dropped (``POSIX_FADV_DONTNEED``); reading again after a seek back
    reads from the disk.
    """

    def __init__(self, file: str | os.PathLike | int) -> None:
        super().__init__(file, "rb")
        self._position = self._dropped_to = 0  # tracked here: no lseek per read (HTTP bodies read 8 KiB at a time)

    def readinto(self, buffer) -> int | None:
        read = super().readinto(buffer)
        self._advance(read or 0)
        return read

    def read(self, size: int = -1) -> bytes | None:
        data = super().read(size)
        self._advance(len(data or b""))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._position = super().seek(offset, whence)
        return self._position

    def _advance(self, read: int) -> None:
        self._position += read
        if self._position - self._dropped_to >= WRITEBACK_STEP:
            drop_cached(self.fileno(), self._dropped_to, self._position - self._dropped_to)
            self._dropped_to = self._position


class UncachedFile(io.RawIOBase):
    """A file read without the page cache (``O_DIRECT``), for a reader slower than the disk.

    An upload reads its body 8 KiB at a time, at the network's pace: pages the kernel
    reads ahead for it sit in the cache long enough to be reclaimed (on the build
    machine, returned to the hypervisor) before the next are needed, and each fresh page
    costs more CPU than the upload itself. This reads ``DIRECT_BLOCK`` bytes at a time
    with ``O_DIRECT`` into its own aligned buffer and serves the small reads from it.
    On a filesystem without direct I/O (tmpfs) it reads through the cache and drops each
    block after reading it. ``seek`` / ``tell`` work (a retried upload starts over).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)  # else a pipe: read in order, no seeking
        self.direct = self._regular and _start_direct(self._fd)
        self._buffer = _direct_buffers.take()  # page-aligned, as O_DIRECT needs
        self._view = memoryview(self._buffer)
        self._start = self._filled = self._position = 0  # the buffer's file offset, its bytes, the position

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._regular

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer) -> int:
        if not self._start <= self._position < self._start + self._filled:
            if self._regular:
                self._start = self._position - self._position % DIRECT_BLOCK
                self._filled = os.preadv(self._fd, [self._buffer], self._start)
                if not self.direct:
                    drop_cached(self._fd, self._start, self._filled)
            else:
                self._start, self._filled = self._start + self._filled, os.readv(self._fd, [self._buffer])
            if self._position >= self._start + self._filled:
                return 0
        offset = self._position - self._start
        count = min(len(buffer), self._filled - offset)
        memoryview(buffer).cast("B")[:count] = self._view[offset : offset + count]
        self._position += count
        return count

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left if negative); fewer only at the end of the file."""
        if size < 0:
            if not self._regular:
                return b"".join(iter(lambda: self.read(DIRECT_BLOCK), b""))
            size = max(0, os.fstat(self._fd).st_size - self._position)
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size and (count := self.readinto(view[got:])):
            got += count
        view.release()
        del data[got:]
        return bytes(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not self._regular:
            raise io.UnsupportedOperation(f"{self._fd} is not a regular file: it reads in order")
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            self._view.release()
            _direct_buffers.give(self._buffer)
            os.close(self._fd)
        super().close()


def drop_cached(fd: int, offset: int = 0, length: int = 0) -> None:
    """Drop the clean cached pages of ``fd`` in ``[offset, offset + length)`` (length 0: to the end)."""
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class UnsafePathError(ItemFault):
    """A path below a storage root is unsafe to use: a link, not a directory, or outside the root."""


def parts_of(relative: str) -> tuple[str, ...]:
    """The components of a relative path, refusing absolute, empty, ``.`` and ``..`` parts."""
    if not relative or "\x00" in relative:
        raise UnsafePathError(f"{relative!r} is not a usable relative path")
    path = PurePosixPath(relative)
    if path.is_absolute():
        raise UnsafePathError(f"{relative!r} is absolute; expected a path relative to the root")
    parts = tuple(part for part in relative.split("/") if part)
    if not parts or any(part in (".", "..") for part in parts):
        raise UnsafePathError(f"{relative!r} contains '.' or '..' components")
    return parts


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _open_below(root: Path, parts: tuple[str, ...], create: bool) -> int:
    """Open the directory ``root/parts...`` without following a link below ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = root
    try:
        for part in parts:
            walked = walked / part
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                child = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            except OSError as error:
                if error.errno in _LINK_ERRORS and _is_link(fd, part):
                    raise UnsafePathError(f"{walked} is a symbolic link; refusing to go through it") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def directory(root: Path, relative_dir: str | None, create: bool = False) -> Iterator[int]:
    """A file descriptor of ``root/relative_dir`` reached without links (``None``: the root itself)."""
    parts = parts_of(relative_dir) if relative_dir not in (None, "", ".") else ()
    fd = _open_below(Path(root), parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _split(relative: str) -> tuple[str | None, str]:
    parts = parts_of(relative)
    return ("/".join(parts[:-1]) or None), parts[-1]


def _remove_entry(dir_fd: int, name: str, where: Path) -> None:
    """Remove the directory entry ``name`` itself (a file or a link), if there is one."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise UnsafePathError(f"{where} is a directory; expected a file") from None


@contextmanager
def write_part(root: Path, relative: str, durable: bool = True) -> Iterator[int]:
    """Create ``root/relative.part`` afresh and yield a write descriptor to it.

    Missing directories are created; a link anywhere below ``root`` is refused. On
    success the file is fsync'ed (``durable``) and closed, still under its ``.part``
    name (see :func:`publish`); on any error it is removed.
    """
    parent, name = _split(relative)
    part = name + PART_SUFFIX
    with directory(root, parent, create=True) as dir_fd:
        _remove_entry(dir_fd, part, Path(root) / relative)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        try:
            yield fd
            if durable:
                os.fsync(fd)
                drop_cached(fd)  # on disk now: nothing of it needs the cache
        except BaseException:
            os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(part, dir_fd=dir_fd)
            raise
        os.close(fd)


def publish(root: Path, relative: str) -> None:
    """Rename ``root/relative.part`` to ``root/relative`` (replacing a file or link there, never a directory)."""
    parent, name = _split(relative)
    with directory(root, parent) as dir_fd:
        try:
            os.rename(name + PART_SUFFIX, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError:
            raise UnsafePathError(f"{Path(root) / relative} is a directory; expected a file") from None


def discard(root: Path, relative: str) -> None:
    """Remove ``root/relative.part`` if it is there; a path that became unsafe holds nothing of ours."""
    parent, name = _split(relative)
    with suppress(FileNotFoundError, UnsafePathError), directory(root, parent) as dir_fd:
        _remove_entry(dir_fd, name + PART_SUFFIX, Path(root) / relative)


@contextmanager
def open_append(root: Path, relative: str) -> Iterator[int]:
    """An append descriptor to ``root/relative`` (created if missing), never through a link."""
    parent, name = _split(relative)
    with directory(root, parent, create=True) as dir_fd:
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)  # fmt: skip
        except OSError as error:
            if error.errno in _LINK_ERRORS and _is_link(dir_fd, name):
                raise UnsafePathError(
                    f"{Path(root) / relative} is a symbolic link; refusing to write through it"
                ) from None
            raise
        try:
            yield fd
        finally:
            os.close(fd)


def resolve_within(root: Path, relative: str) -> str:
    """The path of ``root/relative`` with every link resolved, relative to the resolved root.

    Raises UnsafePathError if the resolved location is not strictly inside the root.
    """
    parts_of(relative)
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / relative))
    if real == real_root or real_root not in real.parents:
        raise UnsafePathError(f"{Path(root) / relative} resolves to {real}, outside the root {real_root}")
    return real.relative_to(real_root).as_posix()


def _entry(dir_fd: int, name: str, where: Path) -> os.stat_result:
    found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(found.st_mode):
        raise UnsafePathError(f"{where} is a symbolic link")
    if not stat.S_ISREG(found.st_mode):
        raise UnsafePathError(f"{where} is not a regular file")
    return found


def regular_file(root: Path, relative: str) -> os.stat_result | None:
    """``lstat`` of the regular file ``root/relative``, None if absent; links and the like are refused."""
    parent, name = _split(relative)
    try:
        with directory(root, parent) as dir_fd:
            return _entry(dir_fd, name, Path(root) / relative)
    except FileNotFoundError:
        return None


def open_resolved(root: Path, relative: str) -> int:
    """A read descriptor of ``root/relative``, resolved inside the root and opened without links.

    Raises UnsafePathError if the path leaves the root or is not a regular file.
    """
    parent, name = _split(resolve_within(root, relative))
    real_root = Path(os.path.realpath(root))
    with directory(real_root, parent) as dir_fd:
        _entry(dir_fd, name, Path(root) / relative)
        try:
            return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as error:
            if error.errno in _LINK_ERRORS and _is_link(dir_fd, name):
                raise UnsafePathError(f"{Path(root) / relative} became a link while it was opened") from None
            raise


def unlink_file(root: Path, relative: str, inode: int) -> bool:
    """Delete the regular file ``root/relative`` if it is still inode ``inode``; False if already gone.

    Raises UnsafePathError for a link or non-regular entry, or a file replaced meanwhile.
    """
    parent, name = _split(relative)
    try:
        with directory(root, parent) as dir_fd:
            found = _entry(dir_fd, name, Path(root) / relative)
            if found.st_ino != inode:
                raise UnsafePathError(f"{Path(root) / relative} was replaced while it was being deleted")
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True
