"""Transfer efficiency on a shaped long link.

Two network namespaces ("ccat", "cologne") on a private bridge; ccat's interface is
shaped with ``tc tbf`` to 500 Mbit/s. A 2 GB DataTransferPackage in ccat's buffer is sent
with the TransferHook's rsync-over-SSH command to cologne's sshd (the production path of
the ``ccat_transfer`` task, into ``.part``), then verified at the destination. Printed:
the send's effective rate as a fraction of the link (goal >= 0.90), the same for a raw
``ssh cat > /dev/null`` stream measured in the same run (what TCP + SSH alone reach on
this link), and the time the destination-side checksum adds (the hook's ``openssl dgst``,
and coreutils' ``sha256sum`` for comparison). Then the CPU the send costs
the machine (both ends: rsync, ssh, sshd, the receiving rsync), in CPU-seconds per GB,
with the hook's cipher order (AES-GCM first) against OpenSSH's default (chacha20-poly1305
first), alternating on an unshaped link.

Needs root (namespaces, tc), openssh-server and rsync. Several runs, medians.

Run: ``.venv/bin/python bench/transfer.py [--gigabytes 2] [--runs 3] [--cpu-runs 5] [--rate-mbit 500]``
"""

from __future__ import annotations

import argparse
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
from tests.sitenet import SiteNetwork

from ccat_operators.hooks.transfer import REMOTE_HASH_COMMANDS, SSH_CIPHERS, SshEndpoint, TransferHook


def machine_cpu_seconds() -> float:
    """CPU-seconds every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def without_cipher_order(argv: list[str]) -> list[str]:
    """``argv`` of the hook with OpenSSH's default cipher order (the ``Ciphers`` option removed)."""
    option = f"-o Ciphers={SSH_CIPHERS} "
    return [word.replace(option, "") for word in argv]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu-runs", type=int, default=5, help="alternated sends of each cipher order")
    parser.add_argument("--rate-mbit", type=int, default=500)
    args = parser.parse_args()
    print(machine.describe())

    work = Path(tempfile.mkdtemp(prefix="ccat-bench-transfer-", dir=os.environ.get("CCAT_BENCH_DIR")))
    network = SiteNetwork(work, site_names=("ccat", "cologne")).start()
    try:
        network.start_sshd("cologne")
        network.shape("ccat", f"{args.rate_mbit}mbit", burst="1mb", latency="100ms")
        link_bytes_per_second = args.rate_mbit * 1e6 / 8

        bundle = work / "ccat" / "buffer" / "data_transfer_packages" / "bench_bundle.tar"
        bundle.parent.mkdir(parents=True)
        with open(bundle, "wb") as stream:
            block = os.urandom(1 << 20)
            for _ in range(int(args.gigabytes * 10**9) // len(block)):
                stream.write(block)
        size = bundle.stat().st_size
        destination = work / "cologne" / "buffer" / "data_transfer_packages" / "bench_bundle.tar.part"

        endpoint = SshEndpoint(network.sites["cologne"].address, 22, "root", str(network.key), check_host_key=False)
        hook = TransferHook("rsync", endpoint=endpoint)
        send = network.argv("ccat", hook.send_argv(bundle, str(destination)))
        raw = network.argv("ccat", hook.remote_argv(["sh", "-c", "cat > /dev/null"]))
        verify = network.argv("ccat", hook.remote_argv([*REMOTE_HASH_COMMANDS["sha256"][0], str(destination)]))
        verify_coreutils = network.argv("ccat", hook.remote_argv(["sha256sum", "--", str(destination)]))

        def timed(argv: list[str], stdin: Path | None = None) -> float:
            with open(stdin or os.devnull, "rb") as source:
                start = time.perf_counter()
                subprocess.run(argv, check=True, stdin=source, capture_output=True)
                return time.perf_counter() - start

        print(f"link: tbf {args.rate_mbit} Mbit/s ({link_bytes_per_second / 1e6:.1f} MB/s); bundle {size / 1e9:.2f} GB")
        sends, raws, verifies, coreutils_verifies = [], [], [], []
        for _ in range(args.runs):
            destination.unlink(missing_ok=True)
            sends.append(timed(send))
            verifies.append(timed(verify))
            coreutils_verifies.append(timed(verify_coreutils))
            raws.append(timed(raw, stdin=bundle))
        send_rate = size / statistics.median(sends)
        raw_rate = size / statistics.median(raws)
        fraction = send_rate / link_bytes_per_second
        print(
            f"rsync over ssh (TransferHook argv): median {statistics.median(sends):.1f} s, "
            f"{send_rate / 1e6:.1f} MB/s runs {[round(t, 1) for t in sends]}"
        )
        print(
            f"raw ssh stream (baseline): {raw_rate / 1e6:.1f} MB/s = {raw_rate / link_bytes_per_second:.2f} of the "
            f"link; rsync reaches {send_rate / raw_rate:.2f} of it"
        )
        print(
            f"destination checksum adds {statistics.median(verifies):.1f} s per bundle "
            f"(openssl dgst) runs {[round(t, 1) for t in verifies]}; sha256sum would add "
            f"{statistics.median(coreutils_verifies):.1f} s runs {[round(t, 1) for t in coreutils_verifies]}"
        )
        print(f"effective rate: {fraction:.2f} of the link (goal >= 0.90) {'PASS' if fraction >= 0.90 else 'FAIL'}")

        network.unshape("ccat")
        gigabytes = size / 1e9

        def cpu_per_gigabyte(argv: list[str]) -> float:
            destination.unlink(missing_ok=True)
            before = machine_cpu_seconds()
            timed(argv)
            return (machine_cpu_seconds() - before) / gigabytes

        default_order = without_cipher_order(send)
        assert default_order != send, "the hook's argv no longer carries the cipher order"
        cpu_per_gigabyte(send)  # warm-up
        ours, openssh = [], []
        for _ in range(args.cpu_runs):
            ours.append(cpu_per_gigabyte(send))
            openssh.append(cpu_per_gigabyte(default_order))
        print(
            f"CPU of a send, whole machine (unshaped link): AES-GCM first median {statistics.median(ours):.2f} "
            f"CPU-s/GB runs {[round(c, 2) for c in ours]}; OpenSSH default order median "
            f"{statistics.median(openssh):.2f} runs {[round(c, 2) for c in openssh]}; "
            f"ratio {statistics.median(openssh) / statistics.median(ours):.2f}x less CPU"
        )
    finally:
        network.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
