"""``ccat status``: what the pipeline is doing, for an operator at a terminal.

Counts per stage and state, the oldest waiting item, the work that needs an operator, and
per-observation progress such as
``observation 12 (orion_map 2026-11-20 03:00): 3/4 packages archived, 1 transferring for 2 h``.

Work needs an operator when its stage gave up on it: FAILED packages, bundles, transfers,
unpacks and staging jobs, and archive transfers FAILED or out of tries. Each is listed
with its stored reason, what to fix first (:data:`STAGES`), and the ``ccat retry`` command
that hands it back (:func:`ccat_operators.states.retry`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from ccat_operators import states
from ccat_operators.monitoring import health_summary
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import FindingRow, InterventionItemRow, ProgressRow, WaitingRow
from ccat_operators.states import Status, StatusColumn

STATES = [s.value for s in Status]

#: Items needing intervention listed per stage (the count covers them all).
SHOWN_PER_STAGE = 10
#: Longest reason shown, on one line.
REASON_WIDTH = 200


@dataclass(frozen=True)
class Stage:
    """A stage whose FAILED items an operator hands back with ``ccat retry <kind> ID``."""

    kind: str
    column: StatusColumn
    #: How one item is named (``package 12``), and many (``packages``).
    noun: str
    plural: str
    #: What to fix before retrying (the stored reason says which file, link or copy).
    fix: str
    #: What happens once it is PENDING again, and what waited on it.
    follows: str


#: Every stage an operator retries, in pipeline order.
STAGES: dict[str, Stage] = {
    stage.kind: stage
    for stage in (
        Stage(
            "package", states.PACKAGE, "package", "packages",
            "restore each raw file the reason names exactly as it was filed (or remove the link it names)",
            "the next ccat_packaging run writes it again; bundling, transfer and archiving follow",
        ),
        Stage(
            "bundle", states.BUNDLE, "bundle", "bundles",
            "restore the package tar in the buffer the reason names (or remove the link it names)",
            "the next ccat_bundling run writes it again; routing and the transfers follow",
        ),
        Stage(
            "transfer", states.TRANSFER, "transfer", "transfers",
            "repair what the reason names (a link in the destination path, its disk, a bundle that arrives wrong)",
            "the next ccat_transfer run sends it; the legs that wait on it go once it arrives",
        ),
        Stage(
            "unpack", states.UNPACK, "unpack of transfer", "unpacks",
            "remove the link the reason names; a bundle damaged after it arrived needs nothing",
            "the next ccat_unpacking run unpacks it (a damaged arrival is sent again, up to 3 more times); "
            "archiving follows",
        ),
        Stage(
            "archive", states.ARCHIVE, "archive transfer", "archive transfers",
            "restore the package's buffer copy the reason names (it must match its checksum)",
            "the next ccat_archive run uploads it, with 3 tries again; deletion follows once it is archived",
        ),
        Stage(
            "staging", states.STAGING_JOB, "staging job", "staging jobs",
            "wait until the packages the reason names are archived, or fix the archive copies it names",
            "clear its failed ccat_staging task (or trigger the same request again): it stages only what is missing",
        ),
    )
}  # fmt: skip


def age(since: datetime, now: datetime) -> str:
    """A short human duration: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def one_line(text: str | None, width: int = REASON_WIDTH) -> str:
    """``text`` on one line of at most ``width`` characters (``…`` where it was cut)."""
    flat = " ".join((text or "no reason recorded").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def intervention_lines(items: list[InterventionItemRow], now: datetime, shown: int = SHOWN_PER_STAGE) -> list[str]:
    """``needing intervention: N``, then per stage what to fix, and each item's ``ccat retry`` command and reason."""
    lines = [f"needing intervention: {len(items)}"]
    by_kind: dict[str, list[InterventionItemRow]] = defaultdict(list)
    for item in items:
        by_kind[item.kind].append(item)
    for stage in STAGES.values():
        found = by_kind.get(stage.kind, [])
        if not found:
            continue
        lines.append(f"  {stage.plural} ({len(found)}): {stage.fix}, then:")
        for item in found[:shown]:
            lines.append(f"    ccat retry {stage.kind} {item.id}  # {item.name}, for {age(item.since, now)}")
            lines.append(f"      {one_line(item.reason)}")
        if len(found) > shown:
            lines.append(f"    ... and {len(found) - shown} more {stage.plural}")
    return lines


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


def waiting_lines(rows: list[WaitingRow], now: datetime, shown: int) -> list[str]:
    """Work that waits or will be tried again by itself, with the reason of its last try."""
    if not rows:
        return []
    lines = ["\nwaiting or to be tried again (no action needed unless it lasts):"]
    for row in rows[:shown]:
        lines.append(f"  {row.stage} {row.name}: {one_line(row.reason)} (for {age(row.since, now)})")
    if len(rows) > shown:
        lines.append("  ... and more")
    return lines


def finding_lines(rows: list[FindingRow], now: datetime, shown: int) -> list[str]:
    """Open audit findings: lost, corrupt and dark data, and what their repair is."""
    if not rows:
        return []
    lines = ["\naudit findings (`ccat audit` runs the audit; dark data is reported, never deleted):"]
    for row in rows[:shown]:
        repair = f"; {row.repair}" if row.repair else ""
        lines.append(f"  {row.kind} at {row.location}: {row.path} (since {age(row.found_at, now)}){repair}")
    if len(rows) > shown:
        lines.append("  ... and more")
    return lines


def report(db: OpsDb, now: datetime | None = None, observations: int = 20, shown: int = SHOWN_PER_STAGE) -> str:
    """The whole status report as text (``shown``: items needing intervention listed per stage)."""
    now = now or datetime.now(UTC)
    health = health_summary(db)
    width = max([len(stage) for stage in health.counts] + [5])
    lines = [f"{'stage':<{width}}  " + "  ".join(f"{state:>11}" for state in STATES)]
    for stage, by_state in sorted(health.counts.items()):
        lines.append(f"{stage:<{width}}  " + "  ".join(f"{by_state.get(state, 0):>11}" for state in STATES))
    if health.oldest_waiting:
        what, since = health.oldest_waiting
        lines.append(f"\noldest waiting: {what}, for {age(since, now)} (since {since:%Y-%m-%d %H:%M})")
    lines.extend(intervention_lines(db.fetch_all("work_needing_intervention"), now, shown))
    waiting = db.fetch_all("work_waiting", limit=shown + 1) + db.fetch_all("staging_jobs_waiting", limit=shown + 1)
    lines.extend(waiting_lines(sorted(waiting, key=lambda row: row.since), now, shown))
    lines.extend(finding_lines(db.fetch_all("open_audit_findings", location_id=None, limit=shown + 1), now, shown))
    progress = observation_lines(db.fetch_all("observation_progress", limit=observations), now)
    lines.append("\nunfinished observations:" if progress else "\nevery observation is archived")
    lines.extend(f"  {line}" for line in progress)
    return "\n".join(lines)
