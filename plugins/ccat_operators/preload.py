"""Import, once per Airflow process, what every task and DAG parse of this project needs.

Airflow forks each task process from a long-lived one (the LocalExecutor's workers from
the scheduler, Celery's pool processes from their worker), and the dag-processor forks a
process per DAG file parse. A module that parent has imported costs the child nothing;
otherwise every child imports the operator modules, psycopg and the YAML parser anew,
about 0.3 CPU-seconds each on the build machine. ``plugins/airflow_local_settings.py``
calls :func:`preload` when a scheduler, a Celery worker or the dag-processor starts.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

log = logging.getLogger(__name__)

#: Packages whose every module is imported: what the DAG files and their tasks use.
PACKAGES = ("ccat_operators.operators", "ccat_operators.sensors", "ccat_operators.hooks")
MODULES = ("ccat_operators.dag_locations", "ccat_operators.assets", "ccat_operators.retries", "yaml", "psycopg")


def module_names() -> list[str]:
    """Every module :func:`preload` imports."""
    names = list(MODULES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names += [f"{package}.{info.name}" for info in pkgutil.iter_modules(path)]
    return names


def preload() -> list[str]:
    """Import :func:`module_names`; return them. A module that fails to import is logged, not fatal:
    its DAGs then fail to load and say why, while Airflow itself starts."""
    loaded = []
    for name in module_names():
        try:
            importlib.import_module(name)
        except ImportError as error:
            log.warning("not preloaded: %s (%s)", name, error)
            continue
        loaded.append(name)
    return loaded
