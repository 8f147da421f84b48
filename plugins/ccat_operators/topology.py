"""Topology as code: sites, data locations, routes and retention in one YAML file.

``load(path)`` parses and validates a file without touching any database (DAG files
use it at parse time to lay out per-location tasks and queues). ``apply(db, topology)``
makes ops-db match it in one transaction: upserts by natural key, so applying the same
file twice changes nothing; a location or route missing from the file is deactivated,
never deleted, so its history stays. ``dump(db)`` reads ops-db back into the same
format, so ``ccat topology show`` output can itself be applied. ``missing_roots`` and
``create_roots`` look at the active DISK roots on this machine (``ccat topology apply
--create-dirs``); ``apply`` itself never touches storage.

A file that ``load`` accepts is one every DAG can lay out and ``apply`` can store: names
that give distinct queues and task ids, values that fit their PostgreSQL columns,
storage roots that do not overlap, routes that end in a buffer, settings that the stage
reading them understands. Everything else is refused whole, one ``key: message`` per
problem.

The file format is documented in the README ("Topology file").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from ccat_operators import yamldoc
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType, RouteType, StorageType, TransferMethod
from ccat_operators.units import format_duration, parse_duration, parse_size

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: Site and location names become queue names, task ids and pool names; 63 characters
#: keeps the longest of them (``{site}_{location}.find_transfers_to_{site}``) well inside
#: Airflow's 250-character task id.
NAME_MAX_LENGTH = 63
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")

#: Largest values the ops-db columns hold: ``integer`` (priority, min_lta_copies) and
#: ``bigint`` (sizes, which the stages also compare with bigint byte counts).
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
#: Longest duration accepted (bundle_max_age, retention period): 100 years of 365 days.
#: A sane bound far inside PostgreSQL ``interval`` and Python ``timedelta``.
MAX_DURATION_SECONDS = 100 * 365 * 86400
#: bbcp refuses more parallel streams than this.
MAX_BBCP_STREAMS = 64

#: Task ids the stage DAGs put beside their per-location task groups ``{site}_{location}``
#: (``ccat_operators.assets.announce_task_id`` of each stage; a test keeps them in step).
#: A location whose ``{site}_{location}`` equals one would break its DAG.
RESERVED_TASK_IDS = frozenset(
    {
        "announce_observations_filed",
        "announce_packages_buffered",
        "announce_bundles_written",
        "announce_bundles_transferred",
        "announce_packages_unpacked",
        "announce_packages_archived",
    }
)


def _size(minimum: int) -> Callable[[Any], int]:
    """A size parser that refuses values below ``minimum`` bytes or beyond a bigint."""

    def parse(value: Any) -> int:
        size = parse_size(value)
        if size < minimum:
            raise ValueError(f"{value!r} is less than the minimum of {minimum} byte")
        if size > BIGINT_MAX:
            raise ValueError(f"{value!r} is too large (at most {BIGINT_MAX} bytes, a PostgreSQL bigint)")
        return size

    return parse


def _duration(value: Any) -> int:
    """Seconds of a duration, at most ``MAX_DURATION_SECONDS`` (100 years)."""
    seconds = parse_duration(value)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{value!r} is too long (at most {format_duration(MAX_DURATION_SECONDS)}, 100 years)")
    return seconds


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _word(value: Any) -> str:
    """Non-empty text without white space (a connection id)."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError(f"expected a name without spaces, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


CHECKSUM_ALGORITHMS = ("sha256", "xxh3_128")

#: Per-location stage settings: name -> (parser, default).
SETTINGS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "package_size_limit": (_size(1), 50 * 10**9),
    "bundle_size_limit": (_size(1), 100 * 10**9),
    "bundle_max_age": (_duration, 6 * 3600),
    "min_free_space": (_size(0), 0),
    "checksum_algorithm": (_one_of(CHECKSUM_ALGORITHMS), "sha256"),
    "transfer_method": (_one_of(tuple(m.value for m in TransferMethod)), "rsync"),
    "ssh_conn_id": (_word, None),
    "audit_period": (_duration, 30 * 86400),
    "audit_dark_grace": (_duration, 86400),
    "audit_full_read": (_flag, False),
}
#: The location types whose stages read each setting; elsewhere it would be silently
#: ignored, so it is refused (``bundle_size_limit`` on a SOURCE is a mistake, not a no-op).
SETTING_LOCATION_TYPES: dict[str, tuple[LocationType, ...]] = {
    "package_size_limit": (LocationType.SOURCE,),  # packaging splits the source's files
    "bundle_size_limit": (LocationType.BUFFER,),  # bundling
    "bundle_max_age": (LocationType.BUFFER,),  # bundling
    "min_free_space": (LocationType.BUFFER,),  # packaging's buffer choice
    "checksum_algorithm": (LocationType.SOURCE, LocationType.BUFFER),  # filing; package and bundle tars
    "transfer_method": (LocationType.BUFFER,),  # legs leaving this buffer without a route
    "ssh_conn_id": (LocationType.BUFFER,),  # legs arriving at this buffer
    # the audit: every copy re-read within audit_period; unknown files older than the grace are dark
    "audit_period": tuple(LocationType),
    "audit_dark_grace": tuple(LocationType),
    "audit_full_read": (LocationType.LONG_TERM_ARCHIVE,),  # S3: read whole objects, not just HEAD
}


def _streams(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_BBCP_STREAMS:
        raise ValueError(f"expected an integer from 1 to {MAX_BBCP_STREAMS}, got {value!r}")
    return value


_WINDOW = re.compile(r"^=?[1-9][0-9]{0,9}[KMGkmg]?$")


def _window(value: Any) -> int | str:
    """A bbcp TCP window: bytes, or a number with K, M or G (``8M``; ``=8M`` fixes it)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= INTEGER_MAX:
        return value
    if isinstance(value, str) and _WINDOW.match(value):
        return value
    raise ValueError(f"expected a window size such as 8M, 512K or 1048576, got {value!r}")


def _timeout(value: Any) -> int:
    """Seconds (or a duration such as ``10m``) of I/O silence before a transfer gives up."""
    seconds = parse_duration(value)
    if not 1 <= seconds <= INTEGER_MAX:
        raise ValueError(f"expected 1 to {INTEGER_MAX} seconds, got {value!r}")
    return seconds


_ALL_METHODS = tuple(TransferMethod)
#: Route settings (``hooks/transfer.py``): name -> (parser, methods that read it).
ROUTE_SETTINGS: dict[str, tuple[Callable[[Any], Any], tuple[TransferMethod, ...]]] = {
    "streams": (_streams, (TransferMethod.BBCP,)),
    "window": (_window, (TransferMethod.BBCP,)),
    "checksum": (_flag, (TransferMethod.BBCP,)),
    "timeout": (_timeout, _ALL_METHODS),
}

#: Storage-specific keys of a location, by storage type; value = required?
STORAGE_KEYS: dict[StorageType, dict[str, bool]] = {
    StorageType.DISK: {"root_path": True, "host": False},
    StorageType.S3: {"bucket": True, "endpoint_url": False, "region": False, "prefix": False, "conn_id": False},
    StorageType.TAPE: {"library": True},
}
ALL_STORAGE_KEYS = {key for keys in STORAGE_KEYS.values() for key in keys}
LOCATION_KEYS = {"type", "storage", "priority", "active", "settings", "retention"} | ALL_STORAGE_KEYS
#: Retention keys and the location types whose deletion rule reads them (README, "Deletion").
#: LONG_TERM_ARCHIVE copies are never deleted automatically: no retention there at all.
RETENTION_LOCATION_TYPES: dict[str, tuple[LocationType, ...]] = {
    "period": (LocationType.SOURCE, LocationType.BUFFER, LocationType.PROCESSING),
    "disk_pressure_threshold": (LocationType.BUFFER,),
    "min_lta_copies": (LocationType.SOURCE,),
}
RETENTION_KEYS = set(RETENTION_LOCATION_TYPES)
ROUTE_KEYS = {"type", "from", "to", "via", "from_location", "to_location", "method", "settings", "active"}
#: Which of ``from_location`` / ``to_location`` each route type takes (all it takes are required).
ROUTE_LOCATION_KEYS: dict[RouteType, tuple[str, ...]] = {
    RouteType.DIRECT: ("to_location",),
    RouteType.RELAY: (),
    RouteType.CUSTOM: ("from_location", "to_location"),
}
#: Location types that must be DISK storage; an active LONG_TERM_ARCHIVE must be S3.
DISK_LOCATION_TYPES = (LocationType.SOURCE, LocationType.BUFFER, LocationType.PROCESSING)
#: What boto3 accepts as a bucket name and a region name (it refuses anything else
#: before sending a request).
_BUCKET = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
_REGION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")


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


def load(path: str | Path) -> Topology:
    """Read and validate a topology file; raise TopologyError naming every bad key.

    Anything that is not a readable UTF-8 text file holding a YAML mapping (a directory,
    an unreadable or binary file, an empty file, a list) is a TopologyError too.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TopologyError(str(path), [f"cannot read file: {error.strerror or error}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TopologyError(str(path), [f"not UTF-8 text (byte {error.start} is not valid UTF-8)"]) from None
    return loads(text, source=str(path))


def loads(text: str, source: str = "<topology>") -> Topology:
    """Validate topology YAML text; ``source`` names it in error messages."""
    try:
        document = yamldoc.load(text)
    except yaml.YAMLError as error:
        raise TopologyError(source, [f"not valid YAML: {error}"]) from None
    except RecursionError:
        raise TopologyError(source, ["not valid YAML: nested too deeply"]) from None
    except ValueError as error:  # e.g. an integer literal beyond Python's digit limit
        raise TopologyError(source, [f"not valid YAML: {error}"]) from None
    if document is None:
        raise TopologyError(source, ["(top level): the file is empty (expected observatory, telescope and sites)"])
    if not isinstance(document, dict):
        raise TopologyError(source, [f"(top level): expected a mapping, got {type(document).__name__}"])
    return _Parser(source).parse(document)


def _text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as PostgreSQL text, if it cannot."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate escape)"
    return None


def _printable(character: str) -> str:
    return character if character.isprintable() else repr(character)[1:-1]


def _has_active_buffer(site: Site) -> bool:
    return any(location.active and location.type == LocationType.BUFFER for location in site.locations)


class _Parser:
    """Walks the document once, collecting every problem before giving up."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        """Note one problem, on one printable line (keys come from the file, control characters and all)."""
        line = f"{key}: {message}"
        self.problems.append(line if line.isprintable() else "".join(_printable(c) for c in line))

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

        expanded = _VARIABLE.sub(replace, value)
        problem = _text_problem(expanded)
        if problem is not None:
            self.problem(key, problem)
        return expanded

    def name(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not NAME.match(value):
            self.problem(key, f"{value!r} is not a valid name (lowercase letters, digits, _; starts with a letter)")
        elif len(value) > NAME_MAX_LENGTH:
            self.problem(key, f"{value!r} is longer than {NAME_MAX_LENGTH} characters")
        return str(value)

    def label(self, value: Any, key: str) -> str | None:
        """A free-form name (instrument, module, route): non-empty text, stored as given."""
        if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
            self.problem(key, f"expected a non-empty name, got {value!r}")
            return None
        problem = _text_problem(str(value))
        if problem is not None:
            self.problem(key, problem)
            return None
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

    def integer(self, value: Any, key: str, default: int, minimum: int = 0, maximum: int = INTEGER_MAX) -> int:
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            self.problem(key, f"expected an integer from {minimum} to {maximum}, got {value!r}")
            return default
        return value

    def parse(self, document: dict) -> Topology:
        self.unknown_keys(document, {"observatory", "telescope", "instruments", "sites", "routes"}, "(top level)")
        observatory = self.text(document.get("observatory"), "observatory") or ""
        telescope = self.text(document.get("telescope"), "telescope") or ""
        instruments = self.instruments(document.get("instruments"))
        sites = tuple(
            self.site(short_name, spec) for short_name, spec in self.mapping(document.get("sites"), "sites").items()
        )
        if not sites:
            self.problem("sites", "at least one site is required")
        self.check_locations(sites)
        sites_by_name = {site.short_name: site for site in sites}
        locations = {location.key: location for site in sites for location in site.locations}
        routes = tuple(
            self.route(name, spec, sites_by_name, locations)
            for name, spec in self.mapping(document.get("routes"), "routes").items()
        )
        self.check_routes(routes)
        if self.problems:
            raise TopologyError(self.source, self.problems)
        return Topology(self.source, observatory, telescope, instruments, sites, routes)

    def instruments(self, value: Any) -> dict[str, tuple[str, ...]]:
        instruments: dict[str, tuple[str, ...]] = {}
        for name, spec in self.mapping(value, "instruments").items():
            key = f"instruments.{name}"
            label = self.label(name, key)
            spec = self.mapping(spec, key)
            self.unknown_keys(spec, {"modules"}, key)
            modules = spec.get("modules")
            if not isinstance(modules, list) or not modules or not all(isinstance(m, str) and m for m in modules):
                self.problem(f"{key}.modules", "expected a non-empty list of module names")
                continue
            if len(set(modules)) != len(modules):
                self.problem(f"{key}.modules", "module names must be unique")
            if all(self.label(module, f"{key}.modules") is not None for module in modules) and label is not None:
                instruments[label] = tuple(modules)
        return instruments

    def site(self, short_name: Any, spec: Any) -> Site:
        key = f"sites.{short_name}"
        short_name = self.name(short_name, key)
        spec = self.mapping(spec, key)
        self.unknown_keys(spec, {"name", "location", "locations"}, key)
        specs = self.mapping(spec.get("locations"), f"{key}.locations")
        if not specs:
            self.problem(f"{key}.locations", "at least one location is required")
        locations = tuple(self.location(short_name, name, location_spec) for name, location_spec in specs.items())
        types = {location.type for location in locations if location.active}
        if LocationType.SOURCE in types and LocationType.BUFFER not in types:
            self.problem(f"{key}.locations", "a site with a SOURCE location needs an active BUFFER to package into")
        if LocationType.LONG_TERM_ARCHIVE in types and LocationType.BUFFER not in types:
            self.problem(
                f"{key}.locations",
                "a site with a LONG_TERM_ARCHIVE location needs an active BUFFER: "
                "transfers arrive there and the archive reads from it",
            )
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
        active = self.boolean(spec.get("active"), f"{key}.active", default=True)
        if location_type in DISK_LOCATION_TYPES and storage not in (StorageType.DISK, None):
            self.problem(f"{key}.storage", f"a {location_type} location must be DISK storage")
        if location_type == LocationType.LONG_TERM_ARCHIVE and active and storage not in (StorageType.S3, None):
            self.problem(
                f"{key}.storage",
                f"an active LONG_TERM_ARCHIVE location must be S3 storage: archiving and staging "
                f"only speak S3 ({storage} archives are not implemented; declare it with active: false)",
            )
        return Location(
            site=site,
            name=name,
            type=location_type,
            storage=storage,
            priority=self.integer(spec.get("priority"), f"{key}.priority", default=1),
            active=active,
            storage_details=self.storage_details(spec, storage, key),
            settings=self.settings(spec.get("settings"), f"{key}.settings", location_type),
            retention=self.retention(spec.get("retention"), f"{key}.retention", location_type),
        )

    def storage_details(self, spec: dict, storage: StorageType | None, key: str) -> dict[str, str]:
        details: dict[str, str] = {}
        if storage is None:
            return details
        allowed = STORAGE_KEYS[storage]
        for detail in sorted(ALL_STORAGE_KEYS & spec.keys()):
            if detail not in allowed:
                self.problem(f"{key}.{detail}", f"does not apply to {storage} storage")
        checks: dict[str, Callable[[str, str], str | None]] = {
            "root_path": self.root_path,
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
        }
        for detail, required in allowed.items():
            value = self.text(spec.get(detail), f"{key}.{detail}", required=required)
            if value is not None and detail in checks:
                value = checks[detail](value, f"{key}.{detail}")
            if value is not None:
                details[detail] = value
        return details

    def root_path(self, value: str, key: str) -> str | None:
        """A DISK root after ``${VAR}`` expansion, normalised, or None (a problem noted).

        It must be absolute, not ``/`` itself, free of ``..`` components (resolving them
        without the file system would be wrong with symbolic links) and must not start
        with ``//`` (whose meaning POSIX leaves to the system). Repeated slashes, ``.``
        components and trailing slashes are harmless and removed: ``/data//ccat/./buffer/``
        is stored as ``/data/ccat/buffer``, so roots compare correctly when checked for
        overlap (``${ROOT}/buffer`` with ``ROOT=/data/`` is fine).
        """
        if not value:
            self.problem(key, "is empty (after ${VAR} expansion); expected an absolute path")
            return None
        path = PurePosixPath(value)
        if not path.is_absolute():
            self.problem(key, f"{value!r} is not an absolute path")
        elif str(path).startswith("//"):
            self.problem(key, f"{value!r} starts with //, whose meaning is up to the system; use one /")
        elif ".." in path.parts:
            self.problem(key, f"{value!r} contains a .. component; write the path without it")
        elif path == PurePosixPath("/"):
            self.problem(key, "'/' is the whole file system, not a data location; name a directory")
        else:
            return str(path)
        return None

    def bucket(self, value: str, key: str) -> str | None:
        if not _BUCKET.match(value):
            self.problem(key, f"{value!r} is not a valid bucket name (letters, digits, '.', '-', '_')")
            return None
        return value

    def endpoint_url(self, value: str, key: str) -> str | None:
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            self.problem(key, f"{value!r} is not an http:// or https:// URL with a host")
            return None
        return value

    def region(self, value: str, key: str) -> str | None:
        if not _REGION.match(value):
            self.problem(key, f"{value!r} is not a valid region name (such as eu-central-1)")
            return None
        return value

    def settings(self, value: Any, key: str, location_type: LocationType | None) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        spec = self.mapping(value, key)
        self.unknown_keys(spec, set(SETTINGS), key)
        for name, raw in spec.items():
            if name not in SETTINGS:
                continue
            applies_to = SETTING_LOCATION_TYPES[name]
            if location_type is not None and location_type not in applies_to:
                self.problem(
                    f"{key}.{name}",
                    f"does not apply to a {location_type} location (only {', '.join(applies_to)})",
                )
                continue
            if isinstance(raw, str):
                raw = self.expand(raw, f"{key}.{name}")
            try:
                settings[name] = SETTINGS[name][0](raw)
            except ValueError as error:
                self.problem(f"{key}.{name}", str(error))
        return settings

    def retention(self, value: Any, key: str, location_type: LocationType | None) -> Retention | None:
        if value is None:
            return None
        if location_type == LocationType.LONG_TERM_ARCHIVE:
            self.problem(key, "does not apply to a LONG_TERM_ARCHIVE location: archive copies are never deleted")
            return None
        spec = self.mapping(value, key)
        self.unknown_keys(spec, RETENTION_KEYS, key)
        for name in RETENTION_KEYS & spec.keys():
            applies_to = RETENTION_LOCATION_TYPES[name]
            if location_type is not None and location_type not in applies_to:
                self.problem(
                    f"{key}.{name}", f"does not apply to a {location_type} location (only {', '.join(applies_to)})"
                )
        period = 0
        if spec.get("period") is not None:
            raw = spec["period"]
            try:
                period = _duration(self.expand(raw, f"{key}.period") if isinstance(raw, str) else raw)
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

    def check_locations(self, sites: tuple[Site, ...]) -> None:
        """Rules across locations: distinct queue prefixes, disjoint roots, reachable copy counts."""
        locations = [location for site in sites for location in site.locations]
        prefixes: dict[str, Location] = {}
        for location in locations:
            key = f"sites.{location.site}.locations.{location.name}"
            prefix = f"{location.site}_{location.name}"
            if prefix in RESERVED_TASK_IDS:
                self.problem(key, f"{prefix!r} (site_location) is the id of a task in the stage DAGs; rename it")
            elif prefix in prefixes:
                self.problem(
                    key,
                    f"gives the same queue and task names ({prefix}_<operation>) as {prefixes[prefix].key}; "
                    "rename one of them",
                )
            else:
                prefixes[prefix] = location
        for site in sites:
            self.check_roots(site)
        archives = sum(
            1 for location in locations if location.active and location.type == LocationType.LONG_TERM_ARCHIVE
        )
        for location in locations:
            # With no archive at all nothing is archived, so nothing is deleted anyway; the
            # default (1) is then accepted, so a file without archives still loads.
            if location.retention is not None and location.retention.min_lta_copies > max(archives, 1):
                self.problem(
                    f"sites.{location.site}.locations.{location.name}.retention.min_lta_copies",
                    f"{location.retention.min_lta_copies} verified archive copies can never exist: the file has "
                    f"{archives} active LONG_TERM_ARCHIVE location(s), so nothing here would ever be deleted",
                )

    def check_roots(self, site: Site) -> None:
        """No active DISK root of a site is another's, or inside another's.

        A buffer inside a source root would have packaging write into the instrument's tree,
        and deletion could remove our own tars as raw files. Different sites are different
        machines and may reuse paths; inactive locations run nothing.
        """
        roots = [
            (location, PurePosixPath(location.storage_details["root_path"]))
            for location in site.locations
            if location.active and location.storage == StorageType.DISK and "root_path" in location.storage_details
        ]
        for index, (location, root) in enumerate(roots):
            for other_index, (other, other_root) in enumerate(roots):
                key = f"sites.{site.short_name}.locations.{location.name}.root_path"
                if root == other_root and other_index < index:
                    self.problem(key, f"{str(root)!r} is also the root of {other.key}; each location needs its own")
                elif root != other_root and root.is_relative_to(other_root):
                    self.problem(
                        key,
                        f"{str(root)!r} is inside the root of {other.key} ({str(other_root)!r}); "
                        "the two locations' stages would write and delete in each other's files",
                    )

    def route(self, name: Any, spec: Any, sites: dict[str, Site], locations: dict[str, Location]) -> Route:
        key = f"routes.{name}"
        label = self.label(name, key)
        spec = self.mapping(spec, key)
        self.unknown_keys(spec, ROUTE_KEYS, key)
        route_type = self.choice(spec.get("type"), RouteType, f"{key}.type")
        active = self.boolean(spec.get("active"), f"{key}.active", default=True)
        ends: dict[str, str | None] = {}
        for end in ("from", "to", "via"):
            value = self.text(spec.get(end), f"{key}.{end}", required=end != "via")
            if value is not None and value not in sites:
                self.problem(f"{key}.{end}", f"unknown site {value!r}")
            ends[end] = value
        origin, destination, via = ends["from"], ends["to"], ends["via"]
        if origin is not None and origin == destination:
            self.problem(f"{key}.to", "origin and destination site are the same")
        if (route_type == RouteType.RELAY) != (via is not None) and route_type is not None:
            self.problem(f"{key}.via", "a RELAY route needs `via`, and only a RELAY route may have it")
        elif via is not None and via in (origin, destination):
            end = "origin" if via == origin else "destination"
            self.problem(f"{key}.via", f"{via!r} is the route's {end}; a RELAY goes through a third site")
        elif route_type == RouteType.RELAY and active:
            for end, site in (("via", via), ("to", destination)):
                if site in sites and not _has_active_buffer(sites[site]):
                    self.problem(f"{key}.{end}", f"site {site!r} has no active BUFFER for the relayed bundles")
        ends_taken = ROUTE_LOCATION_KEYS.get(route_type, ("from_location", "to_location"))
        route_locations: dict[str, str | None] = {}
        for end, site_end in (("from_location", "from"), ("to_location", "to")):
            route_locations[end] = None
            if route_type is not None and end not in ends_taken:
                if spec.get(end) is not None:
                    self.problem(f"{key}.{end}", f"a {route_type} route takes no {end}")
                continue
            value = self.text(spec.get(end), f"{key}.{end}", required=route_type is not None)
            if value is None:
                continue
            location = locations.get(value)
            if location is None:
                self.problem(f"{key}.{end}", f"unknown location {value!r} (write it as site/location)")
            elif location.site != ends[site_end]:
                self.problem(f"{key}.{end}", f"{value!r} is not at site {ends[site_end]!r}")
            elif location.type != LocationType.BUFFER:
                verb = "leave from" if end == "from_location" else "are delivered into"
                self.problem(f"{key}.{end}", f"{value!r} is a {location.type} location; bundles {verb} a BUFFER")
            elif active and not location.active:
                self.problem(f"{key}.{end}", f"{value!r} is not active; deactivate the route too")
            route_locations[end] = value
        method = self.choice(spec.get("method"), TransferMethod, f"{key}.method", default=TransferMethod.RSYNC)
        return Route(
            name=label or "",
            type=route_type,
            origin_site=origin or "",
            destination_site=destination or "",
            via_site=via,
            origin_location=route_locations["from_location"],
            destination_location=route_locations["to_location"],
            method=method,
            settings=self.route_settings(spec.get("settings"), f"{key}.settings", method),
            active=active,
        )

    def route_settings(self, value: Any, key: str, method: TransferMethod | None) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        spec = self.mapping(value, key)
        self.unknown_keys(spec, set(ROUTE_SETTINGS), key)
        for name, raw in spec.items():
            if name not in ROUTE_SETTINGS:
                continue
            parser, methods = ROUTE_SETTINGS[name]
            if method is not None and method not in methods:
                self.problem(f"{key}.{name}", f"does not apply to method {method} (only {', '.join(methods)})")
                continue
            if isinstance(raw, str):
                raw = self.expand(raw, f"{key}.{name}")
            try:
                settings[name] = parser(raw)
            except ValueError as error:
                self.problem(f"{key}.{name}", str(error))
        return settings

    def check_routes(self, routes: tuple[Route, ...]) -> None:
        """One active route per (origin, destination): routing would use only the first."""
        pairs: dict[tuple[str, str], str] = {}
        for route in routes:
            if not route.active or not route.origin_site or not route.destination_site:
                continue
            pair = (route.origin_site, route.destination_site)
            if pair in pairs:
                self.problem(
                    f"routes.{route.name}.to",
                    f"route {pairs[pair]!r} already overrides {pair[0]} -> {pair[1]}; "
                    "only one active route per pair of sites can be used",
                )
            else:
                pairs[pair] = route.name


# Storage roots ------------------------------------------------------------------

#: Mode of the directories :func:`create_roots` makes (a root and any parent it needs).
ROOT_MODE = 0o755


def disk_roots(topology: Topology) -> list[tuple[Location, Path]]:
    """The root directory of every active DISK location, in file order (inactive ones run nothing)."""
    return [
        (location, Path(location.storage_details["root_path"]))
        for location in topology.locations
        if location.active and location.storage == StorageType.DISK and "root_path" in location.storage_details
    ]


def missing_roots(topology: Topology) -> list[tuple[Location, Path]]:
    """The active DISK roots that are not a directory on this machine.

    Where a location's storage is mounted, a missing root is a mistake (a typo, a disk not
    mounted); elsewhere it is expected: ``ccat topology apply`` usually runs centrally, and
    each site's storage is mounted only on that site's hosts.
    """
    return [(location, root) for location, root in disk_roots(topology) if not root.is_dir()]


def create_roots(topology: Topology) -> list[Path]:
    """Create every missing active DISK root (and missing parents) with mode 0755; return the roots created.

    Raises OSError naming the location and the directory that could not be made (no
    permission, a file in the way); the roots made before it stay.
    """
    created = []
    for location, root in missing_roots(topology):
        try:
            _make_directory(root)
        except OSError as error:
            where = f" ({error.filename})" if error.filename and str(error.filename) != str(root) else ""
            raise OSError(f"{location.key}: cannot create its root {root}: {error.strerror or error}{where}") from error
        created.append(root)
    return created


def _make_directory(path: Path) -> None:
    """``mkdir -p`` with every directory made getting exactly :data:`ROOT_MODE` (not masked by the umask)."""
    if path.is_dir():
        return
    _make_directory(path.parent)
    try:
        path.mkdir(mode=ROOT_MODE)
    except FileExistsError:
        if path.is_dir():  # made meanwhile by someone else
            return
        raise
    path.chmod(ROOT_MODE)


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
        report.note(kind, label, row.inserted)
        return row.id
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
            report.changes.append(f"deactivated location {row.site}/{row.name}")
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
        for name in db.fetch_column("deactivate_routes_except", keep_names=[r.name for r in topology.routes]):
            report.changes.append(f"deactivated route {name}")
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
            report.note("retention of location", location.key, row.inserted)
    return location_id


# Reading back ---------------------------------------------------------------------


def dump(db: OpsDb) -> dict[str, Any]:
    """Return ops-db's topology as a document in the topology file format."""
    observatory = db.fetch_one("observatory_and_telescope")
    instruments: dict[str, dict[str, list[str]]] = {}
    for row in db.fetch_all("instrument_modules"):
        instruments.setdefault(row.instrument, {"modules": []})["modules"].append(row.module)
    sites: dict[str, Any] = {}
    for row in db.fetch_all("sites"):
        sites[row.short_name] = {"name": row.name, "location": row.location, "locations": {}}
    for row in db.fetch_all("data_locations"):
        sites[row.site]["locations"][row.name] = _dump_location(row)
    routes: dict[str, Any] = {}
    for row in db.fetch_all("routes"):
        route = {"type": row.route_type, "from": row.origin_site, "to": row.destination_site}
        optional = {
            "via": row.via_site,
            "from_location": row.origin_location,
            "to_location": row.destination_location,
        }
        route.update({k: v for k, v in optional.items() if v is not None})
        route.update({"method": row.method, "active": row.active})
        if row.settings:
            route["settings"] = row.settings
        routes[row.name] = route
    document: dict[str, Any] = {
        "observatory": observatory.observatory if observatory else None,
        "telescope": observatory.telescope if observatory else None,
        "instruments": instruments,
        "sites": sites,
    }
    if routes:
        document["routes"] = routes
    return document


def _dump_location(row: dict[str, Any]) -> dict[str, Any]:
    location: dict[str, Any] = {"type": row.location_type, "storage": row.storage_type}
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
    location.update({key: getattr(row, column) for key, column in columns.items() if getattr(row, column) is not None})
    location.update({"priority": row.priority, "active": row.active})
    if row.settings:
        location["settings"] = row.settings
    if row.retention_period is not None:
        retention: dict[str, Any] = {"period": format_duration(int(row.retention_period.total_seconds()))}
        if row.location_type in RETENTION_LOCATION_TYPES["min_lta_copies"]:
            retention["min_lta_copies"] = row.min_lta_copies
        if row.disk_pressure_threshold is not None:
            retention["disk_pressure_threshold"] = row.disk_pressure_threshold
        location["retention"] = retention
    return location


def dumps(db: OpsDb) -> str:
    """Return ops-db's topology as YAML text."""
    return yaml.safe_dump(dump(db), sort_keys=False, default_flow_style=False)
