"""Airflow's local settings hook for this project: the processes that fork tasks preload their modules.

Airflow imports ``airflow_local_settings`` when any of its processes starts (from
``$AIRFLOW_HOME/config``, then the plugins folder: a deployment's own file in
``config/`` wins, and should then do what this one does). The scheduler (its
LocalExecutor forks the task processes) and a Celery worker (its pool processes run
them) import the task modules once here, so no task imports them again (see
:mod:`ccat_operators.preload`). Other processes - the CLI, the api-server, the
dag-processor - are left as they are. Nothing here changes a setting.
"""

import os
import sys

__all__: list[str] = []  # Airflow copies every public name of this module into its settings: none

#: ``airflow <command>`` of the processes that fork task processes.
_FORKS_TASKS = {"scheduler", "celery"}

if os.path.basename(sys.argv[0]) == "airflow" and sys.argv[1:2] and sys.argv[1] in _FORKS_TASKS:
    from ccat_operators.preload import preload

    preload()
