"""Long-term archive: RawDataPackages from a site's buffer into its S3 archive, verified.

Object keys are stable and documented: ``<prefix>raw_data_packages/<instrument>/<YYYY-MM-DD>/<package>.tar``
(the package's path in the buffer, under the location's ``prefix``). Each object carries
``x-amz-meta-ccat-checksum: <algorithm:hex>``.

Uploads make the server verify what it stores:

- a sha256 package up to ``SINGLE_PUT_LIMIT`` (5 GiB, S3's largest PUT): one PUT
  streamed from the buffer file with the recorded checksum as ``ChecksumSHA256``; the
  client hashes nothing and the server refuses the object if a byte changed anywhere;
- other packages up to ``MULTIPART_THRESHOLD``: a single PUT with ``ChecksumSHA256``
  computed here, after checking the file against its recorded checksum;
- above it a multipart upload with a ``ChecksumSHA256`` per part (four parts in flight),
  while the whole-file checksum is computed in the same pass and compared with the
  recorded one before the upload is completed (otherwise it is aborted). Before it
  starts, every incomplete multipart upload of the same key is aborted: it is an
  earlier try of this package whose worker was killed before it could abort it, and
  it holds its parts' bytes until then. (Uploads left under other keys are aborted by
  the monitoring DAG's sweep, :func:`monitoring.sweep_stale_uploads`.) The credentials
  need ``s3:ListBucketMultipartUploads`` and ``s3:AbortMultipartUpload`` for that
  (without the first, uploads go on and the sweep task fails, saying so).

After the upload a HEAD checks size, the checksum metadata and the server's checksum.
A try first HEADs the key: an object already verified is not uploaded again.

A failed try goes back to PENDING. Only faults of the package itself count in
``long_term_archive_transfer.attempts`` (its buffer copy does not match its checksum or
is missing, the server refused its bytes); after the third the transfer is FAILED with
``requires_intervention`` and is left alone until an operator clears it
(``ccat archive clear``, which takes the transfer's lease first, so it never resets a
try that is running). Faults of the storage - unreachable, credentials refused (403,
InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied), overloaded - cost no package
anything and stop the run at the first one (:func:`s3.is_storage_fault`); any other
refusal of one object by the server is that package's fault.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccat_operators import checksums, metrics, s3, safefs, states, work
from ccat_operators.faults import ItemFault
from ccat_operators.opsdb import OpsDb
from ccat_operators.rows import ArchiveTransferRow, LocationRow, WorkItemRow
from ccat_operators.states import Status

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
MULTIPART_THRESHOLD = 64 * 2**20
#: S3's largest single PUT: sha256 packages up to it go in one streamed request.
SINGLE_PUT_LIMIT = 5 * 2**30
MIN_PART_SIZE = 32 * 2**20
MAX_PARTS = 9000
PARALLEL_PARTS = 4
CHECKSUM_METADATA = "ccat-checksum"


class ArchiveVerificationError(ItemFault):
    """The object in S3 is not the package."""


def object_key(prefix: str | None, relative_path: str) -> str:
    """The S3 key of a package: the buffer path under the location's prefix."""
    return f"{prefix or ''}{relative_path}"


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def is_verified(found: dict[str, Any] | None, size: int, checksum: str, server_checksum: str | None = None) -> bool:
    """True if a HEAD result is the package: size, our checksum metadata, and the server's checksum."""
    if found is None:
        return False
    if found.get("ContentLength") != size or (found.get("Metadata") or {}).get(CHECKSUM_METADATA) != checksum:
        return False
    return server_checksum is None or found.get("ChecksumSHA256") == server_checksum


def upload(client, bucket: str, key: str, path: Path, size: int, checksum: str) -> str:
    """Upload ``path`` so the server verifies it; return the server's ChecksumSHA256 to expect.

    A sha256 package up to ``SINGLE_PUT_LIMIT`` goes in one streamed PUT carrying its
    recorded checksum: the client hashes nothing (the checksum was verified when the tar
    was written or unpacked) and the server refuses the object if one byte differs.
    """
    algorithm, digest = checksums.parse(checksum)
    metadata = {CHECKSUM_METADATA: checksum}
    if algorithm == "sha256" and size <= SINGLE_PUT_LIMIT:
        expected = _b64(bytes.fromhex(digest))
        with safefs.UncachedFile(path) as stream:
            if os.fstat(stream.fileno()).st_size != size:
                raise ArchiveVerificationError(f"{path}: buffer copy is not {size} bytes")
            client.put_object(Bucket=bucket, Key=key, Body=stream, ContentLength=size, ChecksumSHA256=expected,
                              Metadata=metadata)  # fmt: skip
        return expected
    if size <= MULTIPART_THRESHOLD:
        data = path.read_bytes()
        if algorithm == "sha256":
            expected = _b64(bytes.fromhex(digest))
        else:
            actual = checksums.new_hasher(algorithm)
            actual.update(data)
            if f"{algorithm}:{actual.hexdigest()}" != checksum:
                raise ArchiveVerificationError(f"{path}: buffer copy does not match {checksum}")
            expected = _b64(hashlib.sha256(data).digest())
        client.put_object(Bucket=bucket, Key=key, Body=data, ChecksumSHA256=expected, Metadata=metadata)
        return expected
    return _multipart(client, bucket, key, path, size, checksum, metadata)


def _multipart(client, bucket: str, key: str, path: Path, size: int, checksum: str, metadata: dict) -> str:
    """Upload in parts, ``PARALLEL_PARTS`` at a time (memory: that many parts), reading the file once."""
    algorithm, _ = checksums.parse(checksum)
    part_size = max(MIN_PART_SIZE, -(-size // MAX_PARTS))
    whole = checksums.new_hasher(algorithm)
    abort_earlier_uploads(client, bucket, key)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata=metadata)[
        "UploadId"
    ]

    def send(number: int, data: bytes) -> dict[str, Any]:
        digest = _b64(hashlib.sha256(data).digest())
        response = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, ChecksumSHA256=digest
        )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": digest}

    in_flight: list[Future] = []
    parts: list[dict[str, Any]] = []
    try:
        with (
            safefs.UncachedFile(path) as stream,
            ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="s3-part") as pool,
        ):
            number = 0
            while data := stream.read(part_size):
                number += 1
                whole.update(data)
                if len(in_flight) == PARALLEL_PARTS:
                    parts.append(in_flight.pop(0).result())
                in_flight.append(pool.submit(send, number, data))
            parts.extend(future.result() for future in in_flight)
        if f"{algorithm}:{whole.hexdigest()}" != checksum:
            raise ArchiveVerificationError(f"{path}: buffer copy does not match {checksum}; upload aborted")
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException as error:
        _abort_after(error, client, bucket, key, upload_id)
        raise
    digests = [base64.b64decode(part["ChecksumSHA256"]) for part in parts]
    return f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"


def abort_earlier_uploads(client, bucket: str, key: str) -> list[str]:
    """Abort every incomplete multipart upload of exactly ``key``; return their upload ids.

    Only this package's tries upload to its key (under its archive transfer's lease), so
    an incomplete upload of the key is an earlier try that died before it could abort.
    Credentials that may not list uploads (403) do not stop the archive: that is logged,
    and the monitoring DAG's sweep, which cannot work either then, fails and says so.
    """
    from botocore.exceptions import ClientError

    aborted = []
    try:
        earlier = [found for found in s3.incomplete_uploads(client, bucket, key) if found["Key"] == key]
    except ClientError as error:
        if s3.error_code(error) not in ("403", "AccessDenied"):
            raise
        log.error("s3://%s/%s: may not list incomplete uploads (s3:ListBucketMultipartUploads), so an earlier "
                  "try's parts are not aborted: %s", bucket, key, error)  # fmt: skip
        return aborted
    for found in earlier:
        if s3.abort_upload(client, bucket, key, found["UploadId"]):
            aborted.append(found["UploadId"])
            log.warning("s3://%s/%s: aborted the incomplete upload %s of an earlier try (initiated %s)",
                        bucket, key, found["UploadId"], found.get("Initiated"))  # fmt: skip
    return aborted


def _abort_after(error: BaseException, client, bucket: str, key: str, upload_id: str) -> None:
    """Abort a failed upload; if that fails too, ``error`` stays what is raised (it says whose fault it was)."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception as abort_error:  # the next try of the package, or the sweep, aborts it
        log.warning("s3://%s/%s: could not abort upload %s: %s", bucket, key, upload_id, abort_error)
        error.add_note(f"the incomplete upload {upload_id} could not be aborted: {abort_error}")


@dataclass
class ArchiveResult(work.WorkResult):
    planned: int = 0
    needs_intervention: list[str] = field(default_factory=list)


def plan_archive_transfers(db: OpsDb, lta: LocationRow) -> int:
    """Create the LongTermArchiveTransfers towards one archive; return how many are new."""
    return len(db.fetch_column("plan_archive_transfers", lta_id=lta.id, site_id=lta.site_id))


def archive_pending(db: OpsDb, lta: LocationRow, client_factory: Callable = s3.client) -> ArchiveResult:
    """Plan and run every archive transfer towards ``lta`` that is not waiting for an operator.

    A fault of one package counts against it (see module doc) and the run goes on. The
    first failure that is not a package's (S3 unreachable, credentials refused) stops
    the run: that transfer goes back to PENDING uncounted, and the failure is reported
    in ``failed`` for the task to retry.
    """
    result = ArchiveResult(planned=plan_archive_transfers(db, lta))
    rows = db.fetch_all("find_archive_transfers", location_id=lta.id, limit=10_000)
    if not rows:
        return result
    try:
        client = client_factory(lta)
        s3.ensure_bucket(client, lta.s3_bucket)
        work.run(db, states.ARCHIVE, rows, lambda row: _archive(db, row.id, client), result, on_fault=_count_fault)
    except Exception as error:
        where = result.interrupted or f"s3://{lta.s3_bucket}"
        result.failed[where] = str(error)
        log.error("archive to %s stopped at %s, not counted against any package: %s", lta.name, where, error)
    return result


def _archive(db: OpsDb, transfer_id: int, client) -> work.Record:
    """Upload one package unless an object already verified is there; return what records it."""
    transfer = db.fetch_one("long_term_archive_transfer", id=transfer_id)
    key = object_key(transfer.s3_prefix, transfer.relative_path)
    try:
        _upload_verified(client, transfer, key)
    except (FileNotFoundError, IsADirectoryError) as error:
        raise ArchiveVerificationError(f"the buffer copy is missing: {error}") from error
    except Exception as error:
        if s3.error_code(error) is None or s3.is_storage_fault(error):
            raise
        raise ArchiveVerificationError(f"s3://{transfer.s3_bucket}/{key} refused: {error}") from error

    def record() -> None:
        db.fetch_value("lock_package_for_archived_mark", id=transfer.raw_data_package_id)
        states.record_package_copy(
            db, transfer.destination_location_id, transfer.raw_data_package_id, key, transfer.checksum
        )
        db.fetch_value("mark_package_archived", id=transfer.raw_data_package_id)
        log.info("archived %s to s3://%s/%s", transfer.package, transfer.s3_bucket, key)

    return record


def _upload_verified(client, transfer: ArchiveTransferRow, key: str) -> None:
    found = s3.head(client, transfer.s3_bucket, key)
    if is_verified(found, transfer.size_bytes, transfer.checksum):
        return
    started = time.monotonic()
    source = Path(transfer.origin_root) / transfer.relative_path
    server_checksum = upload(client, transfer.s3_bucket, key, source, transfer.size_bytes, transfer.checksum)
    found = s3.head(client, transfer.s3_bucket, key)
    if not is_verified(found, transfer.size_bytes, transfer.checksum, server_checksum):
        raise ArchiveVerificationError(f"s3://{transfer.s3_bucket}/{key}: HEAD does not match the package")
    metrics.throughput(
        "archive",
        {"site": transfer.destination_site, "location": transfer.destination_name,
         "checksum_algorithm": checksums.parse(transfer.checksum)[0]},
        transfer.size_bytes,
        time.monotonic() - started,
    )  # fmt: skip


def _count_fault(
    db: OpsDb, column: states.StatusColumn, row: WorkItemRow, fault: ItemFault, result: ArchiveResult
) -> None:
    """A fault of the package: counted; back to PENDING, or FAILED after ``MAX_ATTEMPTS``."""
    attempt = db.fetch_value("record_archive_failure", id=row.id)
    gave_up = attempt >= MAX_ATTEMPTS
    new = Status.FAILED if gave_up else Status.PENDING
    states.move(db, column, row.id, Status.IN_PROGRESS, new, f"attempt {attempt}: {fault}")
    result.failed[row.name] = str(fault)
    if gave_up:
        result.needs_intervention.append(row.name)
        log.error("archive of %s failed %d times: needs an operator (%s)", row.name, attempt, fault)
    else:
        log.error("archive of %s failed (attempt %d of %d): %s", row.name, attempt, MAX_ATTEMPTS, fault)
