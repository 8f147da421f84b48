"""The task that ends each stage's DAG: publish the stage's Asset if the run finished work."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Context
from airflow.sdk.exceptions import AirflowSkipException

from ccat_operators.assets import OUTPUT_OF_STAGE, announce_task_id
from ccat_operators.operators.base import OpsDbOperator


class AnnounceOutputOperator(OpsDbOperator):
    """Publish the Asset of ``stage`` when this DAG run finished at least one item.

    ops-db says what the stage finished since the run was due (``run_after``); with
    nothing new the task is skipped and no asset event is sent, so the next stage's DAG
    only starts early when it has work. Runs when no work task failed (``none_failed``):
    a run with a failure stays failed, and the hourly schedule picks up its output.
    """

    def __init__(self, *, stage: str, **kwargs: Any) -> None:
        if stage not in OUTPUT_OF_STAGE:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(OUTPUT_OF_STAGE)}")
        kwargs.setdefault("task_id", announce_task_id(stage))
        super().__init__(outlets=[OUTPUT_OF_STAGE[stage]], trigger_rule="none_failed", **kwargs)
        self.stage = stage

    def execute(self, context: Context) -> int:
        since = context["dag_run"].run_after
        finished = self.hook.ops_db.fetch_value("count_stage_output_since", stage=self.stage, since=since)
        if not finished:
            raise AirflowSkipException(f"{self.stage} finished nothing since {since:%Y-%m-%d %H:%M:%S}: no event")
        self.log.info("%s finished %d item(s) since %s: publishing %s", self.stage, finished, since, self.outlets[0])
        return finished


def announce_after_all(dag: DAG, stage: str) -> AnnounceOutputOperator:
    """Add the announce task to ``dag``, downstream of every task already in it."""
    work = list(dag.tasks)
    announce = AnnounceOutputOperator(stage=stage, dag=dag)
    for task in work:
        task >> announce
    return announce
