"""Operators of filing over HTTP: open filing requests decided where their files are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.branch import BaseBranchOperator
from airflow.sdk import Context

from ccat_operators import filing_requests
from ccat_operators.operators.base import LocationOperator, worker_name


class ChooseFilingLocationsOperator(BaseBranchOperator):
    """Follow the filing task of the run's ``location`` param, or every one when it names none.

    The api-server starts a run per SOURCE location with requests (``location`` set); the
    hourly run has none and sweeps up every location's open requests. Runs on ``default``,
    so a run for one location never waits for another location's worker.

    :param task_ids: the filing task of each SOURCE location, by ``site/location``.
    """

    def __init__(self, *, task_ids: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_ids = dict(task_ids)

    def choose_branch(self, context: Context) -> list[str]:
        location = context["params"].get("location")
        if not location:
            return list(self.task_ids.values())
        if location not in self.task_ids:
            self.log.warning("%s is not a SOURCE location of this DAG's topology file: nothing to file", location)
            return []
        return [self.task_ids[location]]


class FileRequestsOperator(LocationOperator):
    """Decide a SOURCE location's open filing requests: check each one's files here, then file it or refuse it.

    Runs on the location's ``raw_data_package_creation`` queue, on the host where its
    disks are mounted. A refused request is an outcome its requester reads from the API,
    not a task failure. Returns (XCom) ``{"accepted": n, "refused": n}``.
    """

    def execute(self, context: Context) -> dict[str, int]:
        location = self.active_location(context)
        decided = filing_requests.decide_open_requests(self.hook.ops_db, location.id, worker=worker_name())
        for request_id, result in decided.accepted.items():
            self.log.info("filing request %d: observation %d filed (%d new files, %d already filed)",
                          request_id, result.executed_obs_unit_id, result.new_files, result.already_filed)  # fmt: skip
        for request_id, problems in decided.refused.items():
            self.log.warning("filing request %d refused, nothing recorded: %s", request_id, "; ".join(problems))
        return {"accepted": len(decided.accepted), "refused": len(decided.refused)}
