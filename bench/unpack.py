"""Unpack + verify throughput against ``tar xf`` followed by hashing each file.

Ours (``unpacking.extract_bundle``): one streaming pass over a DataTransferPackage that
computes the bundle checksum and writes every RawDataPackage to ``.part`` (fsync'ed),
then the renames. A sha256 bundle checksum that matches proves every package bundling
checked into it; with ``--algorithm xxh3_128`` each package is hashed as well.
Baseline: ``tar xf`` of the same bundle, then hashing each extracted file with the same
algorithm (Python hashlib, the fastest sha256 here), which verifies members but not
the bundle. Input is read from the page cache (a warm-up run fills it); each side runs
in its own subprocess, alternating, >= 5 runs, medians compared. Goal: >= 1.2x.

Run: ``.venv/bin/python bench/unpack.py [--gigabytes 2] [--runs 5] [--algorithm sha256]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This folder holds packaging.py, which would shadow the `packaging` library: run from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import machine

from ccat_operators.checksums import file_checksum
from ccat_operators.tarstream import Member, write_archive

OURS = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from ccat_operators.unpacking import extract_bundle
bundle, checksum, packages, root = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
extract_bundle(Path(bundle), checksum, [SimpleNamespace(**p) for p in packages], root).publish()
"""

BASELINE_HASH = """
import hashlib, json, sys
import xxhash
from pathlib import Path
root, packages, algorithm = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
for package in packages:
    h = hashlib.sha256() if algorithm == "sha256" else xxhash.xxh3_128()
    with open(root / package["relative_path"], "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        while n := f.readinto(buf):
            h.update(memoryview(buf)[:n])
    assert f"{algorithm}:{h.hexdigest()}" == package["checksum"], package["relative_path"]
"""


def make_bundle(work: Path, total: int, algorithm: str) -> tuple[Path, str, list[dict]]:
    """Package tars of ~100 MB in a bundle, like a buffer ships them."""
    block = os.urandom(1 << 20)
    packages, members = [], []
    size = 100 * 10**6
    for index in range(max(1, total // size)):
        relative = f"raw_data_packages/Prime-Cam/2026-11-21/package_{index:04d}.tar"
        path = work / "origin" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as stream:
            for _ in range(size // len(block)):
                stream.write(block)
            stream.write(os.urandom(size % len(block) + index))
        checksum = file_checksum(path, algorithm)
        packages.append({"relative_path": relative, "size_bytes": path.stat().st_size, "checksum": checksum})
        members.append(Member(path, relative, path.stat().st_size, algorithm, checksum))
    archive = write_archive(work, "bundle.tar", members, algorithm)
    return archive.path, archive.checksum, packages


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--algorithm", default="sha256", choices=["sha256", "xxh3_128"])
    args = parser.parse_args()
    print(machine.describe())
    work = Path(tempfile.mkdtemp(prefix="ccat-bench-unpack-", dir=os.environ.get("CCAT_BENCH_DIR")))
    try:
        bundle, checksum, packages = make_bundle(work, int(args.gigabytes * 10**9), args.algorithm)
        size = bundle.stat().st_size
        print(f"bundle: {size / 1e9:.2f} GB, {len(packages)} packages; algorithm {args.algorithm}")
        listing = json.dumps(packages)

        def ours() -> float:
            target = work / "ours"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            return run([sys.executable, "-c", OURS, str(bundle), checksum, listing, str(target)])

        def baseline() -> float:
            target = work / "base"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            start = time.perf_counter()
            subprocess.run(["tar", "xf", str(bundle), "-C", str(target)], check=True)
            subprocess.run([sys.executable, "-c", BASELINE_HASH, str(target), listing, args.algorithm], check=True)
            return time.perf_counter() - start

        ours(), baseline()  # warm-up
        ours_times, base_times = [], []
        for _ in range(args.runs):
            ours_times.append(ours())
            base_times.append(baseline())
        ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
        print(
            f"ours (stream, bundle checksum proving the packages, fsync): median {ours_median:.2f} s "
            f"({size / ours_median / 1e6:.0f} MB/s) runs {[round(t, 2) for t in ours_times]}"
        )
        print(
            f"baseline tar xf + hash each file: median {base_median:.2f} s "
            f"({size / base_median / 1e6:.0f} MB/s) runs {[round(t, 2) for t in base_times]}"
        )
        ratio = base_median / ours_median
        verdict = "PASS" if ratio >= 1.2 else "FAIL"
        print(f"unpack+verify ratio vs tar xf + hashing: {ratio:.2f}x (goal >= 1.2) {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
