"""Routing: which DataTransfers a DataTransferPackage needs, decided once, in ops-db.

For a bundle made at a site with a SOURCE location:

- **primary**: one long-term-archive site is chosen round-robin (the position is kept
  per origin site in ``round_robin_state``, advanced atomically in the routing
  transaction, so it survives restarts and concurrent routers); the bundle goes from
  its buffer to that site's primary buffer. It crosses the long link once.
- **secondary**: from that first archive site's buffer to every other archive site's
  primary buffer (the fan-out), each leg depending on the primary leg's arrival.

A DataTransferRoute override between two sites changes a leg: ``RELAY`` goes through
the ``via`` site's buffer (two legs), ``DIRECT`` delivers straight into ``to_location``
(skipping the destination buffer), ``CUSTOM`` uses its ``from_location`` and
``to_location``. Its ``method`` and ``settings`` apply to the leg. Without an override a
leg uses the origin buffer's ``transfer_method`` setting.

Every bundle gets at most one DataTransfer per destination location.

:func:`transfer_site_pairs` gives, from the topology file alone, every (origin site,
destination site) a leg can take: the transfer DAG lays out its send tasks for exactly
those, and ``ccat pools`` makes exactly their pools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import BufferRow, LocationRow, UnroutedBundleRow
from ccat_operators.states import LocationType, RouteType
from ccat_operators.topology import Topology

log = logging.getLogger(__name__)

ROUTE_BATCH = 500


def transfer_pool(origin_site: str, destination_site: str) -> str:
    """The Airflow pool limiting parallel transfers from one site to another (slots editable in the UI)."""
    return f"ccat_transfer_{origin_site}_to_{destination_site}"


def transfer_site_pairs(topology: Topology) -> list[tuple[str, str]]:
    """Every (origin site, destination site) a leg can take under ``topology``, sorted.

    :meth:`Router.legs_for` played on the file for every round-robin choice: a bundle
    from each site with an active SOURCE goes to one site with an active
    LONG_TERM_ARCHIVE (primary leg) and on from there to the other archive sites
    (secondary legs), each leg through its active route override (a RELAY is two legs,
    through ``via``'s buffer); a bundle gets one leg per destination location, so a leg
    to a buffer an earlier leg already delivers to is no leg. A site's buffer is its
    active BUFFER of lowest ``priority`` (the first in the file among equals).
    """
    routes = {(route.origin_site, route.destination_site): route for route in topology.routes if route.active}
    active = [location for location in topology.locations if location.active]
    buffers: dict[str, str] = {}
    for location in sorted(active, key=lambda location: location.priority):  # stable: file order among equals
        if location.type == LocationType.BUFFER:
            buffers.setdefault(location.site, location.key)
    sources = sorted({location.site for location in active if location.type == LocationType.SOURCE})
    archives = sorted({location.site for location in active if location.type == LocationType.LONG_TERM_ARCHIVE})

    def add_legs(legs: dict[str, tuple[str, str]], origin: str, destination: str) -> None:
        """Router._add_legs: the leg(s) from ``origin`` to ``destination``, unless their destinations have one."""
        route = routes.get((origin, destination))
        if route is not None and route.type == RouteType.RELAY and route.via_site:
            legs.setdefault(buffers[route.via_site], (origin, route.via_site))
            origin = route.via_site
        final = buffers[destination]
        if route is not None and route.type in (RouteType.DIRECT, RouteType.CUSTOM) and route.destination_location:
            final = route.destination_location
        legs.setdefault(final, (origin, destination))

    pairs: set[tuple[str, str]] = set()
    for source in sources:
        targets = [site for site in archives if site != source]
        for primary in targets:
            legs: dict[str, tuple[str, str]] = {}  # destination location -> (origin site, destination site)
            add_legs(legs, source, primary)
            for secondary in targets:
                if secondary != primary:
                    add_legs(legs, primary, secondary)
            pairs.update(legs.values())
    return sorted(pairs)


class RoutingError(RuntimeError):
    """The topology gives a bundle nowhere to go (e.g. a site without an active buffer)."""


@dataclass
class Leg:
    origin_location_id: int
    destination_location_id: int
    method: str
    route_id: int | None = None
    unpack: bool = True
    depends_on: int | None = None  # destination_location_id of the leg that must arrive first


class Router:
    """Computes legs against the live topology in ops-db (one instance per routing run)."""

    def __init__(self, db: OpsDb) -> None:
        self.db = db
        self.lta_sites = db.fetch_all("long_term_archive_sites")
        self.lta_site_ids = {row.id for row in self.lta_sites}
        self._buffers: dict[int, BufferRow] = {}
        self._locations: dict[int, LocationRow] = {}

    def location(self, location_id: int) -> LocationRow:
        if location_id not in self._locations:
            self._locations[location_id] = self.db.fetch_one("data_location_by_id", id=location_id)
        return self._locations[location_id]

    def primary_buffer(self, site_id: int) -> BufferRow:
        if site_id not in self._buffers:
            buffers = self.db.fetch_all("active_buffers_of_site", site_id=site_id)
            if not buffers:
                raise RoutingError(f"site id {site_id} has no active BUFFER to receive data")
            self._buffers[site_id] = buffers[0]
        return self._buffers[site_id]

    def legs_for(self, bundle: UnroutedBundleRow) -> list[Leg]:
        """Every leg the bundle needs; advances the origin site's round-robin position."""
        origin_site = bundle.origin_site_id
        targets = [row for row in self.lta_sites if row.id != origin_site]
        if not targets or not self.db.fetch_value("site_has_source", site_id=origin_site):
            return []
        position = self.db.fetch_value("next_round_robin", site_id=origin_site, count=len(targets))
        primary = targets[position % len(targets)]
        legs: dict[int, Leg] = {}
        first = self._add_legs(legs, origin_site, bundle.origin_location_id, primary.id, depends_on=None)
        for secondary in targets:
            if secondary.id != primary.id:
                self._add_legs(legs, primary.id, first, secondary.id, depends_on=first)
        return list(legs.values())

    def _add_legs(
        self,
        legs: dict[int, Leg],
        origin_site: int,
        origin_location: int,
        destination_site: int,
        depends_on: int | None,
    ) -> int:
        """Add the leg(s) from ``origin_location`` to ``destination_site``; return the final location id."""
        route = self.db.fetch_one(
            "active_route_between", origin_site_id=origin_site, destination_site_id=destination_site
        )
        method = self.location(origin_location).settings.get("transfer_method", "rsync")
        if route is None:
            destination = self.primary_buffer(destination_site).id
            return self._put(legs, Leg(origin_location, destination, method, None, True, depends_on))
        method = route.method
        if route.route_type == RouteType.RELAY:
            via = self.primary_buffer(route.via_site_id).id
            unpack_at_via = route.via_site_id in self.lta_site_ids
            self._put(legs, Leg(origin_location, via, method, route.id, unpack_at_via, depends_on))
            destination = self.primary_buffer(destination_site).id
            return self._put(legs, Leg(via, destination, method, route.id, True, via))
        if route.route_type == RouteType.CUSTOM:
            origin_location = route.origin_location_id
        destination = route.destination_location_id
        unpack = self.location(destination).location_type == LocationType.BUFFER
        return self._put(legs, Leg(origin_location, destination, method, route.id, unpack, depends_on))

    @staticmethod
    def _put(legs: dict[int, Leg], leg: Leg) -> int:
        existing = legs.get(leg.destination_location_id)
        if existing is None:
            legs[leg.destination_location_id] = leg
        else:
            existing.unpack = existing.unpack or leg.unpack
        return leg.destination_location_id


def route_bundles(db: OpsDb, location: LocationRow) -> list[int]:
    """Create the DataTransfers of every unrouted bundle at a buffer; return their ids."""
    created: list[int] = []
    with db.transaction():
        router = Router(db)
        for bundle in db.fetch_all("claim_unrouted_bundles", location_id=location.id, limit=ROUTE_BATCH):
            ids: dict[int, int] = {}
            for leg in router.legs_for(bundle):
                transfer_id = db.fetch_value(
                    "insert_data_transfer",
                    bundle_id=bundle.id,
                    origin_location_id=leg.origin_location_id,
                    destination_location_id=leg.destination_location_id,
                    route_id=leg.route_id,
                    method=leg.method,
                    unpack=leg.unpack,
                    depends_on_transfer_id=ids.get(leg.depends_on) if leg.depends_on else None,
                )
                if transfer_id is None:
                    transfer_id = db.fetch_value(
                        "data_transfer_id", bundle_id=bundle.id, destination_location_id=leg.destination_location_id
                    )
                else:
                    created.append(transfer_id)
                ids[leg.destination_location_id] = transfer_id
            db.execute("mark_bundle_routed", id=bundle.id)
            log.info("bundle %s: %d transfer(s)", bundle.name, len(ids))
    return created
