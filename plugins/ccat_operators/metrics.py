"""Transfer and pipeline metrics to InfluxDB 2 (or anything speaking its v2 write API).

Configured from the environment, so every worker can have its own:
``CCAT_METRICS_URL`` (e.g. ``http://influxdb:8086``; unset = metrics off),
``CCAT_METRICS_TOKEN``, ``CCAT_METRICS_ORG`` (default ``ccat``) and
``CCAT_METRICS_BUCKET`` (default ``ccat``).

Metrics are best effort: a metrics server that is down is logged as a warning and never
fails the data task that measured something.

Measurements (tags; fields):

- ``packaging`` (site, location, checksum_algorithm; bytes, files, seconds, rate_mb_s)
- ``bundling`` (site, location, checksum_algorithm; bytes, packages, seconds, rate_mb_s)
- ``transfer`` (route, method, checksum_algorithm; bytes, seconds, rate_mb_s)
- ``archive`` (site, location, checksum_algorithm; bytes, seconds, rate_mb_s)
- ``disk_usage`` (site, location; used_bytes, total_bytes, used_fraction)
- ``s3_stale_uploads`` (site, location; aborted, aborted_bytes, in_progress): one sweep of
  an S3 archive's incomplete multipart uploads (in_progress: those younger than the grace period)
- ``pipeline_state`` (table, status; items)
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


class MetricsWriter:
    """Writes points synchronously to one InfluxDB v2 bucket."""

    def __init__(self, url: str, token: str, org: str, bucket: str) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.bucket, self.org = bucket, org
        self.client = InfluxDBClient(url=url, token=token, org=org, timeout=5_000)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, measurement: str, tags: dict[str, Any], fields: dict[str, float | int]) -> None:
        from influxdb_client import Point

        point = Point(measurement)
        for key, value in tags.items():
            point = point.tag(key, str(value))
        for key, value in fields.items():
            point = point.field(key, value)
        self.write_api.write(bucket=self.bucket, org=self.org, record=point)


@cache
def writer() -> MetricsWriter | None:
    """The process's writer from the environment, or None when metrics are off."""
    url = os.environ.get("CCAT_METRICS_URL")
    if not url:
        return None
    return MetricsWriter(
        url=url,
        token=os.environ.get("CCAT_METRICS_TOKEN", ""),
        org=os.environ.get("CCAT_METRICS_ORG", "ccat"),
        bucket=os.environ.get("CCAT_METRICS_BUCKET", "ccat"),
    )


def record(measurement: str, tags: dict[str, Any], fields: dict[str, float | int]) -> None:
    """Write one point if metrics are configured; never raise."""
    target = writer()
    if target is None:
        return
    try:
        target.write(measurement, tags, fields)
    except Exception as error:  # metrics must never fail a data task; the warning is the record
        log.warning("metrics: could not write %s: %s", measurement, error)


def throughput(measurement: str, tags: dict[str, Any], size: int, seconds: float, **fields: float | int) -> None:
    """Record bytes, seconds and MB/s of one unit of work."""
    rate = size / seconds / 1e6 if seconds > 0 else 0.0
    record(measurement, tags, {"bytes": size, "seconds": round(seconds, 6), "rate_mb_s": round(rate, 3), **fields})
