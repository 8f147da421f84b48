"""Topology as code: sites, data locations, routes and retention in one YAML file.

``load(path)`` parses and validates a file without touching any database (DAG files
use it at parse time to lay out per-location tasks and queues). ``apply(db, topology)``
makes ops-db match it in one transaction: upserts by natural key, so applying the same
file twice changes nothing; a location or route missing from the file is deactivated,
never deleted, so its history stays. ``dump(db)`` reads ops-db back into the same
format, so ``ccat topology show`` output can itself be applied.

The file format is documented in the README ("Topology file").
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType, RouteType, StorageType, TransferMethod
from ccat_operators.units import format_duration, parse_duration, parse_size

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

#: Per-location stage settings: name -> (parser, default).
SETTINGS: dict[str, tuple[Any, Any]] = {
    "package_size_limit": (parse_size, 50 * 10**9),
    "bundle_size_limit": (parse_size, 100 * 10**9),
    "bundle_max_age": (parse_duration, 6 * 3600),
    "min_free_space": (parse_size, 0),
    "checksum_algorithm": (str, "sha256"),
    "transfer_method": (str, "rsync"),
    "ssh_conn_id": (str, None),
}
CHECKSUM_ALGORITHMS = ("sha256", "xxh3_128")

#: Storage-specific keys of a location, by storage type; value = required?
STORAGE_KEYS: dict[StorageType, dict[str, bool]] = {
    StorageType.DISK: {"root_path": True, "host": False},
    StorageType.S3: {"bucket": True, "endpoint_url": False, "region": False, "prefix": False, "conn_id": False},
    StorageType.TAPE: {"library": True},
}
ALL_STORAGE_KEYS = {key for keys in STORAGE_KEYS.values() for key in keys}
LOCATION_KEYS = {"type", "storage", "priority", "active", "settings", "retention"} | ALL_STORAGE_KEYS
RETENTION_KEYS = {"period", "disk_pressure_threshold", "min_lta_copies"}
ROUTE_KEYS = {"type", "from", "to", "via", "from_location", "to_location", "method", "settings", "active"}


class TopologyError(ValueError):
    """A topology file is invalid; ``problems`` lists every ``key: message`` found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


@dataclass(frozen=True)
class Retention:
    """How long copies stay at a location, and when disk pressure overrides that."""

    period_seconds: int = 0
    disk_pressure_threshold: float | None = None
    min_lta_copies: int = 1


@dataclass(frozen=True)
class Location:
    """One DataLocation as declared in the file."""

    site: str
    name: str
    type: LocationType
    storage: StorageType
    priority: int = 1
    active: bool = True
    storage_details: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    retention: Retention | None = None

    @property
    def key(self) -> str:
        """``site/location``, the name operators and the CLI use."""
        return f"{self.site}/{self.name}"


@dataclass(frozen=True)
class Site:
    short_name: str
    name: str
    location: str | None
    locations: tuple[Location, ...]


@dataclass(frozen=True)
class Route:
    """A DataTransferRoute override (DIRECT, RELAY or CUSTOM)."""

    name: str
    type: RouteType
    origin_site: str
    destination_site: str
    via_site: str | None = None
    origin_location: str | None = None
    destination_location: str | None = None
    method: TransferMethod = TransferMethod.RSYNC
    settings: dict[str, Any] = field(default_factory=dict)
    active: bool = True


@dataclass(frozen=True)
class Topology:
    source: str
    observatory: str
    telescope: str
    instruments: dict[str, tuple[str, ...]]
    sites: tuple[Site, ...]
    routes: tuple[Route, ...]

    @property
    def locations(self) -> list[Location]:
        return [location for site in self.sites for location in site.locations]

    def location(self, key: str) -> Location:
        """Return the location named ``site/location``."""
        for location in self.locations:
            if location.key == key:
                return location
        raise KeyError(f"{self.source}: no location {key!r}")


# Loading ------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys instead of keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: str | Path) -> Topology:
    """Read and validate a topology file; raise TopologyError naming every bad key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise TopologyError(str(path), [f"cannot read file: {error.strerror}"]) from None
    return loads(text, source=str(path))


def loads(text: str, source: str = "<topology>") -> Topology:
    """Validate topology YAML text; ``source`` names it in error messages."""
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as error:
        raise TopologyError(source, [f"not valid YAML: {error}"]) from None
    return _Parser(source).parse(document)


class _Parser:
    """Walks the document once, collecting every problem before giving up."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def mapping(self, value: Any, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key, f"expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def unknown_keys(self, mapping: dict, allowed: set[str], key: str) -> None:
        for name in mapping:
            if name not in allowed:
                self.problem(f"{key}.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def text(self, value: Any, key: str, required: bool = True) -> str | None:
        if value is None:
            if required:
                self.problem(key, "is required")
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.problem(key, f"expected text, got {type(value).__name__}")
            return None
        return self.expand(str(value), key)

    def expand(self, value: str, key: str) -> str:
        """Expand ``${VAR}`` and ``${VAR:-default}`` from the environment."""

        def replace(match: re.Match) -> str:
            found = os.environ.get(match["name"])
            if found is not None and found != "":
                return found
            if match["default"] is not None:
                return match["default"]
            self.problem(key, f"environment variable {match['name']} is not set and has no default")
            return ""

        return _VARIABLE.sub(replace, value)

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not NAME.match(value):
            self.problem(key, f"{value!r} is not a valid name (lowercase letters, digits, _; starts with a letter)")
        return str(value)

    def choice(self, value: Any, enum: type, key: str, default: Any = None) -> Any:
        if value is None and default is not None:
            return default
        try:
            return enum(value.upper() if isinstance(value, str) and enum is not TransferMethod else value)
        except ValueError:
            self.problem(key, f"{value!r} is not one of {', '.join(e.value for e in enum)}")
            return None

    def boolean(self, value: Any, key: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {value!r}")
            return default
        return value

    def integer(self, value: Any, key: str, default: int, minimum: int = 0) -> int:
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.problem(key, f"expected an integer >= {minimum}, got {value!r}")
            return default
        return value

    def parse(self, document: Any) -> Topology:
        root = self.mapping(document, "(top level)")
        self.unknown_keys(root, {"observatory", "telescope", "instruments", "sites", "routes"}, "(top level)")
        observatory = self.text(root.get("observatory"), "observatory") or ""
        telescope = self.text(root.get("telescope"), "telescope") or ""
        instruments = self.instruments(root.get("instruments"))
        sites = tuple(
            self.site(short_name, spec) for short_name, spec in self.mapping(root.get("sites"), "sites").items()
        )
        if not sites:
            self.problem("sites", "at least one site is required")
        routes = tuple(
            self.route(name, spec, sites) for name, spec in self.mapping(root.get("routes"), "routes").items()
        )
        if self.problems:
            raise TopologyError(self.source, self.problems)
        return Topology(self.source, observatory, telescope, instruments, sites, routes)

    def instruments(self, value: Any) -> dict[str, tuple[str, ...]]:
        instruments: dict[str, tuple[str, ...]] = {}
        for name, spec in self.mapping(value, "instruments").items():
            key = f"instruments.{name}"
            spec = self.mapping(spec, key)
            self.unknown_keys(spec, {"modules"}, key)
            modules = spec.get("modules")
            if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
                self.problem(f"{key}.modules", "expected a non-empty list of module names")
                continue
            if len(set(modules)) != len(modules):
                self.problem(f"{key}.modules", "module names must be unique")
            instruments[str(name)] = tuple(modules)
        return instruments

    def site(self, short_name: Any, spec: Any) -> Site:
        key = f"sites.{short_name}"
        short_name = self.name(short_name, key)
        spec = self.mapping(spec, key)
        self.unknown_keys(spec, {"name", "location", "locations"}, key)
        locations = tuple(
            self.location(short_name, name, location_spec)
            for name, location_spec in self.mapping(spec.get("locations"), f"{key}.locations").items()
        )
        types = {location.type for location in locations if location.active}
        if LocationType.SOURCE in types and LocationType.BUFFER not in types:
            self.problem(f"{key}.locations", "a site with a SOURCE location needs an active BUFFER to package into")
        return Site(
            short_name=short_name,
            name=self.text(spec.get("name"), f"{key}.name") or short_name,
            location=self.text(spec.get("location"), f"{key}.location", required=False),
            locations=locations,
        )

    def location(self, site: str, name: Any, spec: Any) -> Location:
        key = f"sites.{site}.locations.{name}"
        name = self.name(name, key)
        spec = self.mapping(spec, key)
        self.unknown_keys(spec, LOCATION_KEYS, key)
        location_type = self.choice(spec.get("type"), LocationType, f"{key}.type")
        storage = self.choice(spec.get("storage"), StorageType, f"{key}.storage", default=StorageType.DISK)
        details: dict[str, str] = {}
        if storage is not None:
            allowed = STORAGE_KEYS[storage]
            for detail in sorted(ALL_STORAGE_KEYS & spec.keys()):
                if detail not in allowed:
                    self.problem(f"{key}.{detail}", f"does not apply to {storage} storage")
            for detail, required in allowed.items():
                value = self.text(spec.get(detail), f"{key}.{detail}", required=required)
                if value is not None:
                    details[detail] = value
        if location_type in (LocationType.SOURCE, LocationType.BUFFER, LocationType.PROCESSING) and storage not in (
            StorageType.DISK,
            None,
        ):
            self.problem(f"{key}.storage", f"a {location_type} location must be DISK storage")
        return Location(
            site=site,
            name=name,
            type=location_type,
            storage=storage,
            priority=self.integer(spec.get("priority"), f"{key}.priority", default=1),
            active=self.boolean(spec.get("active"), f"{key}.active", default=True),
            storage_details=details,
            settings=self.settings(spec.get("settings"), f"{key}.settings"),
            retention=self.retention(spec.get("retention"), f"{key}.retention"),
        )

    def settings(self, value: Any, key: str) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        spec = self.mapping(value, key)
        self.unknown_keys(spec, set(SETTINGS), key)
        for name, raw in spec.items():
            if name not in SETTINGS:
                continue
            parser = SETTINGS[name][0]
            if isinstance(raw, str):
                raw = self.expand(raw, f"{key}.{name}")
            try:
                settings[name] = parser(raw)
            except ValueError as error:
                self.problem(f"{key}.{name}", str(error))
        method = settings.get("transfer_method")
        if method is not None and method not in {m.value for m in TransferMethod}:
            self.problem(
                f"{key}.transfer_method", f"{method!r} is not one of {', '.join(m.value for m in TransferMethod)}"
            )
        algorithm = settings.get("checksum_algorithm")
        if algorithm is not None and algorithm not in CHECKSUM_ALGORITHMS:
            self.problem(f"{key}.checksum_algorithm", f"{algorithm!r} is not one of {', '.join(CHECKSUM_ALGORITHMS)}")
        return settings

    def retention(self, value: Any, key: str) -> Retention | None:
        if value is None:
            return None
        spec = self.mapping(value, key)
        self.unknown_keys(spec, RETENTION_KEYS, key)
        period = 0
        if spec.get("period") is not None:
            raw = spec["period"]
            try:
                period = parse_duration(self.expand(raw, f"{key}.period") if isinstance(raw, str) else raw)
            except ValueError as error:
                self.problem(f"{key}.period", str(error))
        threshold = spec.get("disk_pressure_threshold")
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1
        ):
            self.problem(f"{key}.disk_pressure_threshold", f"expected a fraction in (0, 1], got {threshold!r}")
            threshold = None
        return Retention(
            period_seconds=period,
            disk_pressure_threshold=None if threshold is None else float(threshold),
            min_lta_copies=self.integer(spec.get("min_lta_copies"), f"{key}.min_lta_copies", default=1, minimum=1),
        )

    def route(self, name: Any, spec: Any, sites: tuple[Site, ...]) -> Route:
        key = f"routes.{name}"
        spec = self.mapping(spec, key)
        self.unknown_keys(spec, ROUTE_KEYS, key)
        site_names = {site.short_name for site in sites}
        location_keys = {location.key for site in sites for location in site.locations}
        route_type = self.choice(spec.get("type"), RouteType, f"{key}.type")
        ends: dict[str, str | None] = {}
        for end in ("from", "to", "via"):
            value = self.text(spec.get(end), f"{key}.{end}", required=end != "via")
            if value is not None and value not in site_names:
                self.problem(f"{key}.{end}", f"unknown site {value!r}")
            ends[end] = value
        if ends["from"] is not None and ends["from"] == ends["to"]:
            self.problem(f"{key}.to", "origin and destination site are the same")
        if (route_type == RouteType.RELAY) != (ends["via"] is not None) and route_type is not None:
            self.problem(f"{key}.via", "a RELAY route needs `via`, and only a RELAY route may have it")
        locations: dict[str, str | None] = {}
        for end, site_end in (("from_location", "from"), ("to_location", "to")):
            needed = route_type == RouteType.CUSTOM or (route_type == RouteType.DIRECT and end == "to_location")
            value = self.text(spec.get(end), f"{key}.{end}", required=needed)
            if value is not None:
                if value not in location_keys:
                    self.problem(f"{key}.{end}", f"unknown location {value!r} (write it as site/location)")
                elif value.split("/")[0] != ends[site_end]:
                    self.problem(f"{key}.{end}", f"{value!r} is not at site {ends[site_end]!r}")
            locations[end] = value
        method = self.choice(spec.get("method"), TransferMethod, f"{key}.method", default=TransferMethod.RSYNC)
        return Route(
            name=str(name),
            type=route_type,
            origin_site=ends["from"] or "",
            destination_site=ends["to"] or "",
            via_site=ends["via"],
            origin_location=locations["from_location"],
            destination_location=locations["to_location"],
            method=method,
            settings=dict(self.mapping(spec.get("settings"), f"{key}.settings")),
            active=self.boolean(spec.get("active"), f"{key}.active", default=True),
        )


# Applying -----------------------------------------------------------------------


@dataclass
class ApplyReport:
    """What ``apply`` changed: one human-readable line per created/updated/deactivated row."""

    changes: list[str] = field(default_factory=list)

    def note(self, kind: str, name: str, inserted: bool) -> None:
        self.changes.append(f"{'created' if inserted else 'updated'} {kind} {name}")


def _upsert(db: OpsDb, report: ApplyReport, kind: str, label: str, query: str, lookup: str, /, **params: Any) -> int:
    """Run an upsert that returns a row only when it changed something; return the row id."""
    row = db.fetch_one(query, **params)
    if row is not None:
        report.note(kind, label, row["inserted"])
        return row["id"]
    return db.fetch_value(lookup, **params)


def apply(db: OpsDb, topology: Topology) -> ApplyReport:
    """Make ops-db match ``topology`` in one transaction and report what changed."""
    report = ApplyReport()
    with db.transaction():
        _apply_instruments(db, report, topology)
        site_ids: dict[str, int] = {}
        location_ids: dict[str, int] = {}
        for site in topology.sites:
            site_ids[site.short_name] = _upsert(
                db,
                report,
                "site",
                site.short_name,
                "upsert_site",
                "site_id",
                short_name=site.short_name,
                name=site.name,
                location=site.location,
            )
            for location in site.locations:
                location_ids[location.key] = _apply_location(db, report, site_ids[site.short_name], location)
        for row in db.fetch_all("deactivate_locations_except", keep_ids=list(location_ids.values())):
            report.changes.append(f"deactivated location {row['site']}/{row['name']}")
        for route in topology.routes:
            _upsert(
                db,
                report,
                "route",
                route.name,
                "upsert_route",
                "route_id",
                name=route.name,
                route_type=route.type.value,
                origin_site_id=site_ids[route.origin_site],
                destination_site_id=site_ids[route.destination_site],
                via_site_id=site_ids.get(route.via_site) if route.via_site else None,
                origin_location_id=location_ids.get(route.origin_location) if route.origin_location else None,
                destination_location_id=(
                    location_ids.get(route.destination_location) if route.destination_location else None
                ),
                method=route.method.value,
                settings=_json(route.settings),
                active=route.active,
            )
        for row in db.fetch_all("deactivate_routes_except", keep_names=[r.name for r in topology.routes]):
            report.changes.append(f"deactivated route {row['name']}")
    return report


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)


def _apply_instruments(db: OpsDb, report: ApplyReport, topology: Topology) -> None:
    observatory_id = _upsert(
        db,
        report,
        "observatory",
        topology.observatory,
        "upsert_observatory",
        "observatory_id",
        name=topology.observatory,
    )
    telescope_id = _upsert(
        db,
        report,
        "telescope",
        topology.telescope,
        "upsert_telescope",
        "telescope_id",
        observatory_id=observatory_id,
        name=topology.telescope,
    )
    for instrument, modules in topology.instruments.items():
        instrument_id = _upsert(
            db,
            report,
            "instrument",
            instrument,
            "upsert_instrument",
            "instrument_id",
            telescope_id=telescope_id,
            name=instrument,
        )
        for module in modules:
            _upsert(
                db,
                report,
                "instrument module",
                f"{instrument}/{module}",
                "upsert_instrument_module",
                "instrument_module_id",
                instrument_id=instrument_id,
                name=module,
            )


def _apply_location(db: OpsDb, report: ApplyReport, site_id: int, location: Location) -> int:
    details = location.storage_details
    location_id = _upsert(
        db,
        report,
        "location",
        location.key,
        "upsert_data_location",
        "data_location_id",
        site_id=site_id,
        name=location.name,
        location_type=location.type.value,
        storage_type=location.storage.value,
        priority=location.priority,
        active=location.active,
        root_path=details.get("root_path"),
        host=details.get("host"),
        s3_endpoint_url=details.get("endpoint_url"),
        s3_bucket=details.get("bucket"),
        s3_region=details.get("region"),
        s3_prefix=details.get("prefix"),
        s3_conn_id=details.get("conn_id"),
        tape_library=details.get("library"),
        settings=_json(location.settings),
    )
    if location.retention is None:
        if db.execute("delete_retention_policy", data_location_id=location_id):
            report.changes.append(f"removed retention of location {location.key}")
    else:
        retention = location.retention
        row = db.fetch_one(
            "upsert_retention_policy",
            data_location_id=location_id,
            retention_period=timedelta(seconds=retention.period_seconds),
            disk_pressure_threshold=retention.disk_pressure_threshold,
            min_lta_copies=retention.min_lta_copies,
        )
        if row is not None:
            report.note("retention of location", location.key, row["inserted"])
    return location_id


# Reading back ---------------------------------------------------------------------


def dump(db: OpsDb) -> dict[str, Any]:
    """Return ops-db's topology as a document in the topology file format."""
    observatory = db.fetch_one("observatory_and_telescope") or {}
    instruments: dict[str, dict[str, list[str]]] = {}
    for row in db.fetch_all("instrument_modules"):
        instruments.setdefault(row["instrument"], {"modules": []})["modules"].append(row["module"])
    sites: dict[str, Any] = {}
    for row in db.fetch_all("sites"):
        sites[row["short_name"]] = {"name": row["name"], "location": row["location"], "locations": {}}
    for row in db.fetch_all("data_locations"):
        sites[row["site"]]["locations"][row["name"]] = _dump_location(row)
    routes: dict[str, Any] = {}
    for row in db.fetch_all("routes"):
        route = {"type": row["route_type"], "from": row["origin_site"], "to": row["destination_site"]}
        optional = {
            "via": row["via_site"],
            "from_location": row["origin_location"],
            "to_location": row["destination_location"],
        }
        route.update({k: v for k, v in optional.items() if v is not None})
        route.update({"method": row["method"], "active": row["active"]})
        if row["settings"]:
            route["settings"] = row["settings"]
        routes[row["name"]] = route
    document: dict[str, Any] = {
        "observatory": observatory.get("observatory"),
        "telescope": observatory.get("telescope"),
        "instruments": instruments,
        "sites": sites,
    }
    if routes:
        document["routes"] = routes
    return document


def _dump_location(row: dict[str, Any]) -> dict[str, Any]:
    location: dict[str, Any] = {"type": row["location_type"], "storage": row["storage_type"]}
    columns = {
        "root_path": "root_path",
        "host": "host",
        "bucket": "s3_bucket",
        "endpoint_url": "s3_endpoint_url",
        "region": "s3_region",
        "prefix": "s3_prefix",
        "conn_id": "s3_conn_id",
        "library": "tape_library",
    }
    location.update({key: row[column] for key, column in columns.items() if row[column] is not None})
    location.update({"priority": row["priority"], "active": row["active"]})
    if row["settings"]:
        location["settings"] = row["settings"]
    if row["retention_period"] is not None:
        retention: dict[str, Any] = {
            "period": format_duration(int(row["retention_period"].total_seconds())),
            "min_lta_copies": row["min_lta_copies"],
        }
        if row["disk_pressure_threshold"] is not None:
            retention["disk_pressure_threshold"] = row["disk_pressure_threshold"]
        location["retention"] = retention
    return location


def dumps(db: OpsDb) -> str:
    """Return ops-db's topology as YAML text."""
    return yaml.safe_dump(dump(db), sort_keys=False, default_flow_style=False)
