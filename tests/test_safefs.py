"""safefs: nothing below a storage root is written, read or deleted through a link."""

from __future__ import annotations

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
