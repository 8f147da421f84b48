"""Staging: a scientist's request -> verified raw files in a PROCESSING location.

A request names observations (ExecutedObsUnit ids, or an obs unit name with a date
range) and a PROCESSING location. It becomes a StagingJob whose name is derived from the
request, so asking again finds the same job and does not redo finished work (after the
job's copies expired and were deleted, asking again starts a new generation).

Observations filed but not archived yet are waited for (``ccat_staging``'s wait task,
:class:`ccat_operators.sensors.staging.StagingRequestSensor`): the job is recorded
first, PENDING with the reason ``waiting for N packages to be archived``, and staged once
they are; a request that names nothing ops-db knows is refused and records nothing.

Each package of the observations is fetched from an S3 archive holding a verified copy
(the processing site's own first), streamed straight into
``<location root>/<job name>/<raw file path>``: every raw file is checked against its
filed checksum and the package against its recorded checksum in the same pass, and only
then renamed into place and recorded as a PhysicalCopy ``STAGED``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from ccat_operators import s3, safefs, states, work
from ccat_operators.faults import ItemFault
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import (
    ArchiveCopyRow,
    LocationRow,
    PackageFileRow,
    StagingJobRow,
    StagingPackageRow,
    WorkItemRow,
)
from ccat_operators.states import LocationType, Status
from ccat_operators.tarstream import Extracted, TarRefusedError, extract_verified
from ccat_operators.units import parse_duration

log = logging.getLogger(__name__)


DEFAULT_RETENTION = "14d"
#: Longest a scientist may ask to keep a staged copy.
MAX_RETENTION = "520w"
MAX_RETENTION_SECONDS = parse_duration(MAX_RETENTION)
#: How long a request waits for observations not archived yet, by default and at most.
DEFAULT_TIMEOUT = "24h"
MAX_TIMEOUT = "30d"
#: Largest id ops-db can hold (bigint).
MAX_ID = 2**63 - 1


class StagingRequestError(ValueError):
    """The request cannot be served as asked (the message says why)."""


@dataclass(frozen=True)
class StagingRequest:
    location: str
    observations: tuple[int, ...] = ()
    obs_unit: str | None = None
    start: date | None = None
    end: date | None = None
    requested_by: str = "unknown"
    retention: str = DEFAULT_RETENTION
    #: How long to wait for observations not archived yet (not part of the job: asking again waits anew).
    timeout: str = DEFAULT_TIMEOUT

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> StagingRequest:
        """Build a request from the DAG's params, refusing incoherent or out-of-range values clearly."""
        observations = parse_observation_ids(params.get("observations"))
        obs_unit = (params.get("obs_unit") or "").strip() or None
        if not observations and not obs_unit:
            raise StagingRequestError("name the observations: give observation ids, or an obs_unit (with dates)")
        if observations and obs_unit:
            raise StagingRequestError("give either observation ids or an obs_unit, not both")
        start = parse_day(params.get("start_date"), "start_date")
        end = parse_day(params.get("end_date"), "end_date")
        if start and end and end < start:
            raise StagingRequestError(f"end_date {end} is before start_date {start}")
        retention = params.get("retention") or DEFAULT_RETENTION
        _duration(retention, "retention", MAX_RETENTION)
        timeout = params.get("timeout") or DEFAULT_TIMEOUT
        _duration(timeout, "timeout", MAX_TIMEOUT)
        location = params.get("location")
        if not isinstance(location, str) or "/" not in location:
            raise StagingRequestError(f"location: {location!r} is not a site/location name")
        return cls(
            location=location,
            observations=observations,
            obs_unit=obs_unit,
            start=start,
            end=end,
            requested_by=str(params.get("requested_by") or "unknown"),
            retention=retention,
            timeout=timeout,
        )

    def timeout_seconds(self) -> int:
        return parse_duration(self.timeout)

    def key(self) -> dict[str, Any]:
        """What identifies the request (who asked and for how long do not)."""
        return {
            "location": self.location,
            "observations": list(self.observations),
            "obs_unit": self.obs_unit,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }

    def job_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:12]
        return f"staging_{digest}"


def parse_observation_ids(values: Any) -> tuple[int, ...]:
    """Sorted, distinct observation ids from a list of ids (ints or digit strings); refuses anything else."""
    if values is None or values == "":
        return ()
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, (list, tuple, set)):
        raise StagingRequestError(f"observations: {values!r} is not a list of observation ids")
    return tuple(sorted({_observation_id(value) for value in values}))


def _observation_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise StagingRequestError(f"observations: {value!r} is not an observation id")
    number = int(value)
    if not 1 <= number <= MAX_ID:
        raise StagingRequestError(f"observations: {number} is not an observation id (1 to {MAX_ID})")
    return number


def parse_day(value: Any, key: str) -> date | None:
    """A ``YYYY-MM-DD`` day (a date passes as it is), or None for an empty value; ``key`` names it in the refusal."""
    if not value:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise StagingRequestError(f"{key}: {value!r} is not a date (YYYY-MM-DD)") from None


def _duration(value: Any, key: str, maximum: str) -> int:
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise StagingRequestError(f"{key}: {error}") from None
    if seconds > parse_duration(maximum):
        raise StagingRequestError(f"{key}: {value!r} is longer than the maximum of {maximum}")
    return seconds


def _midnight(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), tzinfo=UTC)


def resolve_observations(
    db: OpsDb, observations: tuple[int, ...] = (), obs_unit: str | None = None, start: date | None = None,
    end: date | None = None,
) -> list[int]:  # fmt: skip
    """The ExecutedObsUnit ids named by ids, or by an obs unit with days ``start`` to ``end`` (inclusive).

    Refuses (StagingRequestError) ids ops-db does not know, and an obs unit with no
    observation in the days.
    """
    if observations:
        ids = db.fetch_column("executed_obs_units_by_ids", ids=list(observations))
        unknown = sorted(set(observations) - set(ids))
        if unknown:
            raise StagingRequestError(f"unknown observation id(s): {', '.join(map(str, unknown))}")
        return ids
    if not obs_unit:
        raise StagingRequestError("name the observations: give observation ids, or an obs_unit (with dates)")
    after_end = end + timedelta(days=1) if end else None
    ids = db.fetch_column(
        "executed_obs_units_by_obs_unit", obs_unit=obs_unit, start=_midnight(start), end=_midnight(after_end)
    )
    if not ids:
        raise StagingRequestError(f"no observation of obs unit {obs_unit!r} in the given dates")
    return ids


@dataclass(frozen=True)
class Resolved:
    """A request checked against ops-db: its PROCESSING location and its observations."""

    location: LocationRow
    observation_ids: list[int]


def resolve(db: OpsDb, request: StagingRequest) -> Resolved:
    """Check ``request`` against ops-db, recording nothing; StagingRequestError says what is wrong."""
    site, _, name = request.location.partition("/")
    location = db.fetch_one("data_location_by_key", site=site, name=name)
    if location is None or location.location_type != LocationType.PROCESSING or not location.active:
        raise StagingRequestError(f"{request.location!r} is not an active PROCESSING location")
    ids = resolve_observations(db, request.observations, request.obs_unit, request.start, request.end)
    return Resolved(location, ids)


def create_job(
    db: OpsDb, request: StagingRequest, *, resolved: Resolved | None = None, waiting: str | None = None
) -> StagingJobRow:
    """Find or create the StagingJob for ``request`` with its packages so far (idempotent).

    ``resolved``: the request as :func:`resolve` checked it (else it is checked here).
    ``waiting``: the observations are not archived yet; the job is recorded PENDING with
    this reason (a FAILED job of the same request is PENDING again), to be staged once
    they are. Without it, observations with nothing packaged, or with files not packaged
    yet, are refused, and nothing is recorded.
    """
    resolved = resolved or resolve(db, request)
    ids = resolved.observation_ids
    name = _generation(db, request.job_name())
    with db.transaction():
        job = db.fetch_one(
            "upsert_staging_job",
            name=name,
            requested_by=request.requested_by,
            location_id=resolved.location.id,
            request=json.dumps({**request.key(), "observation_ids": ids}),
            retention_period=timedelta(seconds=parse_duration(request.retention)),
        )
        if waiting:
            _note_waiting(db, job, waiting)
            db.execute("add_staging_job_packages", job_id=job.id, observation_ids=ids)
            return db.fetch_one("staging_job", id=job.id)
        # Raised inside the transaction: a refused request leaves no job behind.
        add_packages(db, job.id, ids)
    return job


def add_packages(db: OpsDb, job_id: int, observation_ids: list[int]) -> list[StagingPackageRow]:
    """Add the packages of the observations to a job; refuse if any of their files is not packaged yet.

    Run again once the observations are archived: packages written while the job waited
    join it (idempotent).
    """
    db.execute("add_staging_job_packages", job_id=job_id, observation_ids=observation_ids)
    packages = db.fetch_all("staging_job_packages", job_id=job_id)
    if not packages:
        raise StagingRequestError("the observations have no packaged data yet")
    state = db.fetch_all("observations_archive_state", observation_ids=observation_ids, min_archives=1)
    unpackaged = sum(row.unpackaged_files for row in state)
    if unpackaged:
        raise StagingRequestError(f"{unpackaged} file(s) of the observations are not packaged yet")
    return packages


def _note_waiting(db: OpsDb, job: StagingJobRow, reason: str) -> None:
    """Record why a job waits: PENDING keeps its status, FAILED (an earlier try) is PENDING again."""
    if job.status == Status.FAILED:
        states.move(db, states.STAGING_JOB, job.id, Status.FAILED, Status.PENDING, reason)
    elif job.status == Status.PENDING:
        db.fetch_value("note_staging_job_waiting", id=job.id, reason=reason)


def give_up_waiting(db: OpsDb, job_id: int, reason: str) -> bool:
    """The observations were not archived in time: a job still waiting is FAILED with ``reason``."""
    return states.move(db, states.STAGING_JOB, job_id, Status.PENDING, Status.FAILED, reason)


def _generation(db: OpsDb, base: str) -> str:
    jobs = db.fetch_all("staging_jobs_like", name=base)
    if not jobs or not jobs[0].expired_copies:
        return jobs[0].name if jobs else base
    return f"{base}_{len(jobs) + 1}"


@dataclass
class StageResult:
    job: str
    staged: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def stage_job(db: OpsDb, job_id: int, client_factory: Callable = s3.client) -> StageResult:
    """Stage every package of a job that is not staged yet; COMPLETED when all are (see :func:`work.run`).

    A package that cannot be staged (no verified archive copy yet, every copy refused,
    a link in the target path) fails by itself and the others go on; the job is then
    FAILED with the reasons. An error of the storage itself (S3 unreachable, disk full)
    puts the job back to PENDING, with no ``.part`` left, and is raised for a retry.
    """
    job = db.fetch_one("staging_job", id=job_id)
    result = StageResult(job.name)
    if job.status == Status.COMPLETED:
        result.already = [p.name for p in db.fetch_all("staging_job_packages", job_id=job_id)]
        return result
    location = db.fetch_one("data_location_by_id", id=job.destination_location_id)

    def attempt(row: WorkItemRow) -> work.Record:
        _stage_packages(db, job, location, client_factory, result)
        if result.failed:
            raise ItemFault("; ".join(f"{name}: {why}" for name, why in result.failed.items()))
        return None

    outcome = work.WorkResult()
    work.run(db, states.STAGING_JOB, [WorkItemRow(job_id, job.name)], attempt, outcome, retry_failed=True)
    if not outcome.completed and not outcome.failed:
        raise RuntimeError(f"staging job {job.name} is being worked on by another worker")
    return result


def _stage_packages(
    db: OpsDb, job: StagingJobRow, location: LocationRow, client_factory: Callable, result: StageResult
) -> None:
    for package in db.fetch_all("staging_job_packages", job_id=job.id):
        if package.status == Status.COMPLETED:
            result.already.append(package.name)
            continue
        try:
            _stage_package(db, job, package, location, client_factory)
            result.staged.append(package.name)
        except (ItemFault, StagingRequestError) as error:
            result.failed[package.name] = str(error)
            states.set_staging_package(db, job.id, package.id, Status.FAILED)
            log.error("staging %s: package %s: %s", job.name, package.name, error)


class _ReadInto:
    """Adapts a streaming HTTP body (``read`` only) to the ``readinto`` the tar reader uses."""

    def __init__(self, body) -> None:
        self.body = body

    def read(self, size: int = -1) -> bytes:
        return self.body.read(size if size >= 0 else None)

    def readinto(self, buffer) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _stage_package(
    db: OpsDb, job: StagingJobRow, package: StagingPackageRow, location: LocationRow, client_factory: Callable
) -> None:
    """Stage one package from the first archive copy that verifies; refuse it if none does."""
    copies = db.fetch_all("archive_copies_of_package", package_id=package.id, site_id=location.site_id)
    if not copies:
        raise StagingRequestError(f"package {package.name} has no verified archive copy yet")
    files = db.fetch_all("files_of_package", package_id=package.id)
    refusals = []
    for source in copies:
        try:
            extracted = _fetch(client_factory(source), source, package, files, Path(location.root_path), job.name)
        except TarRefusedError as error:
            refusals.append(f"{source.site}/{source.name}: {error}")
            log.error("staging %s: copy of %s at %s/%s refused: %s", job.name, package.name, source.site,
                      source.name, error)  # fmt: skip
            continue
        try:
            extracted.publish()
        except safefs.UnsafePathError:
            extracted.discard()
            raise
        with db.transaction():
            states.record_staged_copy(db, location.id, package.id, job.id, job.name, package.checksum)
            states.set_staging_package(db, job.id, package.id, Status.COMPLETED)
        log.info("staged %s from %s/%s into %s/%s", package.name, source.site, source.name,
                 location.root_path, job.name)  # fmt: skip
        return
    raise TarRefusedError("every archive copy was refused: " + "; ".join(refusals))


def _fetch(client, source: ArchiveCopyRow, package: StagingPackageRow, files: list[PackageFileRow], root: Path,
           directory: str) -> Extracted:  # fmt: skip
    """Stream one archive copy into ``root/directory`` as verified ``.part`` files.

    A copy missing from its bucket is a refusal of that copy (another may serve);
    any other S3 error is the storage's and is raised.
    """
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=source.s3_bucket, Key=source.path)["Body"]
    except ClientError as error:
        if s3.is_missing(error):
            raise TarRefusedError(f"s3://{source.s3_bucket}/{source.path} is missing") from None
        raise
    try:
        return extract_verified(_ReadInto(body), package.checksum, files, root, directory)
    finally:
        body.close()
