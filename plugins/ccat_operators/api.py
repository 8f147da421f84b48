"""The HTTP filing API: instruments file observations and follow them, on Airflow's api-server.

The plugin ``plugins/ccat_api.py`` mounts :data:`app` at :data:`URL_PREFIX` (``/ccat/api/v1``):

- ``POST /observations``: a filing manifest as JSON, the keys of ``ccat file``'s manifest.
  It is checked at once as ``ccat file`` checks it, short of the files (422 naming every
  problem; nothing recorded), then recorded as a filing request whose files a worker of
  its SOURCE location checks where they are (:mod:`ccat_operators.filing_requests`): 202
  with the request. With ``?wait=N`` the answer waits up to N seconds for that worker: 201
  with the observation if it was filed, 422 with every problem if it was refused, else 202.
- ``GET /filings/{id}``: a filing request, PENDING, ACCEPTED (its observation, new and
  already filed files) or REFUSED (every problem; nothing of it recorded).
- ``GET /observations/{id}``: an observation's progress as ``ccat status`` shows it.
- ``GET /openapi.json`` and ``/docs``: the schema, naming every model.

Callers are authenticated by Airflow's auth manager as on its REST API (the api-server's
own ``get_user``: a JWT from ``POST /auth/token`` as a bearer token, or the UI's session;
401 without one) and authorized by it on the custom resource ``CCAT Observations``
(:data:`ccat_operators.roles.OBSERVATIONS_RESOURCE`): POST needs ``can_create`` on it, GET
``can_read`` (403 otherwise). The ``instrument`` role holds both and nothing else.

ops-db is reached through Airflow's connection ``ccat_ops_db``, as the DAGs reach it.
Imports Airflow's api-server modules: only the api-server imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import psycopg
from airflow.api.common.trigger_dag import trigger_dag
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.core_api.security import get_user
from airflow.exceptions import AirflowNotFoundException, DagNotFound, DagRunAlreadyExists
from airflow.models.connection import Connection
from airflow.models.dag import DagModel
from airflow.models.dagrun import DagRun
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ccat_operators import filing, filing_requests
from ccat_operators.filing_requests import FILING_DAG_ID, MANIFEST_SOURCE, RequestState
from ccat_operators.hooks.ops_db import OpsDbHook
from ccat_operators.opsdb import OpsDb, OpsDbConfigError
from ccat_operators.roles import OBSERVATIONS_RESOURCE
from ccat_operators.status import observation_lines

log = logging.getLogger(__name__)

#: Where the plugin mounts the app on the api-server.
URL_PREFIX = "/ccat/api/v1"
#: Largest manifest accepted (413 above): about 50,000 files.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: Longest ``?wait`` for the SOURCE host's decision, in seconds.
MAX_WAIT = 300
POLL_SECONDS = 1
#: The largest id ops-db holds (bigint).
MAX_ID = 2**63 - 1


# --- models ----------------------------------------------------------------------------


class ManifestFile(BaseModel):
    """One raw file of the observation."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="Relative to the SOURCE location's root, normalised, without '..'.",
        examples=["primecam/2026-11-20/orion_map/280GHz/scan_0001.dat"],
    )
    module: str = Field(description="The instrument module that recorded it (quoted if it looks like a number).")
    size: int | None = Field(None, ge=0, description="Bytes; checked against the file on disk.")
    checksum: str | None = Field(
        None,
        pattern=r"^[a-z0-9_]+:[0-9a-f]+$",
        description="algorithm:hex (sha256, xxh3_128); checked, computed when absent.",
    )


class FilingManifest(BaseModel):
    """An executed observation and its raw files: the manifest of ``ccat file``, as JSON.

    Unknown keys, wrong types (no value is coerced) and an end before the start are
    refused, naming the key. Every file is then checked on the SOURCE host: it must exist
    inside the location's root (no link leading out), with the given size and checksum.
    """

    model_config = ConfigDict(extra="forbid")

    location: str = Field(description="site/location of an active SOURCE location.")
    instrument: str = Field(examples=["Prime-Cam"])
    program: str = Field(description="Observing program (created if new).", examples=["commissioning"])
    obs_unit: str = Field(description="Obs unit (created if new).", examples=["orion_map"])
    start_time: AwareDatetime = Field(description="ISO 8601 with a time zone.", examples=["2026-11-20T03:00:00Z"])
    end_time: AwareDatetime | None = Field(None, description="Not before start_time.")
    files: list[ManifestFile] = Field(min_length=1)


class FilingRequest(BaseModel):
    """A filing request: open (PENDING) until a worker of its SOURCE location checked its files."""

    id: int
    state: Literal["PENDING", "ACCEPTED", "REFUSED"] = Field(
        description="PENDING: its files are not checked yet. ACCEPTED: the observation and its files are recorded. "
        "REFUSED: nothing of it is recorded; `problems` says why."
    )
    location: str = Field(description="Its SOURCE location, site/location.")
    queue: str = Field(description="The queue whose worker (where the files are) checks them.")
    requested_by: str
    requested_at: datetime
    finished_at: datetime | None = None
    executed_obs_unit_id: int | None = Field(
        None, description="ACCEPTED: the observation's id (GET /observations/{id})."
    )
    new_files: int | None = Field(None, description="ACCEPTED: files recorded by this request.")
    already_filed: int | None = Field(None, description="ACCEPTED: files that were already filed, identically.")
    problems: list[str] = Field(default_factory=list, description="REFUSED: every problem found.")
    waiting: str | None = Field(None, description="PENDING: why it may wait longer than a run of ccat_filing takes.")


class Refusal(BaseModel):
    """Input refused, nothing recorded: every problem, each naming the key or file at fault."""

    detail: str
    problems: list[str]
    request: int | None = Field(None, description="The filing request, when its SOURCE host refused it.")


class Message(BaseModel):
    """An error: not authenticated (401), not allowed (403), not found (404), too large (413), ops-db down (503)."""

    detail: str


class PackageProgress(BaseModel):
    """Where one RawDataPackage of the observation is, and since when."""

    name: str
    stage: str = Field(
        description="packaging, waiting for a bundle, bundling, transferring, unpacking, archiving, archived or failed."
    )
    since: datetime | None


class ObservationProgress(BaseModel):
    """An observation's progress, as ``ccat status`` shows it."""

    id: int
    program: str
    obs_unit: str
    start_time: datetime
    end_time: datetime | None
    files: int
    size_bytes: int
    files_waiting_for_packaging: int = Field(description="Filed files not yet in a package.")
    packages: list[PackageProgress]
    stages: dict[str, int] = Field(description="Packages per stage.")
    archived: bool = Field(description="Every file is in a package and every package is archived.")
    summary: str = Field(description="The line `ccat status` prints for it.")


# --- the app ---------------------------------------------------------------------------


class _FilingApi(FastAPI):
    def openapi(self) -> dict[str, Any]:
        """The generated schema, plus the request body's model, which the POST route documents but reads itself."""
        if self.openapi_schema is None:
            schema = super().openapi()
            manifest = FilingManifest.model_json_schema(ref_template="#/components/schemas/{model}")
            models = schema.setdefault("components", {}).setdefault("schemas", {})
            models.update(manifest.pop("$defs", {}))
            models["FilingManifest"] = manifest
        return self.openapi_schema


app = _FilingApi(
    title="CCAT filing API",
    version="1",
    summary="Instruments file observations and follow their progress.",
    description=(
        "Authenticate as on Airflow's REST API: a token from `POST /auth/token` as a bearer token. Filing needs "
        f"`can_create` on `{OBSERVATIONS_RESOURCE}`, reading `can_read` (the `instrument` role). A filing is "
        "checked at once short of its files, then its files are checked on the SOURCE host: all or nothing."
    ),
    # Operation ids (what generated clients name their methods after) are the route functions' names.
    generate_unique_id_function=lambda route: route.name,
)


class OpsDbUnavailable(RuntimeError):
    """ops-db cannot be reached or is not configured."""


@app.exception_handler(OpsDbUnavailable)
async def _ops_db_unavailable(request: Request, error: OpsDbUnavailable) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


@app.exception_handler(RequestValidationError)
async def _invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
    """A bad path or query parameter, as a Refusal like every 422 of this API."""
    problems = [f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()]
    return _refusal("invalid parameters", problems)


def _refusal(detail: str, problems: list[str], request_id: int | None = None) -> JSONResponse:
    body = Refusal(detail=detail, problems=problems, request=request_id)
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


def _allowed(method: Literal["GET", "POST"]) -> Callable[..., BaseUser]:
    """A dependency: the caller (401 if none), allowed ``method`` on the observations resource (else 403)."""

    def check(user: Annotated[BaseUser, Depends(get_user)]) -> BaseUser:
        manager = get_auth_manager()
        if not manager.is_authorized_custom_view(method=method, resource_name=OBSERVATIONS_RESOURCE, user=user):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"Forbidden: {method} on {OBSERVATIONS_RESOURCE}")
        return user

    return check


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Message, "description": description}
    for code, description in (
        (401, "Not authenticated"),
        (403, f"Not allowed on {OBSERVATIONS_RESOURCE}"),
        (503, "ops-db unavailable"),
    )
}
BAD_ID: dict[int | str, dict[str, Any]] = {422: {"model": Refusal, "description": "Not an id"}}
MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FilingManifest"}}},
    }
}


@app.post(
    "/observations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=FilingRequest,
    summary="File an observation",
    responses={
        201: {"model": FilingRequest, "description": "Filed (with `wait`): its files were checked and recorded"},
        202: {"description": "Recorded as a filing request; its files are checked on the SOURCE host"},
        413: {"model": Message, "description": f"Manifest larger than {MAX_MANIFEST_BYTES} bytes"},
        422: {"model": Refusal, "description": "Refused, nothing recorded: every problem, naming the key or file"},
        **ERRORS,
    },
    openapi_extra=MANIFEST_BODY,
)
async def file_observation(
    request: Request,
    user: Annotated[BaseUser, Depends(_allowed("POST"))],
    wait: Annotated[
        int, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the SOURCE host's decision (201 or 422).")
    ] = 0,
) -> JSONResponse:
    """Check the manifest as `ccat file` does, record it, and have its files checked where they are.

    All or nothing: the observation and every file are recorded, or nothing is.
    """
    body = await _manifest_bytes(request)
    submitted = await run_in_threadpool(_submit, body, user.get_name())
    if isinstance(submitted, JSONResponse):
        return submitted  # refused at once
    request_id, waiting = submitted
    # Waiting costs no thread: the api-server's threads serve Airflow's own routes too.
    deadline = time.monotonic() + wait
    while (state := await run_in_threadpool(_request_state, request_id)).state == "PENDING":
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_SECONDS)
    if state.state == "REFUSED":
        return _refusal("filing refused on the SOURCE host, nothing recorded", state.problems, request_id)
    answer = _filing_request(state, waiting)
    if state.state == "ACCEPTED":
        where = request.url_for("observation_progress", observation_id=answer.executed_obs_unit_id)
        code = status.HTTP_201_CREATED
    else:
        where = request.url_for("filing_request", request_id=request_id)
        code = status.HTTP_202_ACCEPTED
    return JSONResponse(answer.model_dump(mode="json"), status_code=code, headers={"Location": str(where)})


@app.get(
    "/filings/{request_id}",
    response_model=FilingRequest,
    summary="A filing request and its outcome",
    responses={404: {"model": Message, "description": "No such filing request"}, **ERRORS, **BAD_ID},
)
def filing_request(
    request_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    user: Annotated[BaseUser, Depends(_allowed("GET"))],
) -> FilingRequest:
    """PENDING until a worker of its SOURCE location checked its files; then ACCEPTED or REFUSED (with why)."""
    with _ops_db() as db:
        state = filing_requests.request_state(db, request_id)
    if state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no filing request {request_id}")
    return _filing_request(state, _dag_waiting() if state.state == "PENDING" else None)


@app.get(
    "/observations/{observation_id}",
    response_model=ObservationProgress,
    summary="An observation's progress",
    responses={404: {"model": Message, "description": "No such observation"}, **ERRORS, **BAD_ID},
)
def observation_progress(
    observation_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    user: Annotated[BaseUser, Depends(_allowed("GET"))],
) -> ObservationProgress:
    """Its packages per stage, archived or not: what `ccat status` shows for it."""
    with _ops_db() as db:
        summary = db.fetch_one("observation_summary", id=observation_id)
        if summary is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no observation {observation_id}")
        packages = db.fetch_all("observation_progress_of", id=observation_id)
    stages = Counter(package.stage for package in packages)
    lines = observation_lines(packages, datetime.now(UTC))
    line = lines[0] if lines else f"observation {summary.id} ({summary.obs_unit} {summary.start_time:%Y-%m-%d %H:%M})"
    if summary.unpackaged_files:
        line += f"{', ' if packages else ': '}{summary.unpackaged_files} files waiting for packaging"
    return ObservationProgress(
        id=summary.id,
        program=summary.program,
        obs_unit=summary.obs_unit,
        start_time=summary.start_time,
        end_time=summary.end_time,
        files=summary.files,
        size_bytes=summary.size_bytes,
        files_waiting_for_packaging=summary.unpackaged_files,
        packages=[PackageProgress(name=p.package, stage=p.stage, since=p.since) for p in packages],
        stages=dict(stages),
        archived=bool(packages) and stages["archived"] == len(packages) and not summary.unpackaged_files,
        summary=line,
    )


# --- helpers ---------------------------------------------------------------------------


async def _manifest_bytes(request: Request) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MANIFEST_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _submit(body: bytes, user: str) -> tuple[int, str | None] | JSONResponse:
    """Check and record a manifest and start its filing: its request id, and why it may wait; or the 422 refusal."""
    try:
        document = filing.json_document(_manifest_text(body), MANIFEST_SOURCE)
        with _ops_db() as db:
            submitted = filing_requests.submit(db, document, requested_by=user)
    except filing.FilingError as refusal:
        return _refusal("filing refused, nothing recorded", refusal.problems)
    log.info("filing request %d of %s for %s recorded", submitted.id, user, submitted.location)
    return submitted.id, _start_filing(submitted.location, submitted.id, user)


def _manifest_text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = body.count(b"\n", 0, error.start) + 1
        problem = f"{MANIFEST_SOURCE}: line {line}: not UTF-8 text (byte 0x{body[error.start]:02x})"
        raise filing.FilingError([problem]) from None


def _request_state(request_id: int) -> RequestState:
    with _ops_db() as db:
        state = filing_requests.request_state(db, request_id)
    if state is None:  # requests are never deleted
        raise RuntimeError(f"filing request {request_id} vanished from ops-db")
    return state


def _filing_request(state: RequestState, waiting: str | None) -> FilingRequest:
    row = state.request
    return FilingRequest(
        id=row.id,
        state=state.state,
        location=row.location,
        queue=state.queue,
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        finished_at=row.finished_at,
        executed_obs_unit_id=row.executed_obs_unit_id,
        new_files=row.new_files,
        already_filed=row.already_filed,
        problems=state.problems,
        waiting=waiting,
    )


def _ops_db() -> OpsDb:
    """A new connection to ops-db, through Airflow's connection ``ccat_ops_db`` (as the DAGs reach it)."""
    conn_id = OpsDbHook.default_conn_name
    try:
        return OpsDb.connect(Connection.get_connection_from_secrets(conn_id).get_uri())
    except (AirflowNotFoundException, OpsDbConfigError, psycopg.OperationalError) as error:
        log.error("ops-db (connection %s) unavailable: %s", conn_id, error)
        raise OpsDbUnavailable(f"ops-db is unavailable (Airflow connection {conn_id})") from error


def _start_filing(location: str, request_id: int, user: str) -> str | None:
    """Start a ccat_filing run for ``location`` unless one is waiting to start (it files this request too).

    Return why the request may wait longer than a run takes, or None.
    """
    prefix = f"filing__{location.replace('/', '_')}__"
    waiting_runs = DagRun.find(dag_id=FILING_DAG_ID, state=DagRunState.QUEUED)
    if not any(run.run_id.startswith(prefix) for run in waiting_runs):
        try:
            trigger_dag(
                FILING_DAG_ID,
                run_id=f"{prefix}{datetime.now(UTC).isoformat()}_request_{request_id}",
                conf={"location": location},
                triggered_by=DagRunTriggeredByType.REST_API,
                triggering_user_name=user,
            )
        except (DagNotFound, DagRunAlreadyExists, ValueError) as error:
            log.warning("filing request %d: %s not started: %s", request_id, FILING_DAG_ID, error)
            return f"{FILING_DAG_ID} could not be started ({error}); its next hourly run files the request"
    return _dag_waiting()


def _dag_waiting() -> str | None:
    """Why no ccat_filing run may start soon (paused, not loaded), or None."""
    dag = DagModel.get_current(FILING_DAG_ID)
    if dag is None or dag.is_stale:
        return f"{FILING_DAG_ID} is not loaded in Airflow: requests wait until it is"
    if dag.has_import_errors:
        return f"{FILING_DAG_ID} has an import error (its topology file?): requests wait until it is fixed"
    if dag.is_paused:
        return f"{FILING_DAG_ID} is paused: requests wait until an operator unpauses it"
    return None
