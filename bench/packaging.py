"""Packaging throughput, memory, and bundle fill.

Measures, on this machine, in one process run:

1. **Throughput**: our one-pass packaging writer (``tarstream.write_archive``: tar +
   package checksum + a checksum per member, temporary name, fsync, rename) over ~2 GB of
   synthetic files, against the baseline ``tar cf`` followed by hashing the tar with the
   same algorithm (Python's hashlib, the fastest sha256 here; ``sha256sum`` is also
   shown). Both read their input from the page cache (a warm-up run fills it). Each side
   runs in its own subprocess, alternating, >= 5 runs; medians are compared.
   Goal: ratio (baseline time / our time) >= 1.3.
2. **Peak RSS** of the packaging subprocess (``ru_maxrss``), for a small and the large
   package: goal < 200 MB whatever the package size.
3. **Bundle fill**: first-fit decreasing over random RawDataPackage sizes (uniform in
   1-50 GB against a 100 GB limit, as many packages as a busy day brings), reporting the
   mean fill of the bundles that leave because they are full. Goal >= 95%.

Run: ``.venv/bin/python bench/packaging.py [--gigabytes 2] [--runs 5] [--algorithm sha256]``
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

# This folder holds packaging.py, which would shadow the `packaging` library: run from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import machine

from ccat_operators.bundling import Item, bins_to_send, first_fit_decreasing

WRITER = """
import sys
from pathlib import Path
from ccat_operators.tarstream import Member, write_archive
src, out, algorithm = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
files = sorted(p for p in src.rglob("*") if p.is_file())
members = [Member(p, str(p.relative_to(src)), p.stat().st_size, algorithm) for p in files]
write_archive(out.parent, out.name, members, algorithm)
"""

HASHER = """
import hashlib, sys
import xxhash
algorithm = sys.argv[2]
h = hashlib.sha256() if algorithm == "sha256" else xxhash.xxh3_128()
with open(sys.argv[1], "rb", buffering=0) as f:
    buf = bytearray(1 << 20)
    while n := f.readinto(buf):
        h.update(memoryview(buf)[:n])
print(h.hexdigest())
"""


def make_files(root: Path, total: int, seed: int = 1) -> None:
    """Synthetic instrument output: a mix of large scans and small housekeeping files."""
    rng = random.Random(seed)
    written = 0
    index = 0
    block = os.urandom(1 << 20)
    while written < total:
        size = rng.choice([rng.randint(1 << 20, 120 << 20), rng.randint(1 << 10, 512 << 10)])
        size = min(size, total - written)
        path = root / f"module_{index % 4}" / f"scan_{index:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as stream:
            remaining = size
            while remaining:
                chunk = block[: min(remaining, len(block))]
                stream.write(chunk)
                remaining -= len(chunk)
        written += size
        index += 1


def timed(argv: list[str]) -> float:
    """Run argv and return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def child_rss(argv: list[str]) -> int:
    """Peak RSS of one child process, measured with a fresh wrapper process."""
    probe = (
        "import resource, subprocess, sys\n"
        "subprocess.run(sys.argv[1:], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, *argv], check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1])


def ours(src: Path, out: Path, algorithm: str) -> list[str]:
    return [sys.executable, "-c", WRITER, str(src), str(out), algorithm]


def baseline_seconds(src: Path, out: Path, algorithm: str, hasher: str = "python") -> float:
    start = time.perf_counter()
    subprocess.run(["tar", "cf", str(out), "-C", str(src), "."], check=True)
    if hasher == "python":
        subprocess.run([sys.executable, "-c", HASHER, str(out), algorithm], check=True, stdout=subprocess.DEVNULL)
    else:
        subprocess.run(["sha256sum", str(out)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fill_ratio(packages: int = 2000, seed: int = 3) -> tuple[float, int, float]:
    rng = random.Random(seed)
    gb = 10**9
    now = datetime(2026, 11, 21, tzinfo=UTC)
    items = [Item(i, rng.randint(1 * gb, 50 * gb), now) for i in range(packages)]
    bins = first_fit_decreasing(items, 100 * gb)
    full = bins_to_send(bins, 100 * gb, timedelta(hours=6), now)
    waiting = sum(b.size for b in bins if b not in full) / sum(i.size for i in items)
    return statistics.mean(b.size / (100 * gb) for b in full), len(full), waiting


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--algorithm", default="sha256", choices=["sha256", "xxh3_128"])
    args = parser.parse_args()
    print(machine.describe())

    work = Path(tempfile.mkdtemp(prefix="ccat-bench-packaging-", dir=os.environ.get("CCAT_BENCH_DIR")))
    try:
        src, out = work / "src", work / "out"
        src.mkdir()
        out.mkdir()
        total = int(args.gigabytes * 10**9)
        make_files(src, total)
        size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        print(f"input: {size / 1e9:.2f} GB in {sum(1 for _ in src.rglob('*.dat'))} files; algorithm {args.algorithm}")

        # Warm-up: page cache and both code paths.
        subprocess.run(ours(src, out / "warm.tar", args.algorithm), check=True)
        baseline_seconds(src, out / "warm-base.tar", args.algorithm)
        ours_times, base_times, sum_times = [], [], []
        for _ in range(args.runs):
            ours_times.append(timed(ours(src, out / "ours.tar", args.algorithm)))
            base_times.append(baseline_seconds(src, out / "base.tar", args.algorithm))
            if args.algorithm == "sha256":
                sum_times.append(baseline_seconds(src, out / "base2.tar", args.algorithm, hasher="sha256sum"))
            for path in out.iterdir():
                path.unlink()
        ours_median, base_median = statistics.median(ours_times), statistics.median(base_times)
        print(
            f"ours (tar + package + member checksums, fsync): median {ours_median:.2f} s "
            f"({size / ours_median / 1e6:.0f} MB/s) runs {[round(t, 2) for t in ours_times]}"
        )
        print(
            f"baseline tar cf + hashlib {args.algorithm}: median {base_median:.2f} s "
            f"({size / base_median / 1e6:.0f} MB/s) runs {[round(t, 2) for t in base_times]}"
        )
        ratio = base_median / ours_median
        print(f"throughput ratio vs tar cf + hash: {ratio:.2f}x (goal >= 1.3) {'PASS' if ratio >= 1.3 else 'FAIL'}")
        if sum_times:
            print(f"  (vs tar cf + sha256sum: {statistics.median(sum_times) / ours_median:.2f}x)")

        small = work / "small"
        small.mkdir()
        make_files(small, 50 * 10**6, seed=2)
        rss_small = child_rss(ours(small, out / "small.tar", args.algorithm))
        rss_large = child_rss(ours(src, out / "large.tar", args.algorithm))
        worst = max(rss_small, rss_large)
        print(
            f"peak RSS: {rss_small / 2**20:.0f} MiB for a 50 MB package, {rss_large / 2**20:.0f} MiB for "
            f"{size / 1e9:.1f} GB (goal < 200 MiB) {'PASS' if worst < 200 * 2**20 else 'FAIL'}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    fill, bundles, waiting = fill_ratio()
    print(
        f"bundle fill: {fill:.1%} mean over {bundles} full bundles (FFD, 1-50 GB packages, 100 GB limit); "
        f"{waiting:.1%} of bytes wait for the next run (goal >= 95%) {'PASS' if fill >= 0.95 else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
