"""Where the project's non-Python assets live (SQL, topology files).

The SQL and topology directories sit beside ``plugins/`` in the repository (and in an
Airflow deployment that mounts the repository). ``CCAT_INCLUDE_DIR`` overrides the
location for deployments that put them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def include_dir() -> Path:
    """Return the ``include/`` directory holding ``sql/`` and ``topology/``."""
    return Path(os.environ.get("CCAT_INCLUDE_DIR", REPO_ROOT / "include"))


def sql_dir() -> Path:
    """Return the directory holding ``migrations/`` and ``queries/``."""
    return include_dir() / "sql"


def default_topology_file() -> Path:
    """Return the topology file DAGs read when ``CCAT_TOPOLOGY`` is not set."""
    return Path(os.environ.get("CCAT_TOPOLOGY", include_dir() / "topology" / "ccat.yaml"))
