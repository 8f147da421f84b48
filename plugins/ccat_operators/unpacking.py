"""Unpacking: an arrived DataTransferPackage -> verified RawDataPackages in the buffer.

One streaming pass over the bundle tar: the bundle checksum is computed on the bytes as
they are read while each member (a RawDataPackage tar) is written to ``<path>.part``.
Only when the bundle checksum matches ops-db (and each member's size and name) are the
``.part`` files renamed and PhysicalCopy rows recorded; otherwise every ``.part`` of
this try is removed, whatever stopped it.

The packages are not hashed again when the bundle checksum is sha256: bundling checked
every package against its recorded checksum while hashing the very same bytes into the
bundle checksum, so a bundle that matches it holds exactly the checked packages (see
:func:`tarstream.extract_verified`, ``members_proven``). With ``xxh3_128``, which
proves nothing against a forger, every package is hashed as well.

The tar stream is not trusted: it is read by :func:`tarstream.extract_verified`, whose
bounded parser refuses (:class:`TarRefusedError`) malformed headers, absurd size claims,
truncation, links, devices and members that are not packages of this bundle. Files are
written without following any link in the destination (:mod:`ccat_operators.safefs`).
The work loop is :func:`work.run`.

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
from dataclasses import dataclass, field
from pathlib import Path

from ccat_operators import checksums, safefs, states, work
from ccat_operators.bundling import bundle_path
from ccat_operators.faults import ItemFault
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow, TransferRow, WorkItemRow
from ccat_operators.tarstream import ExpectedMember, Extracted, TarRefusedError, extract_verified

log = logging.getLogger(__name__)

CLAIM_BATCH = 100
#: Fresh transfers of a bundle that arrived damaged before the unpack is FAILED.
MAX_REDELIVERIES = 3


def extract_bundle(
    bundle_file: Path, bundle_checksum: str, packages: list[ExpectedMember], root: Path, durable: bool = True
) -> Extracted:
    """Extract and verify every package of a bundle file into ``root`` as ``.part`` files."""
    with safefs.StreamingFile(bundle_file) as raw:
        return extract_verified(raw, bundle_checksum, packages, root, durable=durable, members_proven=True)


@dataclass
class UnpackResult(work.WorkResult):
    redelivered: dict[str, str] = field(default_factory=dict)


def unpack_arrived(db: OpsDb, location: LocationRow) -> UnpackResult:
    """Unpack every arrived bundle waiting at a destination buffer.

    A refused bundle fails (or is sent again) by itself; the others are unpacked. An
    error of the storage itself (disk full, I/O error) puts the bundle back to PENDING
    and is raised, so the task retries.
    """
    result = UnpackResult()
    root = Path(location.root_path)
    arrived = db.fetch_all("claim_unpackable_transfers", location_id=location.id, limit=CLAIM_BATCH)

    def attempt(row: WorkItemRow) -> work.Record:
        return _unpack(db, db.fetch_one("data_transfer", id=row.id), root, location)

    def on_fault(
        db: OpsDb, column: states.StatusColumn, row: WorkItemRow, fault: ItemFault, result: UnpackResult
    ) -> None:
        transfer = db.fetch_one("data_transfer", id=row.id)
        relative = bundle_path(transfer.bundle)
        if isinstance(fault, safefs.UnsafePathError) or _arrived_intact(root, relative, transfer.checksum):
            work.fail(db, column, row, ItemFault(f"unpack refused: {fault}"), result)
        else:
            _redeliver(db, transfer, location, root, f"arrived copy is damaged ({fault})", result)

    work.run(db, states.UNPACK, arrived, attempt, result, on_fault=on_fault)
    return result


def _unpack(db: OpsDb, transfer: TransferRow, root: Path, location: LocationRow) -> work.Record:
    """Extract and verify the bundle, publish its packages; return what records them."""
    packages = db.fetch_all("packages_of_bundle_by_id", bundle_id=transfer.data_transfer_package_id)
    try:
        extracted = extract_bundle(root / bundle_path(transfer.bundle), transfer.checksum, packages, root)
    except FileNotFoundError as error:
        raise TarRefusedError(f"the arrived bundle is missing ({error.filename})") from None
    try:
        extracted.publish()
    except safefs.UnsafePathError:
        extracted.discard()
        raise

    def record() -> None:
        for package in extracted.packages:
            states.record_package_copy(db, location.id, package.id, package.relative_path, package.checksum)
        log.info("bundle %s: %d package(s) unpacked and verified", transfer.bundle, len(extracted.packages))

    return record


def _arrived_intact(root: Path, relative: str, checksum: str) -> bool:
    """True if the arrived bundle file is byte for byte the bundle that was recorded and sent."""
    try:
        fd = safefs.open_resolved(root, relative)
    except (FileNotFoundError, safefs.UnsafePathError):
        return False
    with safefs.StreamingFile(fd) as stream:
        return checksums.stream_checksum(stream, checksums.parse(checksum)[0]) == checksum


def _redeliver(
    db: OpsDb, transfer: TransferRow, location: LocationRow, root: Path, reason: str, result: UnpackResult
) -> None:
    """Remove a damaged arrival and send the transfer again, or fail it after ``MAX_REDELIVERIES``."""
    row = WorkItemRow(transfer.id, transfer.bundle)
    if transfer.redeliveries >= MAX_REDELIVERIES:
        fault = ItemFault(f"{reason}; already sent again {MAX_REDELIVERIES} times")
        work.fail(db, states.UNPACK, row, fault, result)
        return
    with db.transaction():
        copy = db.fetch_one("bundle_copy_at", bundle_id=transfer.data_transfer_package_id, location_id=location.id)
        if copy is not None and copy.status == states.PhysicalCopyStatus.PRESENT:
            states.discard_copy(db, copy.id, reason)
        count = states.redeliver(db, transfer.id, f"{reason}; sent again")
        if count is None:
            raise RuntimeError(f"transfer {transfer.id} changed while its unpack was refused")
        _remove_damaged(root, bundle_path(transfer.bundle))
    log.error("bundle %s at %s: %s; it will be sent again (%d of %d)", transfer.bundle, location.name, reason,
              count, MAX_REDELIVERIES)  # fmt: skip
    result.redelivered[transfer.bundle] = reason


def _remove_damaged(root: Path, relative: str) -> None:
    """Remove our damaged arrived file (a link planted at its name is left for the next transfer to replace)."""
    try:
        found = safefs.regular_file(root, relative)
    except safefs.UnsafePathError as error:
        log.warning("damaged arrival not removed: %s", error)
        return
    if found is not None:
        safefs.unlink_file(root, relative, found.st_ino)
