"""Airflow plugin: the CCAT HTTP filing API (``ccat_operators.api``) on the api-server, at ``/ccat/api/v1``.

Every Airflow process loads plugins (each task, for its macros), but only the api-server
serves FastAPI apps: elsewhere the app, and the api-server modules it imports (about a
second per process), are not loaded. The test is the one Airflow's own providers use
(edge3's plugin), the command the process runs.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.plugins_manager import AirflowPlugin

ON_API_SERVER = len(sys.argv) > 1 and sys.argv[1] == "api-server"


def _fastapi_apps() -> list[dict[str, Any]]:
    if not ON_API_SERVER:
        return []
    from ccat_operators.api import URL_PREFIX, app

    return [{"name": "CCAT filing API", "app": app, "url_prefix": URL_PREFIX}]


class CcatApiPlugin(AirflowPlugin):
    """The HTTP filing API (README, "Filing over HTTP")."""

    name = "ccat_api"
    fastapi_apps = _fastapi_apps()
