"""Filing: an instrument registers one executed observation and its raw files.

Filing moves no data; it tells ops-db "this observation happened and these files on
this SOURCE location are its raw data". Every file is checked on disk first (exists,
size, checksum - computed when not given) and nothing is recorded unless all of them
pass. Filing the same observation again is a no-op; filing a path that is already
recorded with different content is refused.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ccat_operators import checksums, safefs, yamldoc
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import LocationRow
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
    modules = _modules_of(db, observation.instrument)
    algorithm = location.settings.get("checksum_algorithm", checksums.DEFAULT_ALGORITHM)
    verified = _verify_files(Path(location.root_path), observation, modules, algorithm, progress)

    with db.transaction():
        executed_obs_unit_id = _upsert_executed_obs_unit(db, observation)
        inserted = db.fetch_column(
            "insert_raw_data_files",
            executed_obs_unit_id=executed_obs_unit_id,
            source_location_id=location.id,
            paths=[f["path"] for f in verified],
            module_ids=[f["module_id"] for f in verified],
            sizes=[f["size"] for f in verified],
            checksums=[f["checksum"] for f in verified],
            inodes=[f["inode"] for f in verified],
            mtimes_ns=[f["mtime_ns"] for f in verified],
        )
        new_paths = set(inserted)
        _check_earlier_filings(db, location.id, executed_obs_unit_id, verified, new_paths)
    return FilingResult(
        executed_obs_unit_id=executed_obs_unit_id,
        new_files=len(new_paths),
        already_filed=len(verified) - len(new_paths),
        files=verified,
    )


def bytes_on_disk(db: OpsDb, observation: Observation) -> int:
    """Total size of the observation's files found under its location: what filing will hash."""
    root = Path(_source_location(db, observation.location).root_path)
    paths = (root / raw.path for raw in observation.files)
    return sum(path.stat().st_size for path in paths if path.is_file())


def check_observation(db: OpsDb, observation: Observation) -> LocationRow:
    """Every check of :func:`file_observation` that needs no file; return the SOURCE location's row.

    For a host that cannot see the files (the api-server): the location is an active
    SOURCE disk, the instrument and each file's module are known, each path is relative,
    normalised and listed once. Raises FilingError naming every problem; records nothing.
    Whether the files exist, their sizes, checksums and links are :func:`file_observation`'s
    checks, where the files are.
    """
    location = _source_location(db, observation.location)
    modules = _modules_of(db, observation.instrument)
    problems = [] if observation.files else ["an observation needs at least one file"]
    seen: set[str] = set()
    for raw in observation.files:
        problem = _listing_problem(raw, observation.instrument, modules, seen)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise FilingError(problems)
    return location


def _modules_of(db: OpsDb, instrument: str) -> dict[str, int]:
    modules = {row.name: row.id for row in db.fetch_all("instrument_modules_of", instrument=instrument)}
    if not modules:
        raise FilingError([f"unknown instrument {instrument!r} (declare it in the topology file)"])
    return modules


def _listing_problem(raw: RawFile, instrument: str, modules: dict[str, int], seen: set[str]) -> str | None:
    """What is wrong with one file's entry, before the file is looked at (None: nothing); notes its path in ``seen``."""
    path = PurePosixPath(raw.path)
    label = f"file {raw.path!r}"
    if path.is_absolute() or ".." in path.parts or not raw.path or str(path) != raw.path:
        return f"{label}: path must be relative to the location root, normalised, without '..'"
    if raw.path in seen:
        return f"{label}: listed twice"
    seen.add(raw.path)
    if raw.module not in modules:
        return f"{label}: unknown module {raw.module!r} of {instrument} (known: {', '.join(sorted(modules))})"
    return None


def _source_location(db: OpsDb, key: str) -> dict[str, Any]:
    site, _, name = key.partition("/")
    row = db.fetch_one("data_location_by_key", site=site, name=name)
    if row is None:
        raise FilingError([f"unknown location {key!r} (write it as site/location)"])
    if row.location_type != LocationType.SOURCE or row.storage_type != StorageType.DISK:
        raise FilingError([f"location {key!r} is {row.location_type}/{row.storage_type}, not a SOURCE disk"])
    if not row.active:
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
        label = f"file {raw.path!r}"
        problem = _listing_problem(raw, observation.instrument, modules, seen)
        if problem is not None:
            problems.append(problem)
            continue
        file_algorithm = algorithm
        if raw.checksum is not None:
            try:
                file_algorithm, _ = checksums.parse(raw.checksum)
            except ValueError as error:
                problems.append(f"{label}: {error}")
                continue
        try:
            found = _hash_within_root(root, raw.path, file_algorithm, raw.size)
        except (OSError, safefs.UnsafePathError) as error:
            problems.append(f"{label}: {_unreadable(error, root / raw.path)}")
            continue
        if raw.size is not None and raw.size != found["size"]:
            problems.append(f"{label}: size on disk is {found['size']}, filed as {raw.size}")
            continue
        if progress is not None:
            progress(found["size"])
        if raw.checksum is not None and raw.checksum != found["checksum"]:
            problems.append(f"{label}: checksum on disk is {found['checksum']}, filed as {raw.checksum}")
            continue
        verified.append({"path": raw.path, "module_id": modules[raw.module], **found})
    if problems:
        raise FilingError(problems)
    return verified


def _hash_within_root(root: Path, relative: str, algorithm: str, expected_size: int | None) -> dict[str, Any]:
    """Size, checksum and identity (inode, mtime) of a raw file that must lie inside ``root``.

    The path may pass through links that stay inside the root; its last component must
    be a regular file, not a link. Raises UnsafePathError if it leaves the root. The file
    is not hashed if its size is not ``expected_size`` (checksum None).
    """
    if (root / relative).is_symlink():
        raise safefs.UnsafePathError(f"{root / relative} is a symbolic link, not the file itself")
    with safefs.StreamingFile(safefs.open_resolved(root, relative)) as stream:
        found = os.fstat(stream.fileno())
        wanted = expected_size is None or expected_size == found.st_size
        checksum = checksums.stream_checksum(stream, algorithm) if wanted else None
    return {"size": found.st_size, "checksum": checksum, "inode": found.st_ino, "mtime_ns": found.st_mtime_ns}


def _unreadable(error: OSError | safefs.UnsafePathError, path: Path) -> str:
    if isinstance(error, safefs.UnsafePathError):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"not a regular file at {path} (no such file)"
    return f"cannot read {path}: {error.strerror or error}"


def _upsert_executed_obs_unit(db: OpsDb, observation: Observation) -> int:
    if observation.start_time.tzinfo is None or (observation.end_time and observation.end_time.tzinfo is None):
        raise FilingError(["start_time and end_time must include a time zone (e.g. 2026-11-20T03:00:00Z)"])
    if observation.end_time is not None and observation.end_time < observation.start_time:
        raise FilingError([f"end_time {observation.end_time.isoformat()} is before start_time "
                           f"{observation.start_time.isoformat()}"])  # fmt: skip
    program_id = db.fetch_value("upsert_observing_program", name=observation.program)
    obs_unit_id = db.fetch_value("upsert_obs_unit", observing_program_id=program_id, name=observation.obs_unit)
    row = db.fetch_one(
        "upsert_executed_obs_unit",
        obs_unit_id=obs_unit_id,
        start_time=observation.start_time,
        end_time=observation.end_time,
    )
    if observation.end_time is not None and row.end_time != observation.end_time:
        raise FilingError(
            [
                f"observation {observation.obs_unit} at {observation.start_time.isoformat()} "
                f"was filed with end_time {row.end_time}, not {observation.end_time}"
            ]
        )
    return row.id


def _check_earlier_filings(
    db: OpsDb, location_id: int, executed_obs_unit_id: int, verified: list[dict[str, Any]], new_paths: set[str]
) -> None:
    earlier_paths = [f["path"] for f in verified if f["path"] not in new_paths]
    if not earlier_paths:
        return
    earlier = {
        row.relative_path: row
        for row in db.fetch_all("raw_data_files_by_path", source_location_id=location_id, paths=earlier_paths)
    }
    problems = []
    for wanted in verified:
        row = earlier.get(wanted["path"])
        if row is None:
            continue
        same = (
            row.executed_obs_unit_id == executed_obs_unit_id
            and row.instrument_module_id == wanted["module_id"]
            and row.size_bytes == wanted["size"]
            and row.checksum == wanted["checksum"]
        )
        if not same:
            problems.append(
                f"file {wanted['path']!r} was already filed (id {row.id}) with different "
                "observation, module, size or checksum"
            )
    if problems:
        raise FilingError(problems)


#: Keys of a filing manifest and of each entry of its ``files`` list (README, "Filing observations").
MANIFEST_KEYS = ("location", "instrument", "program", "obs_unit", "start_time", "end_time", "files")
MANIFEST_FILE_KEYS = ("path", "module", "size", "checksum")


def observation_from_document(document: Any, source: str = "<manifest>") -> Observation:
    """Build an Observation from a parsed filing manifest (see README, "Filing observations").

    Raises FilingError naming every problem as ``source: key: message``: a missing,
    unknown or mistyped key, a malformed checksum, a timestamp without a time zone, an
    end_time before the start_time. Values are never coerced, so a module named 850
    is written ``"850"``; whether the files exist is :func:`file_observation`'s check.
    """
    reader = _ManifestReader(source)
    observation = reader.observation(document)
    if observation is None:
        raise FilingError(reader.problems)
    return observation


class _ManifestReader:
    """Walks one manifest document, collecting every problem before giving up."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def refuse(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def observation(self, document: Any) -> Observation | None:
        """The Observation ``document`` describes, or None with ``problems`` saying why not."""
        if not isinstance(document, dict):
            self.problems.append(
                f"{self.source}: expected a mapping of {', '.join(MANIFEST_KEYS)}, got {_shown(document)}"
            )
            return None
        self.unknown_keys(document, MANIFEST_KEYS, "")
        texts = {key: self.text(document, key) for key in ("location", "instrument", "program", "obs_unit")}
        start_time = self.timestamp(document, "start_time", required=True)
        end_time = self.timestamp(document, "end_time", required=False)
        if start_time is not None and end_time is not None and end_time < start_time:
            self.refuse("end_time", f"{end_time.isoformat()} is before start_time {start_time.isoformat()}")
        files = self.files(document.get("files"))
        if self.problems:
            return None
        return Observation(**texts, start_time=start_time, end_time=end_time, files=files)  # no problems: no None

    def unknown_keys(self, mapping: dict, allowed: tuple[str, ...], where: str) -> None:
        for key in mapping:
            if key not in allowed:
                guess = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {guess[0]!r}? " if guess else ""
                self.refuse(f"{where}{key}", f"unknown key ({hint}allowed: {', '.join(allowed)})")

    def text(self, mapping: dict, key: str, where: str = "") -> str | None:
        value = mapping.get(key)
        if value is None or value == "":
            self.problems.append(f"{self.source}: {where}{key} is required")
        elif not isinstance(value, str):
            quote = " (write names that look like numbers in quotes)" if isinstance(value, int | float) else ""
            self.refuse(f"{where}{key}", f"expected a string, got {_shown(value)}{quote}")
        else:
            return value
        return None

    def timestamp(self, mapping: dict, key: str, required: bool) -> datetime | None:
        value = mapping.get(key)
        if value is None:
            if required:
                self.problems.append(f"{self.source}: {key} is required")
            return None
        try:
            return _timestamp(value)
        except ValueError as error:
            self.refuse(key, str(error))
        return None

    def files(self, value: Any) -> tuple[RawFile, ...]:
        if value is None:
            self.problems.append(f"{self.source}: files is required")
            return ()
        if not isinstance(value, list) or not value:
            self.refuse("files", f"expected a list of at least one file, got {_shown(value)}")
            return ()
        files = []
        for index, entry in enumerate(value):
            where = f"files[{index}]"
            if not isinstance(entry, dict):
                self.refuse(where, f"expected a mapping of {', '.join(MANIFEST_FILE_KEYS)}, got {_shown(entry)}")
                continue
            self.unknown_keys(entry, MANIFEST_FILE_KEYS, f"{where}.")
            path = self.text(entry, "path", f"{where}.")
            module = self.text(entry, "module", f"{where}.")
            size = self.size(entry.get("size"), f"{where}.size")
            checksum = self.checksum(entry.get("checksum"), f"{where}.checksum")
            if path is not None and module is not None:
                files.append(RawFile(path=path, module=module, size=size, checksum=checksum))
        return tuple(files)

    def size(self, value: Any, key: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.refuse(key, f"expected a non-negative integer, got {_shown(value)}")
            return None
        return value

    def checksum(self, value: Any, key: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.refuse(key, f"expected a string algorithm:hex (e.g. sha256:9f86d0…), got {_shown(value)}")
            return None
        try:
            checksums.parse(value)
        except ValueError as error:
            self.refuse(key, str(error))
            return None
        return value


def _timestamp(value: Any) -> datetime:
    """``value`` as a time-zone-aware datetime; ValueError saying why it is not one."""
    expected = "expected an ISO 8601 timestamp with a time zone (e.g. 2026-11-20T03:00:00Z)"
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{expected}, got {value!r}") from None
    else:
        raise ValueError(f"{expected}, got {_shown(value)}")
    if parsed.utcoffset() is None:
        raise ValueError(f"{expected}, got {parsed.isoformat()} without one")
    return parsed


def _shown(value: Any) -> str:
    """A short description of a manifest value for an error message."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, datetime | date):
        return value.isoformat()
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "…"


def load_manifest(path: Path) -> Observation:
    """Read and validate a filing manifest: JSON if its name ends in ``.json``, else YAML.

    Raises FilingError naming the file for anything wrong with it: unreadable, a
    directory, not UTF-8, a syntax error or duplicate key (with its line), or any
    problem :func:`observation_from_document` finds.
    """
    text = _manifest_text(path)
    document = _parse_json_manifest(text, path) if path.suffix == ".json" else _parse_yaml_manifest(text, path)
    return observation_from_document(document, source=str(path))


def _manifest_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FilingError([f"{path}: cannot read the manifest: {error.strerror or error}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise FilingError([f"{path}: line {line}: not UTF-8 text (byte 0x{data[error.start]:02x})"]) from None


def _parse_yaml_manifest(text: str, path: Path) -> Any:
    try:
        return yamldoc.load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = f"{error.problem} ({error.context})" if error.context else error.problem
        raise FilingError([f"{path}: {where}not valid YAML: {what}"]) from None
    except yaml.reader.ReaderError as error:
        line = text.count("\n", 0, error.position) + 1
        raise FilingError([f"{path}: line {line}: not valid YAML: {error.reason}"]) from None


def _parse_json_manifest(text: str, path: Path) -> Any:
    return json_document(text, str(path))


def json_document(text: str, source: str) -> Any:
    """Parse a JSON manifest's text; FilingError naming ``source`` and the line, or a key given twice."""
    try:
        return json.loads(text, object_pairs_hook=_json_object)
    except json.JSONDecodeError as error:
        where = f"{source}: line {error.lineno}, column {error.colno}"
        raise FilingError([f"{where}: not valid JSON: {error.msg}"]) from None
    except ValueError as error:  # a duplicate key, from _json_object
        raise FilingError([f"{source}: not valid JSON: {error}"]) from None


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json would keep the last silently)."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise ValueError(f"duplicate key {key!r}")
        mapping[key] = value
    return mapping
