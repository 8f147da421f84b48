"""Packaging: filed raw files -> RawDataPackage tars in the site's BUFFER.

Two steps, each safe to re-run, kill or overlap:

``plan_packages``
    In one transaction, claims unpackaged files of a SOURCE location (``FOR UPDATE
    SKIP LOCKED``), groups them by ExecutedObsUnit x InstrumentModule, splits each group
    into packages no larger than the location's ``package_size_limit`` (path order, so
    directory neighbours stay together; a single larger file gets a package of its own,
    flagged ``oversized``), and records the packages PENDING with their files. A file is
    in exactly one package, and no claimed file is left out.

``write_packages``
    Works through the location's PENDING packages: PENDING -> SCHEDULED (claim) ->
    IN_PROGRESS -> COMPLETED | FAILED. Each package is written as a tar straight into the
    site's primary BUFFER (lowest priority number among active buffers with enough free
    space) under a temporary name, with the package checksum and every member checksum
    computed in the same pass, then renamed. A worker holds a lease on the package
    while it works; packages left SCHEDULED / IN_PROGRESS by a worker that died (lease
    free) are handed back to PENDING at the start of the next run.

A missing or changed file fails only its own package, with the reason in ops-db; no
source file is ever deleted or modified here.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path, PurePosixPath
from typing import Any

from ccat_operators import checksums, metrics, safefs, states, work
from ccat_operators.faults import ItemFault, ItemWaits
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import BufferRow, LocationRow, PackageRow, UnpackagedFileRow
from ccat_operators.tarstream import Member, MemberChangedError, WrittenArchive, archive_size, write_archive
from ccat_operators.topology import SETTINGS

log = logging.getLogger(__name__)

PLAN_BATCH = 50_000
CLAIM_BATCH = 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class FileToPackage:
    id: Any
    relative_path: str
    size: int


def split_group(files: Sequence[FileToPackage], limit: int) -> list[tuple[list[FileToPackage], bool]]:
    """Split one observation x module group into packages of at most ``limit`` bytes.

    Files stay in the given (path) order. A file larger than ``limit`` becomes a package
    of its own; the second element of each pair says whether the package is oversized.
    """
    packages: list[tuple[list[FileToPackage], bool]] = []
    current: list[FileToPackage] = []
    current_size = 0
    for file in files:
        if file.size > limit:
            packages.append(([file], True))
            continue
        if current and current_size + file.size > limit:
            packages.append((current, False))
            current, current_size = [], 0
        current.append(file)
        current_size += file.size
    if current:
        packages.append((current, False))
    return packages


def package_name(row: UnpackagedFileRow, first_file_id: Any) -> str:
    """A readable, unique name: instrument, module, obs unit, start, first file's id."""
    parts = (row.instrument, row.module, row.obs_unit, f"{row.start_time:%Y%m%dT%H%M%SZ}")
    readable = "_".join(_UNSAFE.sub("-", part) for part in parts)
    return f"{readable}_{str(first_file_id)[:8]}"


def package_path(row: UnpackagedFileRow, name: str) -> str:
    """Where the tar lives under a buffer root: by instrument and observation date."""
    return f"raw_data_packages/{_UNSAFE.sub('-', row.instrument)}/{row.start_time:%Y-%m-%d}/{name}.tar"


@dataclass
class PlanResult:
    packages: list[int] = field(default_factory=list)
    files: int = 0
    oversized: int = 0


def plan_packages(db: OpsDb, location: LocationRow, batch: int = PLAN_BATCH) -> PlanResult:
    """Group the location's unpackaged files into PENDING packages (see module doc)."""
    limit = location.settings.get("package_size_limit", SETTINGS["package_size_limit"][1])
    result = PlanResult()
    while True:
        with db.transaction():
            rows = db.fetch_all("claim_unpackaged_files", location_id=location.id, limit=batch)
            groups = [list(g) for _, g in groupby(rows, key=lambda r: (r.executed_obs_unit_id, r.instrument_module_id))]
            if len(rows) == batch and len(groups) > 1:
                groups.pop()  # it may go on past this batch: package it whole next time round
            for group in groups:
                files = [FileToPackage(r.id, r.relative_path, r.size_bytes) for r in group]
                for members, oversized in split_group(files, limit):
                    result.packages.append(_record_package(db, location, group[0], members, oversized))
                    result.files += len(members)
                    result.oversized += oversized
        if len(rows) < batch:
            return result


def _record_package(
    db: OpsDb, location: LocationRow, row: UnpackagedFileRow, members: list[FileToPackage], oversized: bool
) -> int:
    name = package_name(row, members[0].id)
    package_id = db.fetch_value(
        "insert_raw_data_package",
        name=name,
        executed_obs_unit_id=row.executed_obs_unit_id,
        instrument_module_id=row.instrument_module_id,
        source_location_id=location.id,
        relative_path=package_path(row, name),
        size_bytes=None,
        oversized=oversized,
    )
    assigned = db.execute("assign_files_to_package", package_id=package_id, file_ids=[m.id for m in members])
    if assigned != len(members):
        raise RuntimeError(f"package {name}: {len(members) - assigned} file(s) were packaged concurrently")
    if oversized:
        log.warning("package %s holds one file larger than the package size limit", name)
    return package_id


def write_packages(db: OpsDb, location: LocationRow) -> work.WorkResult:
    """Write every PENDING package of a SOURCE location into its site's buffer (see :func:`work.run`)."""
    result = work.WorkResult()
    result.reclaimed = work.reclaim_abandoned(
        db, states.PACKAGE, "find_unfinished_raw_data_packages", location_id=location.id
    )
    waited: set[int] = set()
    while claimed := states.claim(db, states.PACKAGE, waited, location_id=location.id, limit=CLAIM_BATCH):
        work.run(db, states.PACKAGE, claimed, lambda row: _write(db, row.id), result)
        waited |= {row.id for row in claimed if row.name in result.waiting}
    return result


def _write(db: OpsDb, package_id: int) -> work.Record:
    """Write one package's tar into its site's buffer; return what records it."""
    package = db.fetch_one("raw_data_package", id=package_id)
    files = db.fetch_all("files_of_package", package_id=package_id)
    source_root = Path(package.source_root)
    members = [
        Member(
            source=source_root / f.relative_path,
            arcname=f.relative_path,
            size=f.size_bytes,
            checksum_algorithm=checksums.parse(f.checksum)[0],
            expected_checksum=f.checksum,
            root=source_root,
        )
        for f in files
    ]
    started = time.monotonic()
    archive, buffer = _write_to_a_buffer(db, package, members, archive_size((m.arcname, m.size) for m in members))
    metrics.throughput(
        "packaging",
        {"site": package.site, "location": buffer.name, "checksum_algorithm": checksums.parse(archive.checksum)[0]},
        archive.size,
        time.monotonic() - started,
        files=len(files),
    )
    log.info("package %s: %d files, %d bytes, %s", package.name, len(files), archive.size, archive.checksum)

    def record() -> None:
        db.execute("record_raw_data_package_written", id=package.id, size_bytes=archive.size, checksum=archive.checksum)
        states.record_package_copy(db, buffer.id, package.id, package.relative_path, archive.checksum)
        source_directory = common_directory(f.relative_path for f in files)
        states.record_package_copy(db, package.source_location_id, package.id, source_directory, None)

    return record


def common_directory(paths: Iterable[str]) -> str:
    """The deepest directory containing every path (the package's files at the source)."""
    parents = [PurePosixPath(p).parent.parts for p in paths]
    common: list[str] = []
    for parts in zip(*parents, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common) or "."


def _write_to_a_buffer(
    db: OpsDb, package: PackageRow, members: list[Member], size: int
) -> tuple[WrittenArchive, BufferRow]:
    """Write the package's tar into the site's first active buffer with room for it.

    A buffer that turns out full while writing (ENOSPC) is left for the next one; with no
    buffer left the package waits (ItemWaits): PENDING with the reason, the others go on.
    """
    buffers, reasons = buffers_with_room(db, package.site, size)
    for buffer in buffers:
        algorithm = buffer.settings.get("checksum_algorithm", checksums.DEFAULT_ALGORITHM)
        try:
            return write_archive(Path(buffer.root_path), package.relative_path, members, algorithm), buffer
        except MemberChangedError as error:
            raise ItemFault(f"source file changed or missing: {error}") from error
        except safefs.UnsafePathError as error:
            raise ItemFault(f"refused: {error}") from error
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            reasons.append(f"{package.site}/{buffer.name}: filled up while writing")
            log.warning("buffer %s/%s is full; package %s goes to the next buffer", package.site, buffer.name,
                        package.name)  # fmt: skip
    raise ItemWaits(f"no active buffer at site {package.site} has room for {size} bytes: " + "; ".join(reasons))


def buffers_with_room(db: OpsDb, site: str, size: int) -> tuple[list[BufferRow], list[str]]:
    """The site's active buffers with room for ``size`` more bytes (priority order), and why the others lack it.

    A buffer has room when its free space after the write stays at or above its
    ``min_free_space`` setting; one that is not mounted has none.
    """
    site_id = db.fetch_value("site_id", short_name=site)
    roomy, reasons = [], []
    for buffer in db.fetch_all("active_buffers_of_site", site_id=site_id):
        root = Path(buffer.root_path)
        reserve = buffer.settings.get("min_free_space", 0)
        try:
            free = shutil.disk_usage(root).free
        except FileNotFoundError:
            reasons.append(f"{site}/{buffer.name}: {root} is not mounted")
            continue
        if free - size < reserve:
            reasons.append(f"{site}/{buffer.name}: {free} bytes free, needs {size} + reserve {reserve}")
            continue
        roomy.append(buffer)
    if not roomy and not reasons:
        reasons.append("none is active")
    return roomy, reasons
