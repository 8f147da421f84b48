"""Every named query's result columns match its typed record, checked against the migrated schema.

Each query is prepared (never run) in a fresh database and described by PostgreSQL: the
names and types of its columns must be the fields of its record in
``ccat_operators.rows.QUERY_RECORDS``. A column renamed or retyped in SQL fails here,
not on a worker.
"""

from __future__ import annotations

import re
import types
import typing
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest
from psycopg import sql

from ccat_operators import rows, states
from ccat_operators.opsdb import OpsDb, load_query
from tests.conftest import REPO

QUERIES = sorted(p.stem for p in (REPO / "include" / "sql" / "queries").glob("*.sql"))

#: PostgreSQL type -> the Python type psycopg gives (our enums arrive as text).
PYTHON_TYPES = {
    "int2": int, "int4": int, "int8": int, "numeric": Decimal, "float8": float, "bool": bool,
    "text": str, "name": str, "uuid": UUID, "jsonb": dict, "timestamptz": datetime, "interval": timedelta,
    "status": str, "physical_copy_status": str, "location_type": str, "storage_type": str, "route_type": str,
    "transfer_method": str,
}  # fmt: skip

#: Template queries and the identifiers they run with.
TEMPLATES: dict[str, list[dict[str, str]]] = {
    "move_status": [
        {"table": c.table, "column": c.column, "changed_at": c.changed_at, "reason": c.reason}
        for c in states.COLUMNS
        if c.lease
    ],
    "status_of": [{"table": c.table, "column": c.column} for c in states.COLUMNS if c.lease],
    "find_stuck_in_progress": [
        {"table": c.table, "column": c.column, "changed_at": c.changed_at} for c in states.WORK_COLUMNS
    ],
    "create_database": [{"name": "x", "template": "template1"}],
    "drop_database": [{"name": "x"}],
}


def describe(db: OpsDb, text: str) -> list[tuple[str, str]]:
    """``(name, PostgreSQL type)`` of each result column of a query, without running it."""
    numbers: dict[str, int] = {}

    def placeholder(match: re.Match) -> str:
        numbers.setdefault(match[1], len(numbers) + 1)
        return f"${numbers[match[1]]}"

    prepared = re.sub(r"%\((\w+)\)s", placeholder, text).replace("%%", "%")
    pgconn = db.conn.pgconn
    pgconn.prepare(b"described", prepared.encode(), None)
    try:
        result = pgconn.describe_prepared(b"described")
        assert not result.error_message, result.error_message.decode()
        oids = [result.ftype(i) for i in range(result.nfields)]
        names = [result.fname(i).decode() for i in range(result.nfields)]
    finally:
        db.conn.execute("DEALLOCATE described")
    type_names = {row["oid"]: row["typname"] for row in db.conn.execute(
        "SELECT oid, typname FROM pg_type WHERE oid = ANY(%s)", (oids,)).fetchall()}  # fmt: skip
    return [(name, type_names[oid]) for name, oid in zip(names, oids, strict=True)]


def texts(db: OpsDb, name: str) -> list[str]:
    if name not in TEMPLATES:
        return [load_query(name)]
    return [
        sql.SQL(load_query(name)).format(**{k: sql.Identifier(v) for k, v in ids.items()}).as_string(db.conn)
        for ids in TEMPLATES[name]
    ]


def base_type(annotation) -> type:
    """``int | None`` -> int; ``dict[str, Any]`` -> dict."""
    if isinstance(annotation, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) or annotation


def test_every_template_query_is_listed() -> None:
    templates = {n for n in QUERIES if re.search(r"\{\w+\}", load_query(n))}
    assert templates == set(TEMPLATES)


def test_every_record_belongs_to_a_query() -> None:
    assert set(rows.QUERY_RECORDS) <= set(QUERIES), sorted(set(rows.QUERY_RECORDS) - set(QUERIES))


@pytest.mark.parametrize("name", QUERIES)
def test_query_columns_match_its_record(ops_db: OpsDb, name: str) -> None:
    for text in texts(ops_db, name):
        columns = describe(ops_db, text)
        record = rows.QUERY_RECORDS.get(name)
        if record is None:
            assert len(columns) <= 1, f"{name} returns {len(columns)} columns: give it a record in rows.py"
            continue
        fields = typing.get_type_hints(record)
        assert [c for c, _ in columns] == list(fields), f"{name}: columns differ from {record.__name__}"
        for column, pg_type in columns:
            assert pg_type in PYTHON_TYPES, f"{name}.{column}: no Python type known for {pg_type}"
            expected, declared = PYTHON_TYPES[pg_type], base_type(fields[column])
            assert declared is expected, f"{name}.{column} is {pg_type} ({expected.__name__}), record says {declared}"
