"""S3 storage of the long-term archives: clients, and what S3's answers mean.

Used by archiving (uploads), staging (downloads) and anything else that reads an S3
location. An S3 answer is not trusted: :func:`is_storage_fault` sorts errors into the
storage's (unreachable, credentials refused, overloaded: stop and retry later, costing
no item anything) and the item's (anything else the server refuses about one object).

Incomplete multipart uploads hold their parts' bytes until they are completed or
aborted; a worker killed mid-upload leaves one behind. :func:`incomplete_uploads`
lists them, :func:`abort_upload` ends one (an upload already gone is not an error).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
#: Answers that mean the storage (or our access to it) is failing, whatever the object.
STORAGE_CODES = frozenset({
    "401", "403", "Forbidden", "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "TokenRefreshRequired", "RequestTimeTooSkewed",
    "NoSuchBucket", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Throttling",
})  # fmt: skip


def client_config():
    """The botocore configuration of every client: checksums only where we ask for them.

    ``when_required`` keeps botocore from computing a CRC32 of every body in pure Python
    (slower than the upload); the archive sends the ChecksumSHA256 it already knows.
    Payload signing is off: otherwise SigV4 reads and hashes every body once more before
    sending it (always over http, and over https whenever the checksum is given as a
    value), a second sha256 of the same bytes. What protects a body instead is the
    ``x-amz-checksum-sha256`` header, signed like every header and verified by the
    server against every byte it stores (``tests/test_archive.py``).
    """
    from botocore.config import Config

    return Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"payload_signing_enabled": False},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
    )


def client(location: dict[str, Any]):
    """A boto3 S3 client for an S3 location, credentials from its Airflow AWS connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=location.s3_conn_id, region_name=location.s3_region)
    return hook.get_session().client(
        "s3", endpoint_url=location.s3_endpoint_url or hook.conn_config.endpoint_url, config=client_config()
    )


def error_code(error: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError (a HEAD's is its HTTP status), else None."""
    from botocore.exceptions import ClientError

    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code"))
    return None


def is_missing(error: BaseException) -> bool:
    """True if S3 answered that the object (or bucket) is not there."""
    return error_code(error) in MISSING_CODES


def is_storage_fault(error: BaseException) -> bool:
    """True for failures of the storage rather than of one object: it is down, refuses us, or is overloaded."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, NoCredentialsError

    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(error) in STORAGE_CODES or status >= 500
    return isinstance(error, (ConnectionError, HTTPClientError, NoCredentialsError))


def ensure_bucket(s3, bucket: str) -> None:
    """Create ``bucket`` if it does not exist (idempotent)."""
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as error:
        if error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=bucket)
        log.info("created bucket %s", bucket)


def head(s3, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's HEAD (with its checksums), or None if it is not there."""
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as error:
        if is_missing(error):
            return None
        raise


def incomplete_uploads(s3, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
    """The incomplete multipart uploads of keys starting with ``prefix`` (``Key``, ``UploadId``, ``Initiated``)."""
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Uploads", [])


def upload_parts_bytes(s3, bucket: str, key: str, upload_id: str) -> int | None:
    """Bytes held by the parts of an incomplete multipart upload, or None if the upload is gone."""
    from botocore.exceptions import ClientError

    try:
        pages = s3.get_paginator("list_parts").paginate(Bucket=bucket, Key=key, UploadId=upload_id)
        return sum(part["Size"] for page in pages for part in page.get("Parts", []))
    except ClientError as error:
        if error_code(error) == "NoSuchUpload":
            return None
        raise


def abort_upload(s3, bucket: str, key: str, upload_id: str) -> bool:
    """Abort one multipart upload, freeing its parts; False if it was gone already (completed or aborted)."""
    from botocore.exceptions import ClientError

    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as error:
        if error_code(error) == "NoSuchUpload":
            return False
        raise
    return True
