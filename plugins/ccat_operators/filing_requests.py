"""Filing requests: observations filed over HTTP, whose files are checked where they are.

The api-server (:mod:`ccat_operators.api`) runs where no instrument disk is mounted. It
checks everything about a manifest that needs no file, as ``ccat file`` would
(:func:`ccat_operators.filing.observation_from_document` and
:func:`~ccat_operators.filing.check_observation`), and records it as an open request
(:func:`submit`). A worker of the request's SOURCE location - the ``ccat_filing`` DAG, on
that location's ``raw_data_package_creation`` queue, served on the host where its disks
are mounted - decides the open requests of its location (:func:`decide_open_requests`):
each in one transaction that claims it (``FOR UPDATE SKIP LOCKED``), files it with
:func:`~ccat_operators.filing.file_observation` (every file's existence, size, checksum,
and the root wall) and writes its outcome. So a request is ACCEPTED exactly when its
observation and files are recorded, REFUSED with every problem and nothing of it
recorded, or still open; a worker that dies half-way leaves it open for the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from psycopg.types.json import Jsonb

from ccat_operators import filing
from ccat_operators.opsdb import OpsDb
from ccat_operators.queues import Operation, queue_name
from ccat_operators.rows import ClaimedFilingRow, FilingRequestRow

#: The DAG whose runs decide filing requests.
FILING_DAG_ID = "ccat_filing"
#: The operation whose queue a location's filing runs on: the queue served where the
#: location's disks are mounted, which packaging (reading the same files) uses too.
FILING_OPERATION = Operation.RAW_DATA_PACKAGE_CREATION
#: How problems with a request's manifest name it (``manifest: files[0].size: ...``).
MANIFEST_SOURCE = "manifest"


class Outcome(StrEnum):
    """What became of a decided filing request (an open one has none)."""

    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"


@dataclass(frozen=True)
class Submitted:
    """An open filing request and where it will be decided."""

    id: int
    #: ``site/location`` of its SOURCE location.
    location: str
    #: The queue whose worker checks its files.
    queue: str


@dataclass(frozen=True)
class RequestState:
    """A filing request as its requester sees it: open, or decided with its outcome."""

    request: FilingRequestRow
    #: Why it was refused (empty unless REFUSED).
    problems: list[str]

    @property
    def state(self) -> str:
        """``PENDING`` while open, else the outcome."""
        return self.request.outcome or "PENDING"

    @property
    def queue(self) -> str:
        site, _, name = self.request.location.partition("/")
        return queue_name(site, name, FILING_OPERATION)


@dataclass
class Decided:
    """What one worker decided: filed observations by request id, and the refused requests' problems."""

    accepted: dict[int, filing.FilingResult] = field(default_factory=dict)
    refused: dict[int, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.accepted) + len(self.refused)


def submit(db: OpsDb, document: Any, requested_by: str) -> Submitted:
    """Check a manifest document as ``ccat file`` does, short of its files, and record it as an open request.

    Raises FilingError naming every problem (the manifest's keys and values, an unknown
    or inactive location, instrument or module, a path that is not relative and
    normalised); nothing is recorded then.
    """
    observation = filing.observation_from_document(document, source=MANIFEST_SOURCE)
    location = filing.check_observation(db, observation)
    request_id = db.fetch_value(
        "insert_filing_request", source_location_id=location.id, manifest=Jsonb(document), requested_by=requested_by
    )
    key = f"{location.site}/{location.name}"
    return Submitted(request_id, key, queue_name(location.site, location.name, FILING_OPERATION))


def decide_open_requests(db: OpsDb, location_id: int, worker: str) -> Decided:
    """File or refuse every open request of a SOURCE location, oldest first; run where its files are.

    Each request is claimed, filed and given its outcome in one transaction; requests
    another worker holds are left to it. A refusal is an outcome, not an error. Any other
    error (ops-db gone, a disk error) rolls the request back to open and is raised.
    """
    decided = Decided()
    while True:
        with db.transaction():
            claimed = db.fetch_one("claim_filing_request", location_id=location_id)
            if claimed is None:
                return decided
            _decide(db, claimed, worker, decided)


def _decide(db: OpsDb, claimed: ClaimedFilingRow, worker: str, decided: Decided) -> None:
    try:
        observation = filing.observation_from_document(claimed.manifest, source=MANIFEST_SOURCE)
        result = filing.file_observation(db, observation)
    except filing.FilingError as refusal:
        # file_observation's own writes were rolled back to its savepoint: nothing of it is recorded.
        _record(db, claimed.id, Outcome.REFUSED, worker, problems=refusal.problems)
        decided.refused[claimed.id] = refusal.problems
        return
    _record(db, claimed.id, Outcome.ACCEPTED, worker, result=result)
    decided.accepted[claimed.id] = result


def _record(
    db: OpsDb,
    request_id: int,
    outcome: Outcome,
    worker: str,
    *,
    problems: list[str] | None = None,
    result: filing.FilingResult | None = None,
) -> None:
    written = db.execute(
        "record_filing_outcome",
        id=request_id,
        outcome=str(outcome),
        problems=Jsonb(problems) if problems else None,
        executed_obs_unit_id=result.executed_obs_unit_id if result else None,
        new_files=result.new_files if result else None,
        already_filed=result.already_filed if result else None,
        worker=worker,
    )
    if written != 1:  # the claim holds the row: only a bug gets here
        raise RuntimeError(f"filing request {request_id} was decided by someone else while this worker held it")


def request_state(db: OpsDb, request_id: int) -> RequestState | None:
    """A filing request and, if it was refused, why; None if there is no such request."""
    request = db.fetch_one("filing_request", id=request_id)
    if request is None:
        return None
    return RequestState(request, db.fetch_column("filing_request_problems", id=request_id))
