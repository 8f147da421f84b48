"""Triggers that wait on ops-db in the triggerer, with psycopg's async API (no worker slot held).

:class:`ObservationsArchivedTrigger` polls whether observations are archived (the wait of
:class:`ccat_operators.sensors.ops_db.ObservationsArchivedSensor`). What "archived" means,
and how what is missing is told, is :class:`ArchiveState`: the sensor's first check (on a
worker, through :class:`~ccat_operators.opsdb.OpsDb`) and the trigger's polls read the same
named query, ``observations_archive_state``, into the same record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.triggers.base import BaseTrigger, TriggerEvent
from psycopg.rows import class_row

from ccat_operators.hooks.ops_db import OpsDbHook
from ccat_operators.opsdb import connect_timeout, load_query
from ccat_operators.rows import ObservationArchiveRow

if TYPE_CHECKING:
    from ccat_operators.opsdb import OpsDb

#: The named query both the sensor and the trigger read.
ARCHIVE_STATE_QUERY = "observations_archive_state"
#: Package names shown per observation in what is missing (the query returns at most 5).
SHOWN_PACKAGES = 5


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class ArchiveState:
    """Where the requested observations stand, as ``observations_archive_state`` found them.

    An observation is archived when it has filed files and every one of them is in a
    package with a verified copy in at least ``min_archives`` active long-term archives.
    An observation with no files yet, or unknown to ops-db, is not.
    """

    observation_ids: tuple[int, ...]
    min_archives: int
    rows: tuple[ObservationArchiveRow, ...]

    @classmethod
    def of(cls, observation_ids: Iterable[int], min_archives: int, rows: Iterable[ObservationArchiveRow]):
        return cls(tuple(observation_ids), min_archives, tuple(rows))

    @staticmethod
    def row_archived(row: ObservationArchiveRow) -> bool:
        return row.files > 0 and row.unpackaged_files == 0 and row.archived_packages == row.packages

    @property
    def unknown(self) -> list[int]:
        """Requested ids ops-db does not know."""
        known = {row.observation for row in self.rows}
        return [i for i in self.observation_ids if i not in known]

    @property
    def active_archives(self) -> int:
        return self.rows[0].active_archives if self.rows else 0

    @property
    def archived(self) -> bool:
        return not self.unknown and all(self.row_archived(row) for row in self.rows)

    def summary(self) -> dict[str, Any]:
        """What was found, small enough for XCom and a trigger event."""
        return {
            "observations": list(self.observation_ids),
            "files": sum(row.files for row in self.rows),
            "packages": sum(row.packages for row in self.rows),
            "min_archives": self.min_archives,
        }

    def waiting_reason(self) -> str:
        """One line: ``waiting for 3 packages to be archived`` (and files to be packaged, observations to be filed)."""
        packages = sum(row.packages - row.archived_packages for row in self.rows)
        unpackaged = sum(row.unpackaged_files for row in self.rows)
        empty = [row.observation for row in self.rows if row.files == 0] + self.unknown
        parts = []
        if packages:
            where = f" in {self.min_archives} archives" if self.min_archives > 1 else ""
            parts.append(f"{_plural(packages, 'package')} to be archived{where}")
        if unpackaged:
            parts.append(f"{_plural(unpackaged, 'file')} to be packaged and archived")
        if empty:
            parts.append(f"files of {_plural(len(empty), 'observation')} ({', '.join(map(str, empty))}) to be filed")
        return "waiting for " + " and ".join(parts) if parts else "archived"

    def missing(self) -> str:
        """Per observation not archived yet, what it still lacks (for a timeout's message)."""
        told = [f"observation {i}: unknown to ops-db" for i in self.unknown]
        for row in self.rows:
            if self.row_archived(row):
                continue
            if row.files == 0:
                told.append(f"observation {row.observation}: no files filed")
                continue
            parts = []
            waiting = row.packages - row.archived_packages
            if waiting:
                more = ", ..." if waiting > SHOWN_PACKAGES else ""
                archives = _plural(self.min_archives, "archive")
                parts.append(
                    f"{waiting} of {row.packages} packages not in {archives} yet ({row.waiting_packages}{more})"
                )
            if row.unpackaged_files:
                parts.append(f"{row.unpackaged_files} of {row.files} files not packaged yet")
            told.append(f"observation {row.observation}: {', '.join(parts)}")
        return "; ".join(told)


def archive_state(db: OpsDb, observation_ids: Iterable[int], min_archives: int) -> ArchiveState:
    """Check once, synchronously (the sensor, before it defers)."""
    ids = list(observation_ids)
    rows = db.fetch_all(ARCHIVE_STATE_QUERY, observation_ids=ids, min_archives=min_archives)
    return ArchiveState.of(ids, min_archives, rows)


async def connection_kwargs(conn_id: str) -> dict[str, Any]:
    """libpq keywords for the Airflow connection ``conn_id``, resolved without blocking the event loop.

    Built as :class:`~airflow.providers.postgres.hooks.postgres.PostgresHook` builds them
    (host, port, login, password, schema as the database, and the extras libpq knows).
    Raises AirflowNotFoundException when the connection is not defined.
    """
    connection = await OpsDbHook.aget_connection(conn_id)
    extra = await connection.aextra_dejson()
    if extra.get("iam"):
        raise ValueError(f"connection {conn_id!r}: IAM authentication is not supported by the ops-db trigger")
    kwargs: dict[str, Any] = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
        "connect_timeout": connect_timeout(),
    }
    kwargs.update({key: value for key, value in extra.items() if key not in OpsDbHook.ignored_extra_options})
    return {key: value for key, value in kwargs.items() if value not in (None, "")}


class ObservationsArchivedTrigger(BaseTrigger):
    """Poll ops-db until the observations are archived, or until ``deadline``.

    Yields one event: ``{"status": "archived", "summary": {...}}``; ``{"status": "timeout",
    "missing": "...", "reason": "...", "last_error": ...}`` once ``deadline`` passed; or
    ``{"status": "error", "message": "..."}`` when it cannot ask at all (the connection is
    not defined, ops-db refuses the query). ops-db being unreachable for a while is waited
    out: each poll opens its own short connection, and the error is logged and reported in
    the timeout event if it lasts.

    :param observation_ids: ExecutedObsUnit ids.
    :param min_archives: active long-term archives each package needs a verified copy in.
    :param poll_interval: seconds between polls.
    :param deadline: when to give up (ISO 8601 with a time zone): absolute, so a trigger
        moved to another triggerer keeps its deadline.
    :param ccat_ops_db_conn_id: the Airflow connection to ops-db, resolved in the triggerer
        (no credentials are serialized).
    """

    def __init__(
        self,
        *,
        observation_ids: Iterable[int],
        min_archives: int,
        poll_interval: float,
        deadline: str | datetime,
        ccat_ops_db_conn_id: str,
    ) -> None:
        super().__init__()
        self.observation_ids = [int(i) for i in observation_ids]
        self.min_archives = int(min_archives)
        self.poll_interval = float(poll_interval)
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        self.deadline = deadline if isinstance(deadline, datetime) else datetime.fromisoformat(deadline)
        if self.deadline.tzinfo is None:
            raise ValueError(f"deadline {deadline!r} has no time zone")
        self.ccat_ops_db_conn_id = ccat_ops_db_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "observation_ids": list(self.observation_ids),
                "min_archives": self.min_archives,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline.isoformat(),
                "ccat_ops_db_conn_id": self.ccat_ops_db_conn_id,
            },
        )

    async def poll(self, query: str, kwargs: dict[str, Any]) -> ArchiveState:
        """Ask ops-db once, on a connection of its own."""
        async with await psycopg.AsyncConnection.connect(autocommit=True, **kwargs) as conn:
            cursor = conn.cursor(row_factory=class_row(ObservationArchiveRow))
            await cursor.execute(query, {"observation_ids": self.observation_ids, "min_archives": self.min_archives})
            return ArchiveState.of(self.observation_ids, self.min_archives, await cursor.fetchall())

    async def run(self) -> AsyncIterator[TriggerEvent]:
        query = await asyncio.to_thread(load_query, ARCHIVE_STATE_QUERY)
        try:
            kwargs = await connection_kwargs(self.ccat_ops_db_conn_id)
        except (AirflowNotFoundException, ValueError) as error:  # not defined, or not usable: do not wait
            message = f"ops-db connection {self.ccat_ops_db_conn_id!r}: {error}"
            yield TriggerEvent({"status": "error", "message": message})
            return
        state: ArchiveState | None = None
        last_error: str | None = None
        told = ""
        while True:
            try:
                state, last_error = await self.poll(query, kwargs), None
            except psycopg.OperationalError as error:  # unreachable, restarting: waited out until the deadline
                last_error = " ".join(str(error).split())
                self.log.warning("ops-db did not answer, asking again in %.0f s: %s", self.poll_interval, last_error)
            except psycopg.Error as error:  # the query itself is refused: waiting will not help
                yield TriggerEvent({"status": "error", "message": f"ops-db refused the query: {error}"})
                return
            if last_error is None:
                if state.archived:
                    self.log.info("observations %s are archived", self.observation_ids)
                    yield TriggerEvent({"status": "archived", "summary": state.summary()})
                    return
                if state.waiting_reason() != told:
                    told = state.waiting_reason()
                    self.log.info("observations %s: %s", self.observation_ids, told)
            remaining = (self.deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "missing": state.missing() if state else "unknown: ops-db never answered",
                        "reason": state.waiting_reason() if state else "",
                        "last_error": last_error,
                    }
                )
                return
            await asyncio.sleep(min(self.poll_interval, remaining))
