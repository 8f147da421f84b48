"""Filing: an instrument registers one executed observation and its raw files.

Filing moves no data; it tells ops-db "this observation happened and these files on
this SOURCE location are its raw data". Every file is checked on disk first (exists,
size, checksum - computed when not given) and nothing is recorded unless all of them
pass. Filing the same observation again is a no-op; filing a path that is already
recorded with different content is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ccat_operators import checksums
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType, StorageType


class FilingError(ValueError):
    """The filing was refused; nothing was recorded. ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("filing refused, nothing recorded:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class RawFile:
    """One raw file, its path relative to the SOURCE location's root."""

    path: str
    module: str
    size: int | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class Observation:
    """One ExecutedObsUnit with its raw files, as an instrument files it."""

    location: str  # "site/location" of a SOURCE location
    instrument: str
    program: str
    obs_unit: str
    start_time: datetime
    end_time: datetime | None
    files: tuple[RawFile, ...]


@dataclass
class FilingResult:
    executed_obs_unit_id: int
    new_files: int = 0
    already_filed: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)


def file_observation(
    db: OpsDb, observation: Observation, progress: Callable[[int], None] | None = None
) -> FilingResult:
    """Verify ``observation``'s files on disk and record it in ops-db (idempotent).

    ``progress(n_bytes)`` is called after each file is hashed (a CLI progress bar).

    Raises FilingError naming every problem (unknown location or module, missing file,
    size or checksum mismatch, conflicting earlier filing); nothing is recorded then.
    """
    location = _source_location(db, observation.location)
    modules = {
        row["name"]: row["id"] for row in db.fetch_all("instrument_modules_of", instrument=observation.instrument)
    }
    if not modules:
        raise FilingError([f"unknown instrument {observation.instrument!r} (declare it in the topology file)"])
    algorithm = location["settings"].get("checksum_algorithm", checksums.DEFAULT_ALGORITHM)
    verified = _verify_files(Path(location["root_path"]), observation, modules, algorithm, progress)

    with db.transaction():
        executed_obs_unit_id = _upsert_executed_obs_unit(db, observation)
        inserted = db.fetch_all(
            "insert_raw_data_files",
            executed_obs_unit_id=executed_obs_unit_id,
            source_location_id=location["id"],
            paths=[f["path"] for f in verified],
            module_ids=[f["module_id"] for f in verified],
            sizes=[f["size"] for f in verified],
            checksums=[f["checksum"] for f in verified],
        )
        new_paths = {row["relative_path"] for row in inserted}
        _check_earlier_filings(db, location["id"], executed_obs_unit_id, verified, new_paths)
    return FilingResult(
        executed_obs_unit_id=executed_obs_unit_id,
        new_files=len(new_paths),
        already_filed=len(verified) - len(new_paths),
        files=verified,
    )


def bytes_on_disk(db: OpsDb, observation: Observation) -> int:
    """Total size of the observation's files found under its location: what filing will hash."""
    root = Path(_source_location(db, observation.location)["root_path"])
    paths = (root / raw.path for raw in observation.files)
    return sum(path.stat().st_size for path in paths if path.is_file())


def _source_location(db: OpsDb, key: str) -> dict[str, Any]:
    site, _, name = key.partition("/")
    row = db.fetch_one("data_location_by_key", site=site, name=name)
    if row is None:
        raise FilingError([f"unknown location {key!r} (write it as site/location)"])
    if row["location_type"] != LocationType.SOURCE or row["storage_type"] != StorageType.DISK:
        raise FilingError([f"location {key!r} is {row['location_type']}/{row['storage_type']}, not a SOURCE disk"])
    if not row["active"]:
        raise FilingError([f"location {key!r} is inactive"])
    return row


def _verify_files(
    root: Path,
    observation: Observation,
    modules: dict[str, int],
    algorithm: str,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    problems: list[str] = []
    verified: list[dict[str, Any]] = []
    if not observation.files:
        problems.append("an observation needs at least one file")
    seen: set[str] = set()
    for raw in observation.files:
        path = PurePosixPath(raw.path)
        label = f"file {raw.path!r}"
        if path.is_absolute() or ".." in path.parts or not raw.path or str(path) != raw.path:
            problems.append(f"{label}: path must be relative to the location root, normalised, without '..'")
            continue
        if raw.path in seen:
            problems.append(f"{label}: listed twice")
            continue
        seen.add(raw.path)
        if raw.module not in modules:
            problems.append(
                f"{label}: unknown module {raw.module!r} of {observation.instrument} "
                f"(known: {', '.join(sorted(modules))})"
            )
            continue
        on_disk = root / raw.path
        if on_disk.is_symlink() or not on_disk.is_file():
            problems.append(f"{label}: not a regular file at {on_disk}")
            continue
        size = on_disk.stat().st_size
        if raw.size is not None and raw.size != size:
            problems.append(f"{label}: size on disk is {size}, filed as {raw.size}")
            continue
        file_algorithm = algorithm
        if raw.checksum is not None:
            try:
                file_algorithm, _ = checksums.parse(raw.checksum)
            except ValueError as error:
                problems.append(f"{label}: {error}")
                continue
        actual = checksums.file_checksum(on_disk, file_algorithm)
        if progress is not None:
            progress(size)
        if raw.checksum is not None and raw.checksum != actual:
            problems.append(f"{label}: checksum on disk is {actual}, filed as {raw.checksum}")
            continue
        verified.append({"path": raw.path, "module_id": modules[raw.module], "size": size, "checksum": actual})
    if problems:
        raise FilingError(problems)
    return verified


def _upsert_executed_obs_unit(db: OpsDb, observation: Observation) -> int:
    if observation.start_time.tzinfo is None:
        raise FilingError(["start_time must include a time zone (e.g. 2026-11-20T03:00:00Z)"])
    program_id = db.fetch_value("upsert_observing_program", name=observation.program)
    obs_unit_id = db.fetch_value("upsert_obs_unit", observing_program_id=program_id, name=observation.obs_unit)
    row = db.fetch_one(
        "upsert_executed_obs_unit",
        obs_unit_id=obs_unit_id,
        start_time=observation.start_time,
        end_time=observation.end_time,
    )
    if observation.end_time is not None and row["end_time"] != observation.end_time:
        raise FilingError(
            [
                f"observation {observation.obs_unit} at {observation.start_time.isoformat()} "
                f"was filed with end_time {row['end_time']}, not {observation.end_time}"
            ]
        )
    return row["id"]


def _check_earlier_filings(
    db: OpsDb, location_id: int, executed_obs_unit_id: int, verified: list[dict[str, Any]], new_paths: set[str]
) -> None:
    earlier_paths = [f["path"] for f in verified if f["path"] not in new_paths]
    if not earlier_paths:
        return
    earlier = {
        row["relative_path"]: row
        for row in db.fetch_all("raw_data_files_by_path", source_location_id=location_id, paths=earlier_paths)
    }
    problems = []
    for wanted in verified:
        row = earlier.get(wanted["path"])
        if row is None:
            continue
        same = (
            row["executed_obs_unit_id"] == executed_obs_unit_id
            and row["instrument_module_id"] == wanted["module_id"]
            and row["size_bytes"] == wanted["size"]
            and row["checksum"] == wanted["checksum"]
        )
        if not same:
            problems.append(
                f"file {wanted['path']!r} was already filed (id {row['id']}) with different "
                "observation, module, size or checksum"
            )
    if problems:
        raise FilingError(problems)


def observation_from_document(document: Any, source: str = "<manifest>") -> Observation:
    """Build an Observation from a parsed filing manifest (see README, "Filing")."""
    if not isinstance(document, dict):
        raise FilingError([f"{source}: expected a mapping at the top level"])
    problems = [
        f"{source}: {key} is required"
        for key in ("location", "instrument", "program", "obs_unit", "start_time", "files")
        if not document.get(key)
    ]
    if problems:
        raise FilingError(problems)
    files = []
    for index, entry in enumerate(document["files"]):
        if not isinstance(entry, dict) or "path" not in entry or "module" not in entry:
            raise FilingError([f"{source}: files[{index}] needs path and module"])
        files.append(
            RawFile(
                path=str(entry["path"]),
                module=str(entry["module"]),
                size=entry.get("size"),
                checksum=entry.get("checksum"),
            )
        )
    return Observation(
        location=str(document["location"]),
        instrument=str(document["instrument"]),
        program=str(document["program"]),
        obs_unit=str(document["obs_unit"]),
        start_time=_timestamp(document["start_time"], "start_time", source),
        end_time=_timestamp(document["end_time"], "end_time", source) if document.get("end_time") else None,
        files=tuple(files),
    )


def _timestamp(value: Any, key: str, source: str) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise FilingError([f"{source}: {key} {value!r} is not an ISO 8601 timestamp"]) from None


def load_manifest(path: Path) -> Observation:
    """Read a YAML or JSON filing manifest."""
    text = path.read_text()
    document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return observation_from_document(document, source=str(path))
