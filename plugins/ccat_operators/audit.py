"""Audit: what ops-db says is at a location, against what its storage holds (consistency and fixity).

Rucio's auditor and the fixity audits of digital-preservation systems ask the same
questions, and so does ``audit_location`` for one location, on that location's queue:

- **lost**: a copy ops-db records as PRESENT / STAGED whose file (or S3 object) is absent;
- **corrupt**: present, but not the recorded bytes - a wrong size (checked every run), or
  a wrong checksum, found by a rolling re-read: every copy last verified longer ago than
  the location's ``audit_period`` is read again (an S3 object by HEAD: size, our checksum
  metadata and, for sha256 single-part objects, the server's checksum; with
  ``audit_full_read`` the whole object is read and hashed), so every copy is
  re-verified within the period;
- **dark**: a file (object) on storage that ops-db knows nothing of, older than the
  location's ``audit_dark_grace``. Dark data is reported, never deleted.

A lost or corrupt copy is marked LOST / CORRUPT (no rule counts it as a copy any more:
deletion will not treat it as "another verified copy") and repaired where another
verified copy exists:

- a package tar in a BUFFER: fetched from an archive holding a verified copy (the
  location's own site first) and verified; or, if no archive holds it yet, its bundle is
  sent again from the transfer's origin and unpacked again;
- an object in an S3 archive: archived again from a verified buffer copy (one fetched
  first from another archive if the buffer copy is gone);
- a bundle tar: sent again, if it is not unpacked yet;
- raw files at a SOURCE and staged files in a PROCESSING location are the instrument's and
  the scientist's: marked and reported, not repaired.

Every finding is kept in ``audit_finding`` until a later run sees it resolved (repaired,
or the dark file gone or filed). Results go to the log, the metrics (``audit``) and
``ccat status``; ``ccat audit [--location L]`` runs the audit on demand.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ccat_operators import archive, checksums, copies, metrics, s3, safefs, states
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import AuditCopyRow, LocationRow
from ccat_operators.states import LocationType, PhysicalCopyStatus, Status, StorageType
from ccat_operators.topology import SETTINGS

log = logging.getLogger(__name__)

BATCH = 1000
#: Directories of ours below a location root that hold no data (transfer logs).
OWN_DIRECTORIES = frozenset({".ccat"})
#: Paths looked up in ops-db at a time while looking for dark files.
LOOKUP_BATCH = 5000


@dataclass
class AuditResult:
    """What one audit of one location found and did, by path."""

    location: str
    checked: int = 0
    verified: int = 0
    lost: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    dark: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per finding, for a log or a terminal."""
        out = [f"{self.location}: {self.checked} copies checked, {self.verified} re-read, "
               f"{len(self.lost)} lost, {len(self.corrupt)} corrupt, {len(self.dark)} dark"]  # fmt: skip
        out += [f"  lost: {path}" for path in self.lost]
        out += [f"  corrupt: {path}" for path in self.corrupt]
        out += [f"  dark: {path}" for path in self.dark]
        out += [f"  repaired: {path}" for path in self.repaired]
        out += [f"  not repaired: {path}: {why}" for path, why in self.unrepaired.items()]
        return out


def setting(location: LocationRow, name: str):
    """The location's value of an audit setting, else its default."""
    return location.settings.get(name, SETTINGS[name][1])


def audit_location(db: OpsDb, location: LocationRow, repair: bool = True) -> AuditResult:
    """Audit one location (see module doc); repair what can be repaired unless ``repair`` is False."""
    result = AuditResult(f"{location.site}/{location.name}")
    started = datetime.now(UTC)
    period = f"{int(setting(location, 'audit_period'))} seconds"
    if location.storage_type == StorageType.S3:
        inspector: _Inspector = _S3Inspector(db, location)
    elif location.root_path and Path(location.root_path).is_dir():
        inspector = _DiskInspector(db, location)
    else:
        raise FileNotFoundError(f"{result.location}: {location.root_path} is not mounted here")
    after = 0
    while rows := db.fetch_all("audit_live_copies", location_id=location.id, period=period, after_id=after,
                               limit=BATCH):  # fmt: skip
        for copy in rows:
            result.checked += 1
            problem = inspector.check(copy)
            if problem is None:
                if copy.due:
                    result.verified += 1
                    db.fetch_value("mark_copy_verified", id=copy.id)
                continue
            kind, detail = problem
            new = PhysicalCopyStatus.LOST if kind == "lost" else PhysicalCopyStatus.CORRUPT
            states.move(db, states.COPY, copy.id, copy.status, new, detail)
            (result.lost if kind == "lost" else result.corrupt).append(copy.path)
            log.error("%s: %s copy %s: %s", result.location, kind, copy.path, detail)
            _record(db, location, kind, copy.path, copy.id, detail)
        after = rows[-1].id
    for copy in db.fetch_all("audit_broken_copies", location_id=location.id, limit=BATCH):
        if repair:
            _repair(db, location, copy, result)
    for path, detail in inspector.dark(setting(location, "audit_dark_grace")):
        result.dark.append(path)
        _record(db, location, "dark", path, None, detail)
    db.execute("resolve_audit_findings", location_id=location.id, run_started=started)
    metrics.record("audit", {"site": location.site, "location": location.name},
                   {"checked": result.checked, "verified": result.verified, "lost": len(result.lost),
                    "corrupt": len(result.corrupt), "dark": len(result.dark), "repaired": len(result.repaired),
                    "unrepaired": len(result.unrepaired)})  # fmt: skip
    for line in result.lines():
        log.info("audit %s", line)
    return result


def _record(db: OpsDb, location: LocationRow, kind: str, path: str, copy_id: int | None, detail: str,
            repair: str | None = None) -> None:  # fmt: skip
    db.fetch_value("record_audit_finding", location_id=location.id, kind=kind, path=path, copy_id=copy_id,
                   detail=detail, repair=repair)  # fmt: skip


# Inspecting storage -------------------------------------------------------------------------


class _Inspector:
    """How one kind of storage answers: is a copy there as recorded, and what else is there."""

    def check(self, copy: AuditCopyRow) -> tuple[str, str] | None:
        """``("lost" | "corrupt", detail)``, or None if the copy is there as recorded."""
        raise NotImplementedError

    def dark(self, grace: int) -> list[tuple[str, str]]:
        """``(path, detail)`` of what is on storage, unknown to ops-db, older than ``grace`` seconds."""
        raise NotImplementedError


class _DiskInspector(_Inspector):
    def __init__(self, db: OpsDb, location: LocationRow) -> None:
        self.db, self.location, self.root = db, location, Path(location.root_path)

    def check(self, copy: AuditCopyRow) -> tuple[str, str] | None:
        for file in copies.copy_files(self.db, self.location, copy):
            try:
                found = copies.locate(self.root, file)
            except safefs.UnsafePathError as error:
                return "corrupt", str(error)
            if found is None:
                return "lost", f"{self.root / file.relative} is missing"
            if file.size is not None and found.stat.st_size != file.size:
                return "corrupt", f"{found.path} is {found.stat.st_size} bytes, recorded as {file.size}"
            if copy.due and file.checksum is not None:
                actual = copies.checksum_of(found, checksums.parse(file.checksum)[0])
                if actual != file.checksum:
                    return "corrupt", f"{found.path} reads {actual}, recorded as {file.checksum}"
        return None

    def dark(self, grace: int) -> list[tuple[str, str]]:
        cutoff = time.time() - grace
        found: list[tuple[str, str]] = []
        batch: dict[str, str] = {}
        for relative, entry in _walk(self.root):
            stat = entry.stat(follow_symlinks=False)
            if stat.st_mtime >= cutoff:
                continue
            kind = "a symbolic link" if entry.is_symlink() else f"{stat.st_size} bytes"
            batch[relative] = f"{kind}, modified {datetime.fromtimestamp(stat.st_mtime, UTC):%Y-%m-%d %H:%M}"
            if len(batch) >= LOOKUP_BATCH:
                found += self._unknown(batch)
                batch = {}
        return found + self._unknown(batch)

    def _unknown(self, batch: dict[str, str]) -> list[tuple[str, str]]:
        if not batch:
            return []
        unknown = self.db.fetch_column("unknown_paths", location_id=self.location.id, paths=list(batch))
        return [(path, f"unknown to ops-db: {batch[path]}") for path in sorted(unknown)]


def _walk(root: Path, relative: str = ""):
    """``(relative path, DirEntry)`` of each file and link below ``root``; links and our own directories not entered."""
    with os.scandir(root / relative if relative else root) as entries:
        for entry in entries:
            path = f"{relative}/{entry.name}" if relative else entry.name
            if entry.is_dir(follow_symlinks=False):
                if not (relative == "" and entry.name in OWN_DIRECTORIES):
                    yield from _walk(root, path)
            else:
                yield path, entry


class _S3Inspector(_Inspector):
    def __init__(self, db: OpsDb, location: LocationRow) -> None:
        self.db, self.location = db, location
        self.client = s3.client(location)
        self.bucket, self.prefix = location.s3_bucket, location.s3_prefix or ""
        self.full_read = bool(setting(location, "audit_full_read"))
        self.listing = {entry["Key"]: entry for entry in self._list()}

    def _list(self):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            yield from page.get("Contents", [])

    def check(self, copy: AuditCopyRow) -> tuple[str, str] | None:
        listed = self.listing.get(copy.path)
        where = f"s3://{self.bucket}/{copy.path}"
        if listed is None:
            return "lost", f"{where} is missing"
        if copy.package_size is not None and listed.get("Size") != copy.package_size:
            return "corrupt", f"{where} is {listed.get('Size')} bytes, recorded as {copy.package_size}"
        if not copy.due or copy.checksum is None:
            return None
        found = s3.head(self.client, self.bucket, copy.path)
        if not archive.is_verified(found, copy.package_size, copy.checksum, _single_part_sha256(copy.checksum, found)):
            return "corrupt", f"{where}: its HEAD does not match {copy.checksum}"
        if self.full_read:
            actual = _object_checksum(self.client, self.bucket, copy.path, checksums.parse(copy.checksum)[0])
            if actual != copy.checksum:
                return "corrupt", f"{where} reads {actual}, recorded as {copy.checksum}"
        return None

    def dark(self, grace: int) -> list[tuple[str, str]]:
        cutoff = time.time() - grace
        old = {key: f"{entry.get('Size')} bytes, modified {entry['LastModified']:%Y-%m-%d %H:%M}"
               for key, entry in self.listing.items() if entry["LastModified"].timestamp() < cutoff}  # fmt: skip
        unknown = self.db.fetch_column("unknown_paths", location_id=self.location.id, paths=list(old))
        return [(key, f"unknown to ops-db: {old[key]}") for key in sorted(unknown)]


def _single_part_sha256(checksum: str, found: dict | None) -> str | None:
    """The server checksum a sha256 package must show, unless the object was uploaded in parts."""
    algorithm, digest = checksums.parse(checksum)
    server = (found or {}).get("ChecksumSHA256") or ""
    if algorithm != "sha256" or "-" in server:
        return None
    return base64.b64encode(bytes.fromhex(digest)).decode()


def _object_checksum(client, bucket: str, key: str, algorithm: str) -> str:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        hasher = checksums.new_hasher(algorithm)
        while data := body.read(checksums.READ_SIZE):
            hasher.update(data)
    finally:
        body.close()
    return f"{algorithm}:{hasher.hexdigest()}"


# Repairing ----------------------------------------------------------------------------------


def _repair(db: OpsDb, location: LocationRow, copy: AuditCopyRow, result: AuditResult) -> None:
    """Repair a LOST / CORRUPT copy from another verified copy, or say why it cannot be."""
    kind = "lost" if copy.status == PhysicalCopyStatus.LOST else "corrupt"
    try:
        how = _repair_how(db, location, copy)
    except (OSError, safefs.UnsafePathError, archive.ArchiveVerificationError) as error:
        how = None, f"the repair failed: {error}"
    repaired, note = how
    if repaired:
        result.repaired.append(copy.path)
        log.warning("%s: %s copy %s: %s", result.location, kind, copy.path, note)
    else:
        result.unrepaired[copy.path] = note
        log.error("%s: %s copy %s cannot be repaired: %s", result.location, kind, copy.path, note)
    _record(db, location, kind, copy.path, copy.id, f"found {kind}", note)


def _repair_how(db: OpsDb, location: LocationRow, copy: AuditCopyRow) -> tuple[bool, str]:
    if copy.data_transfer_package_id is not None:
        return _resend(db, location, copy.data_transfer_package_id, "its bundle is sent again")
    package = db.fetch_one("package_for_repair", id=copy.raw_data_package_id)
    if location.location_type == LocationType.LONG_TERM_ARCHIVE:
        return _archive_again(db, location, package)
    if location.location_type == LocationType.BUFFER:
        if restore_from_archive(db, location, package):
            return True, "fetched again from an archive and verified"
        return _resend(db, location, package.data_transfer_package_id, "its bundle is sent again and unpacked")
    if location.location_type == LocationType.SOURCE:
        state = "archived: nothing is lost" if package.archived_at else "NOT archived yet: its buffer copies hold it"
        return False, f"the instrument's files changed or went; the package is {state}"
    return False, "a staged copy: ask for the observations again to stage them anew"


def _resend(db: OpsDb, location: LocationRow, bundle_id: int | None, how: str) -> tuple[bool, str]:
    transfer = None
    if bundle_id is not None:
        transfer = db.fetch_one("transfer_into", bundle_id=bundle_id, location_id=location.id)
    if transfer is None:
        return False, "no other verified copy to repair from (no archive holds it, no transfer brought it here)"
    if transfer.status != Status.COMPLETED:
        return True, f"its transfer (id {transfer.id}) is {transfer.status}: it will arrive again"
    if not transfer.origin_has_bundle:
        return False, "no other verified copy to repair from (no archive holds it; its bundle left the origin)"
    states.resend(db, transfer.id, "audit: what it delivered is lost or corrupt; sent again")
    return True, f"{how} (transfer {transfer.id})"


def _archive_again(db: OpsDb, location: LocationRow, package) -> tuple[bool, str]:
    transfer = db.fetch_one("archive_transfer_into", package_id=package.id, location_id=location.id)
    if transfer is None:
        return False, "no archive transfer brought it here"
    origin = db.fetch_one("data_location_by_id", id=transfer.origin_location_id)
    buffer_copy = db.fetch_one("package_copy_at", package_id=package.id, location_id=origin.id)
    has_buffer_copy = buffer_copy is not None and buffer_copy.status == PhysicalCopyStatus.PRESENT
    if not has_buffer_copy and not restore_from_archive(db, origin, package, exclude_location=location.id):
        return False, f"no verified copy to archive it again from ({origin.site}/{origin.name} has none)"
    if transfer.status == Status.COMPLETED:
        states.move(db, states.ARCHIVE, transfer.id, Status.COMPLETED, Status.PENDING,
                    "audit: the archived object is lost or corrupt; archived again")  # fmt: skip
    return True, f"archived again from {origin.site}/{origin.name} by the next archive run"


def restore_from_archive(
    db: OpsDb, buffer: LocationRow, package, exclude_location: int | None = None, client_factory=s3.client
) -> bool:
    """Write a package's tar into ``buffer`` from a verified archive copy; False if no archive has one.

    The object is streamed into ``<relative_path>.part`` and hashed on the way; only if it
    is the package's recorded checksum is it renamed into place and recorded PRESENT.
    """
    sources = [c for c in db.fetch_all("archive_copies_of_package", package_id=package.id, site_id=buffer.site_id)
               if c.location_id != exclude_location]  # fmt: skip
    algorithm = checksums.parse(package.checksum)[0]
    for source in sources:
        body = client_factory(source).get_object(Bucket=source.s3_bucket, Key=source.path)["Body"]
        hasher = checksums.new_hasher(algorithm)
        try:
            with safefs.write_part(Path(buffer.root_path), package.relative_path) as fd, safefs.WriteBehind(fd) as out:
                while data := body.read(checksums.READ_SIZE):
                    hasher.update(data)
                    out.write(data)
        finally:
            body.close()
        if f"{algorithm}:{hasher.hexdigest()}" != package.checksum:
            safefs.discard(Path(buffer.root_path), package.relative_path)
            log.error("archive copy %s/%s of %s does not verify; trying another", source.site, source.name,
                      package.name)  # fmt: skip
            continue
        safefs.publish(Path(buffer.root_path), package.relative_path)
        states.record_package_copy(db, buffer.id, package.id, package.relative_path, package.checksum)
        return True
    return False
