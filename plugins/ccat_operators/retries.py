"""How the stages' tasks retry: ``default_args`` for each DAG.

Production values sit in the DAG files. ``CCAT_TASK_RETRIES`` overrides the number of
retries of every stage at once: ``0`` makes a failure fail its task immediately, which a
development box or a test wants (an operator fixes the cause and clears the task).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any


def retry_policy(retries: int, delay: timedelta, *, backoff: bool = True,
                 max_delay: timedelta | None = None) -> dict[str, Any]:  # fmt: skip
    override = os.environ.get("CCAT_TASK_RETRIES")
    if override is not None:
        if not override.isdigit():
            raise ValueError(f"CCAT_TASK_RETRIES must be a whole number, not {override!r}")
        retries = int(override)
    policy: dict[str, Any] = {"retries": retries, "retry_delay": delay, "retry_exponential_backoff": backoff}
    if max_delay is not None:
        policy["max_retry_delay"] = max_delay
    return policy
