"""Executing one DataTransfer: send, verify at the destination, rename, record.

``send_transfer`` is what the ``ccat_transfer`` DAG's mapped task runs, once per try:

1. take the transfer's lease (another live worker sending it -> nothing to do);
2. move it to IN_PROGRESS (from PENDING via SCHEDULED, or from a state a dead worker
   left) and count the attempt;
3. if the destination already holds the bundle under its final name with the right
   size and checksum (an earlier try got that far), finish without sending;
4. otherwise send to ``<name>.tar.part`` (resuming what an earlier try left), check
   size and checksum *at the destination*, rename to the final name; a copy that fails
   because the destination is full removes its ``.part`` (it would only keep the disk
   full), while a killed, timed-out or dropped copy keeps it for the next try to resume;
5. record the bundle's copy at the destination and COMPLETED.

Nothing is written through a link: the destination directory is checked (and created)
below the destination root first, and a link there fails the transfer at once with the
reason; the log file is opened without following links either.

Every try writes a DataTransferLog row pointing at a log file with the command output.
A failed try leaves the transfer PENDING for the next try, or FAILED (with the reason)
when it was the last; a corrupt ``.part`` is removed so the next try starts clean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ccat_operators import checksums, metrics, safefs, states
from ccat_operators.bundling import bundle_path
from ccat_operators.faults import ItemFault
from ccat_operators.hooks.transfer import DestinationFullError, TransferHook
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import TransferRow
from ccat_operators.states import Status
from ccat_operators.tarstream import part_path

log = logging.getLogger(__name__)

LOG_DIRECTORY = ".ccat/transfer_logs"
#: Tries of a bundle that arrived wrong (size or checksum at the destination) before FAILED.
MAX_FAULTS = 3


class TransferVerificationError(ItemFault):
    """What arrived at the destination is not what was sent."""


def default_ssh_conn_id(site: str, location: str) -> str:
    """Airflow SSH connection of a destination location unless its settings name one."""
    return f"ccat_ssh_{site}_{location}"


def hook_for(transfer: TransferRow) -> TransferHook:
    """The TransferHook for a transfer row (method, destination connection, route settings)."""
    settings = transfer.destination_settings
    conn_id = settings.get("ssh_conn_id") or default_ssh_conn_id(transfer.destination_site, transfer.destination_name)
    return TransferHook(transfer.method, ssh_conn_id=conn_id, settings=transfer.route_settings or {})


def send_transfer(db: OpsDb, transfer_id: int, hook_factory: Callable[[TransferRow], TransferHook] = hook_for) -> str:
    """Run one try of a DataTransfer; return what happened (``sent``, ``present``, ``done``, ``busy``).

    Raises on failure after recording it (see :func:`_record_failure`).
    """
    with states.lease(db, states.TRANSFER, transfer_id) as mine:
        if not mine:
            log.info("transfer %s is being sent by another worker", transfer_id)
            return "busy"
        transfer = db.fetch_one("data_transfer", id=transfer_id)
        if transfer is None:
            raise LookupError(f"no DataTransfer {transfer_id}")
        if transfer.status == Status.COMPLETED:
            return "done"
        if transfer.depends_on_status not in (None, Status.COMPLETED):
            raise RuntimeError(f"transfer {transfer_id} waits for transfer {transfer.depends_on_transfer_id}")
        if not states.start(db, states.TRANSFER, transfer_id, retry_failed=True):  # a cleared FAILED try goes again
            raise RuntimeError(f"transfer {transfer_id} could not be moved to IN_PROGRESS")
        attempt = db.fetch_value("start_transfer_attempt", id=transfer_id)
        log_relative = f"{LOG_DIRECTORY}/transfer_{transfer_id}_attempt_{attempt}.log"
        log_path = Path(transfer.origin_root) / log_relative
        db.fetch_value("insert_data_transfer_log", transfer_id=transfer_id, attempt=attempt, log_path=str(log_path))
        try:
            with (
                safefs.open_append(Path(transfer.origin_root), log_relative) as log_fd,
                open(log_fd, "a", closefd=False) as log_file,
            ):
                outcome = _send_and_verify(db, transfer, hook_factory(transfer), log_file)
        except Exception as error:
            db.execute("finish_data_transfer_log", transfer_id=transfer_id, attempt=attempt, succeeded=False)
            new = _record_failure(db, transfer_id, attempt, error)
            log.error("transfer %s attempt %s failed (%s): %s; log %s", transfer_id, attempt, new, error, log_path)
            raise
        db.execute("finish_data_transfer_log", transfer_id=transfer_id, attempt=attempt, succeeded=True)
        return outcome


def _record_failure(db: OpsDb, transfer_id: int, attempt: int, error: Exception) -> Status:
    """Back to PENDING, or FAILED: at once for a link in the destination path (retrying cannot
    help), after ``MAX_FAULTS`` tries for a bundle that arrives wrong. Faults of the
    infrastructure (the network, ssh, a full disk, a killed copy, a route to configure)
    never count: the transfer stays PENDING and the next run tries again.
    """
    reason = f"attempt {attempt}: {error}"
    if isinstance(error, safefs.UnsafePathError):
        new = Status.FAILED
    elif isinstance(error, ItemFault):
        faults = db.fetch_value("record_transfer_fault", id=transfer_id)
        new = Status.FAILED if faults >= MAX_FAULTS else Status.PENDING
        reason = f"{reason} (fault {faults} of {MAX_FAULTS})"
    else:
        new = Status.PENDING
        reason = f"{reason} (not counted: not the bundle's fault)"
    states.move(db, states.TRANSFER, transfer_id, Status.IN_PROGRESS, new, reason)
    return new


def _send_and_verify(db: OpsDb, transfer: TransferRow, hook: TransferHook, log_file) -> str:
    relative = bundle_path(transfer.bundle)
    final = str(Path(transfer.destination_root) / relative)
    part = str(part_path(Path(final)))
    algorithm, _ = checksums.parse(transfer.checksum)
    outcome = "present"
    started = time.monotonic()
    hook.guard(transfer.destination_root, str(PurePosixPath(relative).parent), log_file)
    if not _verified(hook, final, transfer, algorithm, log_file):
        outcome = "sent"
        try:
            hook.send(Path(transfer.origin_root) / relative, part, log_file)
        except DestinationFullError as error:
            _remove_part_of_full_destination(hook, part, error, log_file)
            raise
        if not _verified(hook, part, transfer, algorithm, log_file):
            hook.remove(part)
            raise TransferVerificationError(
                f"{transfer.bundle}: size or checksum at the destination does not match; the partial copy was removed"
            )
        hook.rename(part, final)
    seconds = time.monotonic() - started
    if outcome == "sent":
        metrics.throughput(
            "transfer",
            {"route": f"{transfer.origin_site}_to_{transfer.destination_site}", "method": transfer.method,
             "checksum_algorithm": algorithm},
            transfer.size_bytes,
            seconds,
        )  # fmt: skip
    with db.transaction():
        if outcome == "sent":
            db.execute("record_transfer_metrics", id=transfer.id, bytes_sent=transfer.size_bytes, seconds=seconds)
        states.record_bundle_copy(
            db,
            transfer.destination_location_id,
            transfer.data_transfer_package_id,
            relative,
            transfer.checksum,
        )
        if not states.move(db, states.TRANSFER, transfer.id, Status.IN_PROGRESS, Status.COMPLETED):
            raise RuntimeError(f"transfer {transfer.id} left IN_PROGRESS while it was being sent")
    log_file.write(f"{outcome}: {transfer.bundle} verified at the destination ({transfer.checksum})\n")
    log.info("transfer %s: %s %s in %.1f s", transfer.id, outcome, transfer.bundle, seconds)
    return outcome


def _remove_part_of_full_destination(hook: TransferHook, part: str, error: DestinationFullError, log_file) -> None:
    """Remove the ``.part`` a copy into a full destination left: it holds the room others need."""
    try:
        hook.remove(part)
    except Exception as cleanup_error:  # the failed copy stays what is raised; the next full try removes it
        log_file.write(f"{part}: the destination is full, and the partial copy could not be removed: {cleanup_error}\n")
        error.add_note(f"the partial copy {part} could not be removed: {cleanup_error}")
        return
    log_file.write(f"{part}: the destination is full; the partial copy was removed\n")
    error.add_note(f"the partial copy {part} was removed")


def _verified(hook: TransferHook, path: str, transfer: TransferRow, algorithm: str, log_file) -> bool:
    """True if ``path`` at the destination has the bundle's size and checksum."""
    size = hook.size(path)
    if size != transfer.size_bytes:
        log_file.write(f"{path}: size {size}, expected {transfer.size_bytes}\n")
        return False
    checksum = hook.checksum(path, algorithm)
    if checksum != transfer.checksum:
        log_file.write(f"{path}: checksum {checksum}, expected {transfer.checksum}\n")
        return False
    return True
