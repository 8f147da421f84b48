"""Operators of the routing, transfer and unpacking stages."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ccat_operators import routing, safefs, transfer, unpacking
from ccat_operators.hooks.transfer import InvalidRouteError, TransferHook
from ccat_operators.operators.base import LocationOperator


class RouteBundlesOperator(LocationOperator):
    """Create the DataTransfers of a buffer's completed, unrouted bundles.

    Returns (XCom) the number of transfers created.
    """

    def execute(self, context: Context) -> int:
        created = routing.route_bundles(self.hook.ops_db, self.active_location())
        self.log.info("%s: %d transfer(s) created", self.location, len(created))
        return len(created)


class FindTransfersOperator(LocationOperator):
    """List the transfers from ``location`` to ``destination_site`` that can go now.

    Returns (XCom) a list of ``{"transfer_id": ..., "bundle": ...}`` for the mapped send task.
    """

    template_fields = ("location", "destination_site")

    def __init__(self, *, destination_site: str, limit: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination_site = destination_site
        self.limit = limit

    def execute(self, context: Context) -> list[dict[str, Any]]:
        location = self.active_location()
        site_id = self.hook.ops_db.fetch_value("site_id", short_name=self.destination_site)
        rows = self.hook.ops_db.fetch_all(
            "find_transfers_to_send", location_id=location.id, destination_site_id=site_id, limit=self.limit
        )
        return [{"transfer_id": row.id, "bundle": row.name} for row in rows]


class SendTransferOperator(LocationOperator):
    """Send one DataTransfer (one try; Airflow retries with exponential backoff).

    Killing the task (clearing or marking it while it runs) calls :meth:`on_kill`, which
    ends the running copy's process group: the try then fails as stopped, leaving the
    transfer PENDING for the next try (FAILED on the last one) with the partial copy kept
    for rsync to resume.

    :param transfer_id: the DataTransfer to send.
    :param bundle: its bundle's name (shown as the mapped task's label).
    """

    template_fields = ("location", "transfer_id", "bundle")

    def __init__(self, *, transfer_id: int, bundle: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transfer_id = transfer_id
        self.bundle = bundle
        self.transfer_hook: TransferHook | None = None  # the running try's hook, for on_kill

    def execute(self, context: Context) -> str:
        self.note_execution(context)
        try:
            outcome = transfer.send_transfer(
                self.hook.ops_db, int(self.transfer_id), hook_factory=self._transfer_hook_for
            )
        except (InvalidRouteError, safefs.UnsafePathError) as error:
            raise AirflowFailException(str(error)) from error
        if outcome == "busy":
            raise AirflowSkipException(f"transfer {self.transfer_id} is being sent by another worker")
        return outcome

    def _transfer_hook_for(self, row: Any) -> TransferHook:
        """The transfer's hook (:func:`ccat_operators.transfer.hook_for`), kept for :meth:`on_kill`."""
        self.transfer_hook = transfer.hook_for(row)
        return self.transfer_hook

    def on_kill(self) -> None:
        """End the running copy or remote command (its whole process group); start no other."""
        if self.transfer_hook is not None:
            self.transfer_hook.kill()


class UnpackBundlesOperator(LocationOperator):
    """Unpack and verify every bundle that has arrived at a buffer.

    A bundle damaged after it arrived is sent again (logged, the task succeeds); one that
    is refused fails the task (no retry), after the others were unpacked.
    """

    def execute(self, context: Context) -> dict[str, int]:
        result = unpacking.unpack_arrived(self.hook.ops_db, self.active_location())
        for name, reason in result.redelivered.items():
            self.log.warning("bundle %s will be sent again: %s", name, reason)
        if result.failed:
            details = "; ".join(f"{name}: {reason}" for name, reason in result.failed.items())
            raise AirflowFailException(f"{len(result.failed)} bundle(s) not unpacked: {details}")
        return {"unpacked": len(result.completed)}
