"""Named-query access to ops-db over a psycopg 3 connection.

All SQL lives in ``include/sql/queries/<name>.sql`` and is bound with ``%(param)s``
placeholders. A few queries are templates over identifiers (``{table}``, ``{column}``:
the state machine's moves, whose tables and columns come from ``states.COLUMNS``, never
from input); they are composed with ``psycopg.sql.Identifier``, never with string
formatting of values. State changes are not made here: see :mod:`ccat_operators.states`.

``OpsDb`` is what the CLI, the filing API and the tests use directly; inside Airflow the
``OpsDbHook`` hands out an ``OpsDb`` built on its connection.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, timeout_from_conninfo
from psycopg.rows import class_row, dict_row, tuple_row

from ccat_operators.paths import sql_dir
from ccat_operators.rows import QUERY_RECORDS

#: Environment variables that may hold the ops-db URL, in order of preference.
DSN_VARIABLES = ("CCAT_OPS_DB_URL", "AIRFLOW_CONN_CCAT_OPS_DB")

#: URL prefixes libpq accepts; Airflow writes a postgres connection URI with either.
URL_SCHEMES = ("postgresql://", "postgres://")

#: Environment variable with the seconds to wait for ops-db to answer a connection.
CONNECT_TIMEOUT_VARIABLE = "CCAT_DB_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 10

Row = dict[str, Any]


class OpsDbConfigError(ValueError):
    """The ops-db URL or connect timeout is malformed; no connection was tried."""


class UnknownQueryError(LookupError):
    """No ``include/sql/queries/<name>.sql`` exists."""


@functools.cache
def load_query(name: str) -> str:
    """Return the text of the named query, read once per process."""
    path = sql_dir() / "queries" / f"{name}.sql"
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UnknownQueryError(f"no query named {name!r} (looked for {path})") from None


def compose_query(query: str, /, **identifiers: str) -> sql.Composed:
    """Return a template query with its ``{placeholders}`` bound to quoted identifiers."""
    return sql.SQL(load_query(query)).format(**{k: sql.Identifier(v) for k, v in identifiers.items()})


def dsn_from_environment() -> str:
    """Return the ops-db URL from ``CCAT_OPS_DB_URL`` or ``AIRFLOW_CONN_CCAT_OPS_DB``, checked by :func:`check_url`."""
    for variable in DSN_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return check_url(value, source=f"${variable}")
    raise LookupError(
        "ops-db is not configured: set CCAT_OPS_DB_URL (or AIRFLOW_CONN_CCAT_OPS_DB) "
        "to a postgresql:// URL, or pass --db"
    )


def check_url(url: str, source: str = "ops-db URL") -> str:
    """Return ``url`` if it is a ``postgresql://`` or ``postgres://`` URL libpq can parse.

    libpq's own ``key=value`` connection strings (``host=... dbname=...``, what psycopg
    reports as a connection's ``dsn``) are accepted too. Raises OpsDbConfigError naming
    ``source`` otherwise, before any connection is tried.
    """
    keywords = "://" not in url and re.match(r"^\s*[a-z_]+\s*=", url) is not None
    if not url.startswith(URL_SCHEMES) and not keywords:
        raise OpsDbConfigError(f"{source}: expected a postgresql://user@host:port/dbname URL, got {_described(url)}")
    try:
        timeout_from_conninfo(conninfo_to_dict(url))  # parses the URL and its connect_timeout
    except psycopg.ProgrammingError as error:
        raise OpsDbConfigError(f"{source}: {_redacted(str(error).strip())}") from None
    return url


def connect_timeout() -> int:
    """Seconds to wait for ops-db to answer a connection: ``$CCAT_DB_CONNECT_TIMEOUT``, default 10."""
    value = os.environ.get(CONNECT_TIMEOUT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_CONNECT_TIMEOUT
    if not value.isdecimal() or int(value) < 1:
        raise OpsDbConfigError(f"${CONNECT_TIMEOUT_VARIABLE}: expected a whole number of seconds >= 1, got {value!r}")
    return int(value)


def _described(url: str) -> str:
    """How a refused URL is shown: its scheme, never a password."""
    if "://" in url:
        return f"a {url.partition('://')[0]}:// URL"
    if "=" in url:
        return "a key=value connection string"
    return repr(url[:60])


def _redacted(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***``."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


class OpsDb:
    """A psycopg connection plus the project's named queries.

    The connection runs in autocommit mode: a single named query is its own
    transaction, and :meth:`transaction` groups several into one. Rows of named
    queries come back as their typed records; ``conn`` itself (for tests and ad-hoc
    SQL) returns dicts.
    """

    def __init__(self, conn: psycopg.Connection) -> None:
        conn.autocommit = True
        conn.row_factory = dict_row
        self.conn = conn

    @classmethod
    def connect(cls, dsn: str | None = None, **kwargs: Any) -> OpsDb:
        """Open a new connection to ``dsn`` (default: from the environment).

        The URL is checked first (:func:`check_url`; OpsDbConfigError, nothing tried).
        A server that accepts the connection but does not answer is given up on after
        ``$CCAT_DB_CONNECT_TIMEOUT`` seconds (default 10; libpq waits at least 2 s, per
        address of the host) with ``psycopg.errors.ConnectionTimeout``; a
        ``connect_timeout`` in the URL or in ``kwargs`` wins over the variable.
        """
        url = check_url(dsn) if dsn else dsn_from_environment()
        params = conninfo_to_dict(url)
        if "connect_timeout" not in params and "connect_timeout" not in kwargs:
            kwargs["connect_timeout"] = connect_timeout()
        try:
            return cls(psycopg.connect(url, **kwargs))
        except psycopg.errors.ConnectionTimeout as error:
            waited = timeout_from_conninfo(
                {"connect_timeout": kwargs.get("connect_timeout", params.get("connect_timeout"))}
            )
            raise psycopg.errors.ConnectionTimeout(
                f"connection to {params.get('host') or 'localhost'} port {params.get('port') or 5432} timed out: "
                f"no answer within {waited} s (${CONNECT_TIMEOUT_VARIABLE} sets the wait)"
            ) from error

    def close(self) -> None:
        """Close the underlying connection."""
        self.conn.close()

    def __enter__(self) -> OpsDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[OpsDb]:
        """Run the enclosed queries in one transaction (nested blocks are savepoints)."""
        with self.conn.transaction():
            yield self

    def _cursor(self, query: str, identifiers: Mapping[str, str] | None, params: Mapping[str, Any],
                row_factory: Any) -> psycopg.Cursor:  # fmt: skip
        text = compose_query(query, **identifiers) if identifiers else load_query(query)
        return self.conn.cursor(row_factory=row_factory).execute(text, params)

    @staticmethod
    def _record(query: str) -> Any:
        record = QUERY_RECORDS.get(query)
        if record is None:
            raise UnknownQueryError(
                f"query {query!r} has no record in rows.QUERY_RECORDS; read one column with fetch_value or fetch_column"
            )
        return class_row(record)

    def fetch_all(self, query: str, /, *, identifiers: Mapping[str, str] | None = None, **params: Any) -> list[Any]:
        """Run a named query and return every row as its record (:mod:`ccat_operators.rows`).

        ``identifiers`` fill a template query's ``{names}`` (quoted, never values).
        """
        return self._cursor(query, identifiers, params, self._record(query)).fetchall()

    def fetch_one(self, query: str, /, *, identifiers: Mapping[str, str] | None = None, **params: Any) -> Any:
        """Run a named query and return its first row as its record, or None."""
        return self._cursor(query, identifiers, params, self._record(query)).fetchone()

    def fetch_value(self, query: str, /, *, identifiers: Mapping[str, str] | None = None, **params: Any) -> Any:
        """Run a named query and return the first column of its first row, or None."""
        row = self._cursor(query, identifiers, params, tuple_row).fetchone()
        return None if row is None else row[0]

    def fetch_column(self, query: str, /, *, identifiers: Mapping[str, str] | None = None, **params: Any) -> list[Any]:
        """Run a named query and return the first column of every row."""
        return [row[0] for row in self._cursor(query, identifiers, params, tuple_row).fetchall()]

    def execute(self, query: str, /, *, identifiers: Mapping[str, str] | None = None, **params: Any) -> int:
        """Run a named statement and return the number of rows it touched."""
        return self._cursor(query, identifiers, params, tuple_row).rowcount

    def execute_script(self, text: str) -> None:
        """Run trusted multi-statement SQL text (migrations) as-is."""
        self.conn.execute(text)

    @contextmanager
    def lease(self, kind: str, row_id: int) -> Iterator[bool]:
        """Hold the lease on one work item for the block; yields False if another holds it.

        A lease is a session-level advisory lock: exclusive while this connection lives,
        released at the end of the block or by PostgreSQL if the worker dies. An item
        left SCHEDULED or IN_PROGRESS whose lease is free has no live worker.
        """
        acquired = bool(self.fetch_value("try_lease", kind=kind, id=row_id))
        try:
            yield acquired
        finally:
            if acquired:
                self.fetch_value("release_lease", kind=kind, id=row_id)
