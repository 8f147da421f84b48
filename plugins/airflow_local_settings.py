"""Airflow's local settings hook for this project: the processes that fork our code preload it.

Airflow imports ``airflow_local_settings`` when any of its processes starts (from
``$AIRFLOW_HOME/config``, then the plugins folder: a deployment's own file in
``config/`` wins, and should then do what this one does). The scheduler (its
LocalExecutor forks the task processes), a Celery worker (its pool processes run them)
and the dag-processor (it forks a process per DAG file parse, every 30 s) import our
modules once here, so no task or parse imports them again (see
:mod:`ccat_operators.preload`). A new version of ``ccat_operators`` is therefore seen
after these processes restart, as with any Airflow plugin. Other processes - the CLI,
the api-server, the triggerer - are left as they are. Nothing here changes a setting.
"""

import os
import sys

__all__: list[str] = []  # Airflow copies every public name of this module into its settings: none

#: ``airflow <command>`` of the processes that fork task or DAG parsing processes.
_FORKS_TASKS = {"scheduler", "celery", "dag-processor"}

if os.path.basename(sys.argv[0]) == "airflow" and sys.argv[1:2] and sys.argv[1] in _FORKS_TASKS:
    from ccat_operators.preload import preload

    preload()
