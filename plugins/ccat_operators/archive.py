"""Long-term archive: RawDataPackages from a site's buffer into its S3 archive, verified.

Object keys are stable and documented: ``<prefix>raw_data_packages/<instrument>/<YYYY-MM-DD>/<package>.tar``
(the package's path in the buffer, under the location's ``prefix``). Each object carries
``x-amz-meta-ccat-checksum: <algorithm:hex>``.

Uploads make the server verify what it stores:

- up to ``MULTIPART_THRESHOLD`` a single PUT with ``ChecksumSHA256`` (for sha256
  packages the recorded checksum itself, so a byte changed anywhere is refused);
- above it a multipart upload with a ``ChecksumSHA256`` per part (four parts in flight),
  while the whole-file checksum is computed in the same pass and compared with the
  recorded one before the upload is completed (otherwise it is aborted).

After the upload a HEAD checks size, the checksum metadata and the server's checksum.
A try first HEADs the key: an object already verified is not uploaded again.

A failed try goes back to PENDING. Only faults of the package itself count in
``long_term_archive_transfer.attempts`` (its buffer copy does not match its checksum or
is missing, the server refused its bytes); after the third the transfer is FAILED with
``requires_intervention`` and is left alone until an operator clears it
(``ccat archive clear``, which takes the transfer's lease first, so it never resets a
try that is running). Faults of the storage - unreachable, credentials refused (403,
InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied), overloaded - cost no package
anything and stop the run at the first one.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccat_operators import checksums, metrics
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import Status

log = logging.getLogger(__name__)

ARCHIVE_KIND = "long_term_archive_transfer"
MAX_ATTEMPTS = 3
MULTIPART_THRESHOLD = 64 * 2**20
MIN_PART_SIZE = 32 * 2**20
MAX_PARTS = 9000
PARALLEL_PARTS = 4
CHECKSUM_METADATA = "ccat-checksum"


class ArchiveVerificationError(RuntimeError):
    """The object in S3 is not the package."""


def object_key(prefix: str | None, relative_path: str) -> str:
    """The S3 key of a package: the buffer path under the location's prefix."""
    return f"{prefix or ''}{relative_path}"


def s3_client(location: dict[str, Any]):
    """A boto3 S3 client for an S3 location, credentials from its Airflow AWS connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    hook = S3Hook(aws_conn_id=location["s3_conn_id"], region_name=location["s3_region"])
    return hook.get_session().client(
        "s3",
        endpoint_url=location["s3_endpoint_url"] or hook.conn_config.endpoint_url,
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=120,
        ),
    )


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def ensure_bucket(client, bucket: str) -> None:
    """Create ``bucket`` if it does not exist (idempotent)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
        client.create_bucket(Bucket=bucket)
        log.info("created bucket %s", bucket)


def head(client, bucket: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def is_verified(found: dict[str, Any] | None, size: int, checksum: str, server_checksum: str | None = None) -> bool:
    """True if a HEAD result is the package: size, our checksum metadata, and the server's checksum."""
    if found is None:
        return False
    if found.get("ContentLength") != size or (found.get("Metadata") or {}).get(CHECKSUM_METADATA) != checksum:
        return False
    return server_checksum is None or found.get("ChecksumSHA256") == server_checksum


def upload(client, bucket: str, key: str, path: Path, size: int, checksum: str) -> str:
    """Upload ``path`` so the server verifies it; return the server's ChecksumSHA256 to expect."""
    algorithm, digest = checksums.parse(checksum)
    metadata = {CHECKSUM_METADATA: checksum}
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
        with open(path, "rb") as stream, ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="s3-part") as pool:
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
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    digests = [base64.b64decode(part["ChecksumSHA256"]) for part in parts]
    return f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"


@dataclass
class ArchiveResult:
    planned: int = 0
    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    needs_intervention: list[str] = field(default_factory=list)


def plan_archive_transfers(db: OpsDb, lta: dict[str, Any]) -> int:
    """Create the LongTermArchiveTransfers towards one archive; return how many are new."""
    return len(db.fetch_all("plan_archive_transfers", lta_id=lta["id"], site_id=lta["site_id"]))


def archive_pending(db: OpsDb, lta: dict[str, Any], client_factory: Callable = s3_client) -> ArchiveResult:
    """Plan and run every archive transfer towards ``lta`` that is not waiting for an operator.

    Stops at the first failure that is not about one package (S3 unreachable, credentials
    refused): the other packages keep their attempt counts for when S3 is back.
    """
    result = ArchiveResult(planned=plan_archive_transfers(db, lta))
    client = None
    for row in db.fetch_all("find_archive_transfers", location_id=lta["id"], limit=10_000):
        with db.lease(ARCHIVE_KIND, row["id"]) as mine:
            if not mine:
                continue
            try:
                if client is None:
                    client = client_factory(lta)
                    ensure_bucket(client, lta["s3_bucket"])
                _archive_one(db, row["id"], client, result)
            except Exception as error:
                result.failed[row["package"]] = str(error)
                if storage_wide(error):
                    log.error("archive to %s stopped, the storage itself failed: %s", lta["name"], error)
                    break
    return result


@dataclass
class ClearResult:
    cleared: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)


def clear_intervention(db: OpsDb, transfer_id: int | None = None) -> ClearResult:
    """Let transfers that needed an operator be tried again (all, or one), leaving live work alone.

    Each transfer's lease is taken first: one whose try is still running on a worker is
    reported ``busy`` and not touched.
    """
    result = ClearResult()
    for row in db.fetch_all("archive_transfers_needing_intervention"):
        if transfer_id is not None and row["id"] != transfer_id:
            continue
        with db.lease(ARCHIVE_KIND, row["id"]) as mine:
            if not mine:
                result.busy.append(row["id"])
            elif db.fetch_value("clear_archive_intervention", id=row["id"]) is not None:
                result.cleared.append(row["id"])
    return result


#: Answers that mean the storage (or our access to it) is failing, whatever the package.
STORAGE_WIDE_CODES = frozenset({
    "403", "Forbidden", "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "RequestTimeTooSkewed",
    "NoSuchBucket", "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
})  # fmt: skip
#: Answers that mean the server refused this package's bytes (they did not match their checksum).
PACKAGE_FAULT_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})


def _error_code(error: BaseException) -> str | None:
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code"))
    return None


def storage_wide(error: BaseException) -> bool:
    """True for failures of the storage rather than of one package (unreachable, credentials refused)."""
    from botocore.exceptions import ConnectionError, HTTPClientError, NoCredentialsError

    if _error_code(error) in STORAGE_WIDE_CODES:
        return True
    return isinstance(error, (ConnectionError, HTTPClientError, NoCredentialsError))


def package_fault(error: BaseException) -> bool:
    """True for failures that are the package's own: they count against its attempts.

    Its buffer copy does not match its checksum or is missing, or the server refused its
    bytes. Anything else (the storage, the network, a killed worker) costs it nothing.
    """
    if isinstance(error, (ArchiveVerificationError, FileNotFoundError, IsADirectoryError)):
        return True
    return _error_code(error) in PACKAGE_FAULT_CODES


def _archive_one(db: OpsDb, transfer_id: int, client, result: ArchiveResult) -> None:
    transfer = db.fetch_one("long_term_archive_transfer", id=transfer_id)
    if not db.start("long_term_archive_transfer", transfer_id):
        return
    key = object_key(transfer["s3_prefix"], transfer["relative_path"])
    try:
        found = head(client, transfer["s3_bucket"], key)
        if not is_verified(found, transfer["size_bytes"], transfer["checksum"]):
            started = time.monotonic()
            source = Path(transfer["origin_root"]) / transfer["relative_path"]
            server_checksum = upload(
                client, transfer["s3_bucket"], key, source, transfer["size_bytes"], transfer["checksum"]
            )
            found = head(client, transfer["s3_bucket"], key)
            if not is_verified(found, transfer["size_bytes"], transfer["checksum"], server_checksum):
                raise ArchiveVerificationError(f"s3://{transfer['s3_bucket']}/{key}: HEAD does not match the package")
            metrics.throughput(
                "archive",
                {"site": transfer["destination_site"], "location": transfer["destination_name"],
                 "checksum_algorithm": checksums.parse(transfer["checksum"])[0]},
                transfer["size_bytes"],
                time.monotonic() - started,
            )  # fmt: skip
    except Exception as error:
        _record_failure(db, transfer, error, result)
        raise
    with db.transaction():
        db.fetch_value(
            "upsert_package_copy",
            location_id=transfer["destination_location_id"],
            package_id=transfer["raw_data_package_id"],
            path=key,
            checksum=transfer["checksum"],
        )
        if not db.transition("long_term_archive_transfer", transfer_id, Status.IN_PROGRESS, Status.COMPLETED):
            raise RuntimeError(f"archive transfer {transfer_id} left IN_PROGRESS while it ran")
        db.fetch_value("mark_package_archived", id=transfer["raw_data_package_id"])
    log.info("archived %s to s3://%s/%s", transfer["package"], transfer["s3_bucket"], key)
    result.completed.append(transfer["package"])


def _record_failure(db: OpsDb, transfer: dict[str, Any], error: Exception, result: ArchiveResult) -> None:
    """Back to PENDING, or FAILED after ``MAX_ATTEMPTS`` faults of the package itself."""
    table, transfer_id = "long_term_archive_transfer", transfer["id"]
    if not package_fault(error):
        db.transition(table, transfer_id, Status.IN_PROGRESS, Status.PENDING, f"not counted (storage): {error}")
        return
    attempt = db.fetch_value("record_archive_failure", id=transfer_id)
    gave_up = attempt >= MAX_ATTEMPTS
    new = Status.FAILED if gave_up else Status.PENDING
    db.transition(table, transfer_id, Status.IN_PROGRESS, new, f"attempt {attempt}: {error}")
    if gave_up:
        result.needs_intervention.append(transfer["package"])
        log.error("archive of %s failed %d times: needs an operator (%s)", transfer["package"], attempt, error)
