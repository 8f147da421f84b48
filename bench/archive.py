"""Archive upload throughput: the archive stage's upload against a plain boto3 ``upload_file``.

Both send the same packages (``--packages`` files of ``--package-gigabytes``, default
2 x 1 GB of incompressible data, read from the page cache) to one SeaweedFS S3 server
started here, alternating, ``--runs`` runs each after a warm-up; medians are compared.

- **ours**: what the archive stage does per package (``archive._upload_verified`` minus
  ops-db): HEAD, then ``archive.upload`` - a sha256 package up to 5 GiB goes in one
  streamed PUT carrying its recorded checksum as ``ChecksumSHA256``, so the client hashes
  nothing and the server verifies every byte - then HEAD to check size, our checksum
  metadata and the server's checksum. Client configured as the stage's
  (``s3.client_config()``).
- **baseline**: ``client.upload_file(path, bucket, key, ExtraArgs={"ChecksumAlgorithm":
  "SHA256"})`` with boto3's defaults (multipart above 8 MB, 10 threads, a SHA256 per part
  computed on the client).

Goal: ratio (baseline time / our time) >= 0.9.

Run: ``.venv/bin/python bench/archive.py [--packages 2] [--package-gigabytes 1] [--runs 5]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This folder holds packaging.py, which would shadow the `packaging` library: run from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from bench import machine

from ccat_dev.s3 import LocalS3
from ccat_operators import archive, s3

BUCKET = "ccat-bench-archive"


def make_packages(directory: Path, count: int, size: int) -> list[tuple[Path, str]]:
    """``count`` files of ``size`` incompressible bytes, with their sha256 checksums."""
    packages = []
    for index in range(count):
        path = directory / f"package_{index:03d}.tar"
        digest = hashlib.sha256()
        with open(path, "wb") as stream:
            remaining = size
            while remaining:
                block = os.urandom(min(remaining, 8 << 20))
                stream.write(block)
                digest.update(block)
                remaining -= len(block)
        packages.append((path, f"sha256:{digest.hexdigest()}"))
    return packages


def ours(client, packages: list[tuple[Path, str]], run: int) -> float:
    start = time.perf_counter()
    for path, checksum in packages:
        key = f"ours/{run}/{path.name}"
        size = path.stat().st_size
        if archive.is_verified(s3.head(client, BUCKET, key), size, checksum):
            raise RuntimeError(f"{key} is already there: the run would measure nothing")
        server_checksum = archive.upload(client, BUCKET, key, path, size, checksum)
        if not archive.is_verified(s3.head(client, BUCKET, key), size, checksum, server_checksum):
            raise RuntimeError(f"{key}: HEAD does not match the package")
    return time.perf_counter() - start


def baseline(client, packages: list[tuple[Path, str]], run: int) -> float:
    start = time.perf_counter()
    for path, _ in packages:
        client.upload_file(str(path), BUCKET, f"base/{run}/{path.name}", ExtraArgs={"ChecksumAlgorithm": "SHA256"})
    return time.perf_counter() - start


def empty_bucket(client) -> None:
    """Delete every object, so the server's volumes hold one run at a time."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=2)
    parser.add_argument("--package-gigabytes", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(machine.describe())
    work = Path(tempfile.mkdtemp(prefix="ccat-bench-archive-", dir=os.environ.get("CCAT_BENCH_DIR")))
    server = LocalS3(work / "s3")
    try:
        packages = make_packages(work, args.packages, int(args.package_gigabytes * 1e9))
        total = sum(path.stat().st_size for path, _ in packages)
        print(f"packages: {args.packages} x {args.package_gigabytes:g} GB (sha256), one SeaweedFS server")
        server.start()
        credentials = {"aws_access_key_id": server.access_key, "aws_secret_access_key": server.secret_key,
                       "region_name": "us-east-1", "endpoint_url": server.endpoint_url}  # fmt: skip
        stage_client = boto3.client("s3", config=s3.client_config(), **credentials)
        plain_client = boto3.client("s3", **credentials)
        s3.ensure_bucket(stage_client, BUCKET)
        ours(stage_client, packages, -1), baseline(plain_client, packages, -1)  # warm-up
        ours_times, base_times = [], []
        sides = [(ours, stage_client, ours_times), (baseline, plain_client, base_times)]
        for run in range(args.runs):
            for measure, client, times in sides if run % 2 == 0 else sides[::-1]:  # alternate who goes first
                empty_bucket(stage_client)
                times.append(measure(client, packages, run))
        ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
        print(
            f"ours (HEAD, one PUT with the recorded ChecksumSHA256, HEAD): median {ours_median:.2f} s "
            f"({total / ours_median / 1e6:.0f} MB/s) runs {[round(t, 2) for t in ours_times]}"
        )
        print(
            f"baseline boto3 upload_file, ChecksumAlgorithm SHA256: median {base_median:.2f} s "
            f"({total / base_median / 1e6:.0f} MB/s) runs {[round(t, 2) for t in base_times]}"
        )
        ratio = base_median / ours_median
        verdict = "PASS" if ratio >= 0.9 else "FAIL"
        print(f"archive ratio vs boto3 upload_file + SHA256: {ratio:.2f}x (goal >= 0.9) {verdict}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
