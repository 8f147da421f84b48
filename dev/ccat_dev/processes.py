"""Child server processes of the development tools (Airflow, S3): free ports, stopping them cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterable


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_groups(processes: Iterable[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM each process's group (started with ``start_new_session``), then SIGKILL what lingers."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
