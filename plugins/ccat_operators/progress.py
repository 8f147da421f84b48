"""A progress bar on stderr for long CLI work (hashing files to file them, for one).

Shown when stderr is a terminal, or when asked for (``--progress``); otherwise the
callback does nothing, so logs and pipes stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn


@contextmanager
def byte_progress(description: str, total: int, shown: bool | None = None) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``; the bar runs from 0 to ``total`` bytes."""
    if shown is None:
        shown = sys.stderr.isatty()
    if not shown:
        yield lambda done: None
        return
    console = Console(stderr=True, force_terminal=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.advance(task, done)
