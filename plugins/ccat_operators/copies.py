"""The files of a physical copy at a disk location, and whether storage still holds them as recorded.

Deletion (before it removes a copy) and the audit (every run) ask the same two
questions of each file of a copy: where is it, without trusting any link a stranger
planted, and is it the recorded file - its size, and its checksum when that is asked.

- a package tar or bundle tar in a BUFFER: one file at the copy's path;
- a staged copy in a PROCESSING location: the package's raw files under the job's directory;
- a SOURCE copy: the package's raw files as the instrument filed them. Only here may a
  path pass through links, and only links that stay inside the root (the instrument's
  tree is the instrument's); everywhere else a link is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ccat_operators import checksums, safefs
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow
from ccat_operators.states import LocationType


class CopyOnDisk(Protocol):
    """What :func:`copy_files` needs of a copy's row (a scheduled deletion, an audited copy)."""

    @property
    def path(self) -> str: ...
    @property
    def raw_data_package_id(self) -> int | None: ...
    @property
    def data_transfer_package_id(self) -> int | None: ...
    @property
    def checksum(self) -> str | None: ...
    @property
    def package_size(self) -> int | None: ...
    @property
    def bundle_size(self) -> int | None: ...


@dataclass(frozen=True)
class CopyFile:
    """One file of a copy: its path below the location root and what it must be.

    ``resolve_links``: an instrument's source tree may pass through links that stay
    inside the root; the pipeline's own trees (buffers, staged jobs) may not.
    ``inode`` and ``mtime_ns`` (from filing) identify a raw file without re-reading it.
    """

    relative: str
    size: int | None
    checksum: str | None = None
    resolve_links: bool = False
    inode: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class FoundFile:
    """Where a copy's file is on disk, reached without links: ``root/relative``."""

    root: Path
    relative: str
    stat: os.stat_result

    @property
    def path(self) -> Path:
        return self.root / self.relative


def copy_files(db: OpsDb, location: LocationRow, copy: CopyOnDisk) -> list[CopyFile]:
    """The files that make up one copy at a disk location."""
    if copy.data_transfer_package_id is not None:
        return [CopyFile(copy.path, copy.bundle_size, copy.checksum)]
    if location.location_type == LocationType.BUFFER:
        return [CopyFile(copy.path, copy.package_size, copy.checksum)]
    files = db.fetch_all("files_of_package", package_id=copy.raw_data_package_id)
    if location.location_type == LocationType.PROCESSING:
        return [CopyFile(f"{copy.path}/{f.relative_path}", f.size_bytes, f.checksum) for f in files]
    return [  # SOURCE: the raw files themselves, as filed
        CopyFile(f.relative_path, f.size_bytes, f.checksum, True,
                 None if f.inode is None else int(f.inode), f.mtime_ns)
        for f in files
    ]  # fmt: skip


def locate(root: Path, file: CopyFile) -> FoundFile | None:
    """Find ``file`` below ``root`` without following a link it may not follow; None if absent.

    Raises UnsafePathError if the path leaves the root, goes through a link (outside an
    instrument's tree), or leads to something other than a regular file.
    """
    relative = file.relative
    if file.resolve_links:
        relative = safefs.resolve_within(root, file.relative)
        root = Path(os.path.realpath(root))
    found = safefs.regular_file(root, relative)
    return None if found is None else FoundFile(root, relative, found)


def unchanged_since_filing(file: CopyFile, found: FoundFile) -> bool:
    """True if a raw file is still the very file that was hashed at filing (same inode and mtime)."""
    return file.inode is not None and (file.inode, file.mtime_ns) == (found.stat.st_ino, found.stat.st_mtime_ns)


def checksum_of(found: FoundFile, algorithm: str) -> str:
    """``algorithm:hex`` of a found file, read without following links."""
    with safefs.StreamingFile(safefs.open_resolved(found.root, found.relative)) as stream:
        return checksums.stream_checksum(stream, algorithm)
