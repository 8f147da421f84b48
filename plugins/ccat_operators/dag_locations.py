"""The data locations a DAG lays out tasks for, drawn from the topology file at parse time.

A per-location DAG asks :func:`locations_serving` for the active locations whose type
serves its operation (the operation-location matrix, ``queues.OPERATIONS_BY_LOCATION_TYPE``)
and builds its own tasks for each, on the queue it is given. The topology file
(``$CCAT_TOPOLOGY``) is read and validated once per version of the file, not once per DAG
file; nothing here touches a database or the network.

An invalid topology file raises :class:`~ccat_operators.topology.TopologyError`, whose
message names the file and every key at fault. Raised at module level in a DAG file, it
becomes that file's import error in the Airflow UI. The README ("Airflow") says what
each DAG does then.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ccat_operators import topology
from ccat_operators.paths import default_topology_file
from ccat_operators.queues import OPERATIONS_BY_LOCATION_TYPE, Operation, queue_name
from ccat_operators.routing import transfer_site_pairs
from ccat_operators.topology import Location, Topology, TopologyError


class ServingLocation(NamedTuple):
    """An active location that serves an operation, and its queue for that operation."""

    location: Location
    queue: str


def locations_serving(operation: Operation) -> list[ServingLocation]:
    """Return ``(location, queue)`` for each active location whose type serves ``operation``.

    Locations come in the topology file's order; ``queue`` is the location's queue for
    ``operation`` (``{site}_{location}_{operation}``). Raises TopologyError when the
    topology file is invalid.
    """
    return [
        ServingLocation(location, queue_name(location.site, location.name, operation))
        for location in dag_topology().locations
        if location.active and operation in OPERATIONS_BY_LOCATION_TYPE.get(location.type, ())
    ]


def buffers_legs_leave(operation: Operation) -> list[ServingLocation]:
    """:func:`locations_serving` ``operation``, only at sites a transfer leg leaves from.

    Bundling and transfer have nothing to do anywhere else: a bundle made there could go
    nowhere (the legs are :func:`routing.transfer_site_pairs`, those ``ccat pools`` makes
    pools for), and every task instance costs the scheduler whether or not it finds work.
    """
    origins = {origin for origin, _ in transfer_site_pairs(dag_topology())}
    return [serving for serving in locations_serving(operation) if serving.location.site in origins]


def dag_topology() -> Topology:
    """Return the topology file DAGs lay out from, parsed once per version of the file.

    A version is the file's path, inode, size and modification time, together with the
    environment (the file may expand ``${VARIABLE}``). Raises TopologyError, with a note
    on what it stops, when the file is missing or invalid.
    """
    path = default_topology_file()
    version = _version(path)
    try:
        if version is None:
            return topology.load(path)  # no file to stat: load() raises, saying why
        return _load(path, version, tuple(sorted(os.environ.items())))
    except TopologyError as error:
        error.add_note(
            f"DAGs that lay out tasks per data location do not load until {path} is fixed "
            f"(check it with `ccat topology check {path}`)."
        )
        raise


def _version(path: Path) -> tuple[int, int, int] | None:
    """The file's inode, size and modification time, or None when it cannot be stat'ed."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _load(path: Path, version: tuple[int, int, int], environment: tuple[tuple[str, str], ...]) -> Topology:
    """``topology.load(path)``; the other arguments only key the cache (errors are not cached)."""
    return topology.load(path)
