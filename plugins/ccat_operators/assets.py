"""Airflow Assets the stages publish, and the schedules that listen to them.

Each stage's DAG ends with an ``announce_*`` task that publishes its asset when the run
finished new work (see :class:`~ccat_operators.operators.assets.AnnounceOutputOperator`);
the next stage's DAG runs on that asset *or* on its hourly schedule, whichever comes
first. ``ccat_transfer`` also listens to its own output: a bundle that arrived at an
archive site may have a secondary route onwards. The hourly run is the backstop: it
picks up whatever an asset event did not (work finished by a run that also had a
failure, items retried by the sweep).
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable


def _asset(name: str, description: str) -> Asset:
    return Asset(name=f"ccat_{name}", uri=f"ccat://ops-db/{name}", group="ccat", extra={"description": description})


#: (stage whose output it announces, asset)
OBSERVATIONS_FILED = _asset("observations_filed", "observations filed over HTTP: work for packaging")
PACKAGES_BUFFERED = _asset("packages_buffered", "RawDataPackages written to a buffer: work for bundling")
BUNDLES_WRITTEN = _asset("bundles_written", "DataTransferPackages written: work for routing and transfer")
BUNDLES_TRANSFERRED = _asset("bundles_transferred", "bundles arrived at a destination buffer: work for unpacking")
PACKAGES_UNPACKED = _asset("packages_unpacked", "bundles unpacked and verified: work for the archive")
PACKAGES_ARCHIVED = _asset("packages_archived", "packages verified in a long-term archive: work for deletion")

#: The asset each stage publishes (the ``stage`` names of ``count_stage_output_since.sql``).
OUTPUT_OF_STAGE = {
    "filing": OBSERVATIONS_FILED,
    "packaging": PACKAGES_BUFFERED,
    "bundling": BUNDLES_WRITTEN,
    "transfer": BUNDLES_TRANSFERRED,
    "unpacking": PACKAGES_UNPACKED,
    "archive": PACKAGES_ARCHIVED,
}


def hourly_or_when(*assets: Asset) -> AssetOrTimeSchedule:
    """Run at the top of every hour, and as soon as any of ``assets`` is published."""
    condition = assets[0] if len(assets) == 1 else AssetAny(*assets)
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable("@hourly", timezone="UTC"), assets=condition)


def announce_task_id(stage: str) -> str:
    """Task id of the task that publishes ``stage``'s asset, e.g. ``announce_packages_buffered``."""
    return f"announce_{OUTPUT_OF_STAGE[stage].name.removeprefix('ccat_')}"


def announcement_doc(stage: str, starts: str) -> str:
    """The ``doc_md`` paragraph on ``stage``'s announce task; ``starts`` names what its asset starts."""
    return (
        f"\n**{announce_task_id(stage)}** publishes the asset `{OUTPUT_OF_STAGE[stage].name}` when this run\n"
        f"finished work, which starts {starts} at once (otherwise hourly); it is skipped when\n"
        "there is nothing new. After a failure, clear the failed task *with its downstream* so\n"
        "the announcement runs too.\n"
    )
