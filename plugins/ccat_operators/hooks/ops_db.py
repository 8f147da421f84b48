"""Airflow hook for ops-db, the pipeline's single source of truth."""

from __future__ import annotations

from functools import cached_property

from airflow.providers.postgres.hooks.postgres import PostgresHook

from ccat_operators.opsdb import OpsDb


class OpsDbHook(PostgresHook):
    """PostgresHook for ops-db exposing the named queries in ``include/sql/queries/``.

    State changes go through :mod:`ccat_operators.states` (guarded moves, checked by
    ops-db itself) and work is claimed with ``FOR UPDATE SKIP LOCKED``, so a retried or
    cleared task, or two overlapping runs, never corrupt state.

    :param ccat_ops_db_conn_id: Airflow connection to ops-db (default ``ccat_ops_db``).
    """

    conn_name_attr = "ccat_ops_db_conn_id"
    default_conn_name = "ccat_ops_db"
    conn_type = "postgres"
    hook_name = "CCAT ops-db"

    @cached_property
    def ops_db(self) -> OpsDb:
        """An autocommit :class:`OpsDb` on a connection owned by this hook."""
        return OpsDb(self.get_conn())
