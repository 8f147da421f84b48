"""``ccat status``: what the pipeline is doing, for an operator at a terminal.

Counts per stage and state, the oldest waiting item, the archive transfers that need an
operator, and per-observation progress such as
``observation 12 (orion_map 2026-11-20 03:00): 3/4 packages archived, 1 transferring for 2 h``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

from ccat_operators.monitoring import health_summary
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import ProgressRow
from ccat_operators.states import Status

STATES = [s.value for s in Status]


def age(since: datetime, now: datetime) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def observation_lines(rows: list[ProgressRow], now: datetime) -> list[str]:
    by_observation: dict[int, list[ProgressRow]] = defaultdict(list)
    for row in rows:
        by_observation[row.observation].append(row)
    lines = []
    for observation, packages in by_observation.items():
        first = packages[0]
        stages = Counter(p.stage for p in packages)
        waiting = []
        for stage, count in stages.items():
            if stage == "archived":
                continue
            oldest = min(p.since for p in packages if p.stage == stage)
            waiting.append(f"{count} {stage} for {age(oldest, now)}")
        lines.append(
            f"observation {observation} ({first.obs_unit} {first.start_time:%Y-%m-%d %H:%M}): "
            f"{stages['archived']}/{len(packages)} packages archived" + (", " + ", ".join(waiting) if waiting else "")
        )
    return lines


def report(db: OpsDb, now: datetime | None = None, observations: int = 20) -> str:
    """The whole status report as text."""
    now = now or datetime.now(UTC)
    health = health_summary(db)
    width = max([len(stage) for stage in health.counts] + [5])
    lines = [f"{'stage':<{width}}  " + "  ".join(f"{state:>11}" for state in STATES)]
    for stage, states in sorted(health.counts.items()):
        lines.append(f"{stage:<{width}}  " + "  ".join(f"{states.get(state, 0):>11}" for state in STATES))
    if health.oldest_waiting:
        what, since = health.oldest_waiting
        lines.append(f"\noldest waiting: {what}, for {age(since, now)} (since {since:%Y-%m-%d %H:%M})")
    lines.append(f"needing intervention: {len(health.needs_intervention)}"
                 + (f" ({', '.join(health.needs_intervention)}; see `ccat archive needs-intervention`)"
                    if health.needs_intervention else ""))  # fmt: skip
    progress = observation_lines(db.fetch_all("observation_progress", limit=observations), now)
    lines.append("\nunfinished observations:" if progress else "\nevery observation is archived")
    lines.extend(f"  {line}" for line in progress)
    return "\n".join(lines)
