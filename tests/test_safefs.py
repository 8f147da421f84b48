"""safefs: nothing below a storage root is written, read or deleted through a link."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ccat_operators import safefs
from ccat_operators.safefs import UnsafePathError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    return victim


def write(root: Path, relative: str, data: bytes) -> None:
    with safefs.write_part(root, relative) as fd:
        os.write(fd, data)
    safefs.publish(root, relative)


@pytest.mark.parametrize("relative", ["", "/etc/passwd", "a/../b", "./a", "a/./b", "a\x00b"])
def test_unusable_relative_paths_are_refused(root: Path, relative: str) -> None:
    with pytest.raises(UnsafePathError):
        safefs.parts_of(relative)


def test_write_creates_directories_and_renames_into_place(root: Path) -> None:
    write(root, "a/b/c.tar", b"data")
    assert (root / "a" / "b" / "c.tar").read_bytes() == b"data"
    assert not (root / "a" / "b" / "c.tar.part").exists()


def test_a_planted_part_link_is_replaced_not_written_through(root: Path, victim: Path) -> None:
    (root / "c.tar.part").symlink_to(victim)
    write(root, "c.tar", b"data")
    assert victim.read_bytes() == b"precious"
    assert (root / "c.tar").read_bytes() == b"data" and not (root / "c.tar").is_symlink()


def test_a_link_at_the_final_name_is_replaced_not_written_through(root: Path, victim: Path) -> None:
    (root / "c.tar").symlink_to(victim)
    write(root, "c.tar", b"data")
    assert victim.read_bytes() == b"precious" and not (root / "c.tar").is_symlink()


def test_a_linked_directory_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "a").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="a is a symbolic link"), safefs.write_part(root, "a/c.tar"):
        pass
    assert list(outside.iterdir()) == []


def test_a_file_where_a_directory_should_be_is_an_os_error_not_a_refusal(root: Path) -> None:
    (root / "a").write_text("not a directory")
    with pytest.raises(NotADirectoryError), safefs.write_part(root, "a/c.tar"):
        pass


def test_a_failed_write_leaves_no_part(root: Path) -> None:
    with pytest.raises(RuntimeError), safefs.write_part(root, "c.tar") as fd:
        os.write(fd, b"half")
        raise RuntimeError("disk full")
    assert list(root.iterdir()) == []


def test_publishing_onto_a_directory_is_refused(root: Path) -> None:
    (root / "c.tar").mkdir()
    with safefs.write_part(root, "c.tar") as fd:
        os.write(fd, b"data")
    with pytest.raises(UnsafePathError, match="is a directory"):
        safefs.publish(root, "c.tar")
    safefs.discard(root, "c.tar")
    assert not (root / "c.tar.part").exists()


def test_resolve_within_follows_links_inside_and_refuses_leaving(root: Path, tmp_path: Path) -> None:
    (root / "2026").mkdir()
    (root / "2026" / "scan.dat").write_bytes(b"scan")
    (root / "latest").symlink_to(root / "2026", target_is_directory=True)
    assert safefs.resolve_within(root, "latest/scan.dat") == "2026/scan.dat"
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="outside the root"):
        safefs.resolve_within(root, "out/secret")
    with pytest.raises(UnsafePathError, match="outside the root"):
        safefs.open_resolved(root, "out/secret")
    with open(safefs.open_resolved(root, "latest/scan.dat"), "rb") as stream:
        assert stream.read() == b"scan"


def test_unlink_removes_only_the_very_file_it_was_shown(root: Path, victim: Path) -> None:
    (root / "x.tar").write_bytes(b"ours")
    found = safefs.regular_file(root, "x.tar")
    (root / "x.tar").unlink()
    (root / "x.tar").write_bytes(b"someone else's")  # replaced meanwhile: another inode
    if (root / "x.tar").stat().st_ino != found.st_ino:
        with pytest.raises(UnsafePathError, match="replaced"):
            safefs.unlink_file(root, "x.tar", found.st_ino)
        assert (root / "x.tar").exists()
    (root / "link.tar").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safefs.regular_file(root, "link.tar")
    assert victim.exists()
    assert safefs.unlink_file(root, "gone.tar", 1) is False


# --- data files stream through the page cache -----------------------------------------------


def data_file(directory: Path, size: int) -> tuple[Path, bytes]:
    """A file of ``size`` random bytes: neither a multiple of a page nor of a block."""
    content = os.urandom(size)
    path = directory / "data.bin"
    path.write_bytes(content)
    return path, content


SIZES = [0, 1, 4095, safefs.DIRECT_BLOCK - 1, 2 * safefs.DIRECT_BLOCK + 12345]


@pytest.mark.parametrize("size", SIZES)
def test_a_streaming_file_reads_every_byte_in_any_size_of_read(tmp_path: Path, size: int) -> None:
    path, content = data_file(tmp_path, size)
    with safefs.StreamingFile(path) as stream:
        assert b"".join(iter(lambda: stream.read(8192), b"")) == content
        stream.seek(0)  # read again after dropping: from the disk, the same bytes
        buffer = bytearray(3 << 20)
        chunks = []
        while count := stream.readinto(buffer):
            chunks.append(bytes(buffer[:count]))
        assert b"".join(chunks) == content and stream.tell() == size


@pytest.mark.parametrize("size", SIZES)
def test_an_uncached_file_reads_every_byte_as_an_upload_reads_it(tmp_path: Path, size: int) -> None:
    path, content = data_file(tmp_path, size)
    with safefs.UncachedFile(path) as stream:
        assert stream.direct  # this filesystem has direct I/O: the page cache is not used
        assert b"".join(iter(lambda: stream.read(8192), b"")) == content
        assert stream.tell() == size and stream.read(8192) == b""
        assert stream.seek(0) == 0 and stream.read() == content  # a retried upload starts over
        stream.seek(-min(10, size), os.SEEK_END)
        assert stream.read(100) == content[-10:]
        stream.seek(0)
        part = safefs.DIRECT_BLOCK + 7  # a multipart upload's part: whole, across blocks
        assert stream.read(part) == content[:part] and stream.read(part) == content[part : 2 * part]


def refuse_direct_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``fcntl`` refuse ``O_DIRECT`` as a filesystem without direct I/O does (EINVAL)."""
    real_fcntl = safefs.fcntl.fcntl

    def no_direct_io(fd: int, command: int, arg: int = 0) -> int:
        if command == safefs.fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, command, arg)

    monkeypatch.setattr(safefs.fcntl, "fcntl", no_direct_io)


def test_an_uncached_file_on_a_filesystem_without_direct_io_reads_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ``O_DIRECT`` is refused (EINVAL from fcntl; tmpfs before Linux 6.6), the same bytes come through."""
    path, content = data_file(tmp_path, safefs.DIRECT_BLOCK + 99)
    refuse_direct_io(monkeypatch)
    with safefs.UncachedFile(path) as stream:
        assert not stream.direct
        assert b"".join(iter(lambda: stream.read(65536), b"")) == content


@pytest.mark.parametrize("direct", [True, False], ids=["direct-io", "no-direct-io"])
def test_write_behind_writes_every_byte_and_write_part_leaves_it_durable(
    root: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    if not direct:
        refuse_direct_io(monkeypatch)
    content = os.urandom(3 * safefs.DIRECT_BLOCK + 5)
    step = (1 << 20) + 7  # pieces that straddle every aligned boundary
    with safefs.write_part(root, "dir/big.tar") as fd, safefs.WriteBehind(fd) as out:
        assert (out._buffer is not None) == direct  # direct I/O where the filesystem takes it
        for start in range(0, len(content), step):
            out.write(content[start : start + step])
        assert (os.fstat(fd).st_size < len(content)) == direct  # direct: the unaligned tail waits for the end
    safefs.publish(root, "dir/big.tar")
    assert (root / "dir" / "big.tar").read_bytes() == content


def test_write_behind_falls_back_to_the_cache_when_a_direct_write_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device whose alignment is not ours refuses the first direct write (EINVAL): no byte is lost."""
    content = os.urandom(2 * safefs.DIRECT_BLOCK + 4099)
    real_write = os.write

    def refusing_write(fd: int, data) -> int:
        if safefs.fcntl.fcntl(fd, safefs.fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(safefs.os, "write", refusing_write)
    with safefs.write_part(root, "odd.tar") as fd, safefs.WriteBehind(fd) as out:
        out.write(content)
        assert out._refused
    safefs.publish(root, "odd.tar")
    assert (root / "odd.tar").read_bytes() == content


def test_write_behind_stopped_by_an_error_writes_nothing_more(root: Path) -> None:
    with pytest.raises(RuntimeError), safefs.write_part(root, "stopped.tar") as fd, safefs.WriteBehind(fd) as out:
        out.write(b"x" * 10_000)
        raise RuntimeError("the source shrank")
    assert not (root / "stopped.tar.part").exists() and not (root / "stopped.tar").exists()
