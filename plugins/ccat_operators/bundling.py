"""Bundling: completed RawDataPackages in a BUFFER -> DataTransferPackage tars.

``plan_bundles``
    In one transaction, claims the buffer's completed, unbundled packages (``FOR UPDATE
    SKIP LOCKED``) and packs them first-fit decreasing into bundles of at most the
    location's ``bundle_size_limit``. A bundle leaves when it is full (at least
    ``fill_target`` of the limit) or when its oldest package has waited longer than
    ``bundle_max_age``, so a trickle of data still moves; the rest wait for the next run.

``write_bundles``
    Writes PENDING bundles as tars of their package tars (member names are the packages'
    buffer paths, so unpacking recreates the layout), verifying every package against its
    recorded checksum and computing the bundle checksum in the same pass, under a
    temporary name then renamed; leases and reclaiming work as in packaging.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ccat_operators import checksums, metrics, safefs, states, work
from ccat_operators.faults import ItemFault
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow
from ccat_operators.tarstream import Member, MemberChangedError, write_archive
from ccat_operators.topology import SETTINGS

log = logging.getLogger(__name__)

FILL_TARGET = 0.95
PLAN_BATCH = 100_000
CLAIM_BATCH = 5


@dataclass(frozen=True)
class Item:
    id: int
    size: int
    completed_at: datetime


@dataclass
class Bin:
    items: list[Item] = field(default_factory=list)
    size: int = 0

    @property
    def oldest(self) -> datetime:
        return min(item.completed_at for item in self.items)


def first_fit_decreasing(items: list[Item], limit: int) -> list[Bin]:
    """Pack items into bins of at most ``limit`` bytes, largest first, each into the first bin it fits.

    An item larger than ``limit`` gets a bin of its own.
    """
    bins: list[Bin] = []
    for item in sorted(items, key=lambda i: (-i.size, i.id)):
        target = next((b for b in bins if b.size + item.size <= limit), None)
        if target is None:
            target = Bin()
            bins.append(target)
        target.items.append(item)
        target.size += item.size
    return bins


def bins_to_send(
    bins: list[Bin], limit: int, max_age: timedelta, now: datetime, fill_target: float = FILL_TARGET
) -> list[Bin]:
    """The bins that leave now: full enough, oversized, or holding a package older than ``max_age``."""
    return [b for b in bins if b.size >= fill_target * limit or now - b.oldest >= max_age]


def bundle_path(name: str) -> str:
    return f"data_transfer_packages/{name}.tar"


def plan_bundles(db: OpsDb, location: LocationRow, now: datetime | None = None) -> list[int]:
    """Create PENDING DataTransferPackages from the buffer's unbundled packages (see module doc)."""
    settings = location.settings
    limit = settings.get("bundle_size_limit", SETTINGS["bundle_size_limit"][1])
    max_age = timedelta(seconds=settings.get("bundle_max_age", SETTINGS["bundle_max_age"][1]))
    now = now or datetime.now(UTC)
    created = []
    with db.transaction():
        rows = db.fetch_all("claim_unbundled_packages", location_id=location.id, limit=PLAN_BATCH)
        items = [Item(r.id, r.size_bytes, r.completed_at) for r in rows]
        for number, bundle in enumerate(bins_to_send(first_fit_decreasing(items, limit), limit, max_age, now)):
            first = min(item.id for item in bundle.items)
            name = f"{location.site}_{location.name}_{now:%Y%m%dT%H%M%S}_{first}_{number:03d}"
            bundle_id = db.fetch_value("insert_data_transfer_package", name=name, origin_location_id=location.id)
            package_ids = [item.id for item in bundle.items]
            if db.execute("assign_packages_to_bundle", bundle_id=bundle_id, package_ids=package_ids) != len(
                package_ids
            ):
                raise RuntimeError(f"bundle {name}: a package was bundled concurrently")
            log.info(
                "bundle %s: %d packages, %d bytes (%.1f%% of limit)",
                name,
                len(package_ids),
                bundle.size,
                100 * bundle.size / limit,
            )
            created.append(bundle_id)
    return created


def write_bundles(db: OpsDb, location: LocationRow) -> work.WorkResult:
    """Write every PENDING bundle of a BUFFER location (see :func:`work.run`)."""
    result = work.WorkResult()
    result.reclaimed = work.reclaim_abandoned(
        db, states.BUNDLE, "find_unfinished_data_transfer_packages", location_id=location.id
    )
    while claimed := states.claim(db, states.BUNDLE, location_id=location.id, limit=CLAIM_BATCH):
        work.run(db, states.BUNDLE, claimed, lambda row: _write(db, row.id), result)
    return result


def _write(db: OpsDb, bundle_id: int) -> work.Record:
    """Write one bundle's tar of package tars; return what records it."""
    bundle = db.fetch_one("data_transfer_package", id=bundle_id)
    root = Path(bundle.origin_root)
    members = [
        Member(
            source=root / p.path,
            arcname=p.path,
            size=p.size_bytes,
            checksum_algorithm=checksums.parse(p.checksum)[0],
            expected_checksum=p.checksum,
            root=root,
        )
        for p in db.fetch_all("packages_of_bundle", bundle_id=bundle_id)
    ]
    algorithm = bundle.origin_settings.get("checksum_algorithm", checksums.DEFAULT_ALGORITHM)
    path = bundle_path(bundle.name)
    started = time.monotonic()
    try:
        archive = write_archive(root, path, members, algorithm)
    except MemberChangedError as error:
        raise ItemFault(f"package tar in buffer changed or missing: {error}") from error
    except safefs.UnsafePathError as error:
        raise ItemFault(f"refused: {error}") from error
    log.info("bundle %s: %d packages, %d bytes, %s", bundle.name, len(members), archive.size, archive.checksum)
    metrics.throughput(
        "bundling",
        {"site": bundle.origin_site, "location": bundle.origin_name, "checksum_algorithm": algorithm},
        archive.size,
        time.monotonic() - started,
        packages=len(members),
    )

    def record() -> None:
        db.execute(
            "record_data_transfer_package_written", id=bundle_id, size_bytes=archive.size, checksum=archive.checksum
        )
        states.record_bundle_copy(db, bundle.origin_location_id, bundle_id, path, archive.checksum)

    return record
