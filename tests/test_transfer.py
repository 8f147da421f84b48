"""Transfers between sites in their own network namespaces, run by the Airflow tasks (``sites`` fixture)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccat_operators.hooks.transfer import (
    TransferStoppedError,
)
from tests.conftest import REPO
from tests.helpers import apply_topology, live_processes_in_group, ssh_keygen, unguarded, wait_for
from tests.sites import Sites, primary_transfer, sha256

pytestmark = pytest.mark.airflow


def test_bundles_travel_to_every_archive_site_and_unpack(airflow_db, sites: Sites) -> None:
    sites.make_bundles()
    # ccat's worker sends the primary legs; cologne's and us's workers send the fan-out.
    sites.run("ccat", "dag", "ccat_transfer")
    primary = [t for t in sites.transfers() if t["origin_site"] == "ccat"]
    assert primary and {t["status"] for t in primary} == {"COMPLETED"}
    for origin in ("cologne", "us"):
        sites.run(origin, "dag", "ccat_transfer")
    transfers = sites.transfers()
    assert {t["status"] for t in transfers} == {"COMPLETED"}
    bundles = {t["bundle"] for t in transfers}
    for bundle in bundles:
        source = sites.bundle_file("ccat", bundle)
        for site in ("cologne", "us"):
            arrived = sites.bundle_file(site, bundle)
            assert arrived.read_bytes() == source.read_bytes()
    assert not list(sites.data_root.rglob("*.part"))
    logs = sites.db.conn.execute("SELECT * FROM data_transfer_log ORDER BY id").fetchall()
    assert len(logs) == len(transfers) and all(log["succeeded"] for log in logs)
    assert all(Path(log["log_path"]).read_text() for log in logs)

    for site in ("cologne", "us"):
        sites.run(site, "dag", "ccat_unpacking")
    packages = sites.db.conn.execute("SELECT * FROM raw_data_package").fetchall()
    for package in packages:
        for site in ("cologne", "us"):
            tar = sites.data_root / site / "buffer" / package["relative_path"]
            assert sha256(tar) == package["checksum"]
    copies = sites.db.conn.execute(
        "SELECT count(*) AS n FROM physical_copy c JOIN data_location l ON l.id = c.data_location_id "
        "JOIN site s ON s.id = l.site_id WHERE c.raw_data_package_id IS NOT NULL AND s.short_name <> 'ccat'"
    ).fetchone()
    assert copies["n"] == 2 * len(packages)


def write_corrupting_rsync(directory: Path, marker: Path) -> Path:
    """An ``rsync`` that flips one byte of what arrived, the first time it runs."""
    wrapper = directory / "rsync"
    wrapper.write_text(
        "#!/bin/bash\n"
        '/usr/bin/rsync "$@"; rc=$?\n'
        f"if [ $rc -eq 0 ] && [ ! -e {marker} ]; then\n"
        f"  touch {marker}\n"
        '  target="${@: -1}"; target="${target#*:}"\n'
        f"  {sys.executable} -c \"import sys; f = open(sys.argv[1], 'r+b'); f.seek(100); b = f.read(1); "
        f'f.seek(100); f.write(bytes([b[0] ^ 255]))" "$target"\n'
        "fi\n"
        "exit $rc\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def test_byte_corrupted_in_transit_is_detected_and_resent(sites: Sites, tmp_path: Path) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    write_corrupting_rsync(tmp_path, tmp_path / "corrupted-once")
    env = {**sites.env, "PATH": f"{tmp_path}:{sites.env['PATH']}"}

    first = sites.run("ccat", "send", str(transfer["id"]), env=env, check=False)
    assert first.returncode != 0 and "does not match" in first.stderr
    after_first = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert after_first.status == "PENDING"
    assert "size or checksum at the destination does not match" in after_first.failure_reason
    destination = sites.bundle_file(transfer["destination_site"], transfer["bundle"])
    assert not destination.exists() and not Path(f"{destination}.part").exists()

    second = sites.run("ccat", "send", str(transfer["id"]), env=env)
    assert "OUTCOME=sent" in second.stdout
    assert sha256(destination) == transfer["checksum"]
    logs = sites.db.conn.execute(
        "SELECT attempt, succeeded FROM data_transfer_log WHERE data_transfer_id = %s ORDER BY attempt",
        (transfer["id"],),
    ).fetchall()
    assert logs == [{"attempt": 1, "succeeded": False}, {"attempt": 2, "succeeded": True}]


def test_killed_transfer_resumes_to_one_verified_copy(sites: Sites) -> None:
    sites.make_bundles(observations=3, sizes=(300_000,))
    transfer = primary_transfer(sites)
    destination = sites.bundle_file(transfer["destination_site"], transfer["bundle"])
    part = Path(f"{destination}.part")
    sites.network.shape("ccat", "2mbit")
    try:
        argv = sites.network.argv("ccat", [sys.executable, "-m", "tests.site_runner", "send", str(transfer["id"])])
        sender = subprocess.Popen(
            argv, cwd=REPO, env=sites.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 50_000):
            assert time.monotonic() < deadline and sender.poll() is None, "the transfer never got going"
            time.sleep(0.05)
        os.killpg(sender.pid, signal.SIGKILL)
        sender.wait()
    finally:
        sites.network.unshape("ccat")
    assert sites.db.fetch_one("data_transfer", id=transfer["id"]).status == "IN_PROGRESS"
    assert not destination.exists()

    result = sites.run("ccat", "send", str(transfer["id"]))
    assert "OUTCOME=sent" in result.stdout
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.status == "COMPLETED" and row.attempts == 2
    assert sha256(destination) == transfer["checksum"] and not part.exists()
    duplicates = sites.db.conn.execute(
        "SELECT count(*) AS n FROM data_transfer WHERE data_transfer_package_id = %s AND destination_location_id = %s",
        (row.data_transfer_package_id, row.destination_location_id),
    ).fetchone()
    assert duplicates["n"] == 1


def test_retry_finds_a_verified_copy_and_does_not_send_again(sites: Sites) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    sites.run("ccat", "send", str(transfer["id"]))
    # As if the worker died after the rename but before recording COMPLETED.
    with unguarded(sites.db):
        sites.db.conn.execute("UPDATE data_transfer SET status = 'IN_PROGRESS' WHERE id = %s", (transfer["id"],))
    received = sites.network.received_bytes(transfer["destination_site"])
    result = sites.run("ccat", "send", str(transfer["id"]))
    assert "OUTCOME=present" in result.stdout
    size = sites.db.fetch_one("data_transfer", id=transfer["id"]).size_bytes
    assert sites.network.received_bytes(transfer["destination_site"]) - received < size / 2


def test_relay_route_sends_through_the_intermediate_site(sites: Sites, tmp_path: Path) -> None:

    def relay(document: dict) -> None:
        document["sites"]["ccat"]["locations"]["telescope_computer"]["settings"]["package_size_limit"] = "300KB"
        document["sites"]["ccat"]["locations"]["buffer"]["settings"].update(
            bundle_max_age="0s", bundle_size_limit="1MB"
        )
        document["routes"] = {"ccat_to_us": {"type": "RELAY", "from": "ccat", "to": "us", "via": "cologne"}}

    (tmp_path / "relay").mkdir()
    apply_topology(sites.db, tmp_path / "relay", relay)
    sites.make_bundles(observations=4)
    received_at_us = sites.network.received_bytes("us")
    pending = sites.transfers()
    while pending:
        ready = [
            t
            for t in pending
            if t["depends_on_transfer_id"] is None
            or sites.db.fetch_one("data_transfer", id=t["depends_on_transfer_id"]).status == "COMPLETED"
        ]
        for transfer in ready:
            sites.run(transfer["origin_site"], "send", str(transfer["id"]))
        pending = [t for t in sites.transfers() if t["status"] != "COMPLETED"]
    relayed = [t for t in sites.transfers() if t["route_id"] is not None]
    assert relayed, "no bundle took the RELAY route"
    legs = {(t["origin_site"], t["destination_site"]) for t in sites.transfers()}
    assert ("ccat", "us") not in legs and ("cologne", "us") in legs
    for transfer in relayed:
        assert (
            sites.bundle_file("us", transfer["bundle"]).read_bytes()
            == sites.bundle_file("ccat", transfer["bundle"]).read_bytes()
        )
    sizes = sum(sites.bundle_file("us", b).stat().st_size for b in {t["bundle"] for t in sites.transfers()})
    assert sites.network.received_bytes("us") - received_at_us >= sizes


def test_a_link_in_the_destination_path_fails_the_transfer_at_once(sites: Sites, tmp_path: Path) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    outside = sites.data_root / site / "outside"  # inside the site's namespace view, outside its buffer
    outside.mkdir(parents=True)
    (sites.data_root / site / "buffer").mkdir(parents=True, exist_ok=True)
    (sites.data_root / site / "buffer" / "data_transfer_packages").symlink_to(outside, target_is_directory=True)

    result = sites.run("ccat", "send", str(transfer["id"]), check=False)
    assert result.returncode != 0 and "symbolic link" in result.stderr
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.status == "FAILED" and "goes through a symbolic link" in row.failure_reason
    assert list(outside.iterdir()) == []


# -- a full destination -----------------------------------------------------------------------


@dataclass
class SshdDisk:
    """A tmpfs mounted in a site's sshd's mount namespace (``ip netns exec`` gave it its own).

    What the sshd runs (rsync's receiver, stat, sha256sum, mv, rm) sees the tmpfs; this
    test process sees that view through ``/proc/<sshd pid>/root``.
    """

    pid: int
    directory: Path

    def enter(self, *argv: str) -> None:
        subprocess.run(["nsenter", f"--target={self.pid}", "--mount", "--", *argv], check=True)

    def resize(self, size: int) -> None:
        self.enter("mount", "-o", f"remount,size={size}", str(self.directory))

    def seen(self, path: Path) -> Path:
        """``path`` as the site's sshd sees it."""
        return Path(f"/proc/{self.pid}/root{path}")


@contextmanager
def sshd_disk(sites: Sites, site: str, directory: Path, size: int) -> Iterator[SshdDisk]:
    """A disk of ``size`` bytes at ``directory`` of ``site`` as its sshd sees it, for the block."""
    directory.mkdir(parents=True, exist_ok=True)
    disk = SshdDisk(sites.network.sites[site].sshd.pid, directory)
    disk.enter("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory))
    try:
        yield disk
    finally:
        disk.enter("umount", str(directory))


@pytest.mark.parametrize("message", ["said", "lost"])
def test_a_full_destination_keeps_no_partial_copy_and_the_next_try_sends_when_there_is_room(
    sites: Sites, tmp_path: Path, message: str
) -> None:
    """rsync's "No space left on device" can be lost (the remote's stderr races the connection's end)."""
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    destination = sites.bundle_file(site, transfer["bundle"])
    part = Path(f"{destination}.part")
    size = sites.bundle_file("ccat", transfer["bundle"]).stat().st_size
    env = sites.env
    if message == "lost":
        wrapper = tmp_path / "rsync"
        wrapper.write_text('#!/bin/bash\nexec /usr/bin/rsync "$@" 2>/dev/null\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        env = {**sites.env, "PATH": f"{tmp_path}:{sites.env['PATH']}"}
    with sshd_disk(sites, site, destination.parent, size // 2) as disk:
        first = sites.run("ccat", "send", str(transfer["id"]), env=env, check=False)
        assert first.returncode != 0 and "DestinationFullError" in first.stderr
        assert "the partial copy" in first.stderr and "was removed" in first.stderr
        assert not disk.seen(part).exists()  # the buffer is not kept full by a copy that cannot finish
        assert list(disk.seen(destination.parent).iterdir()) == []
        row = sites.db.fetch_one("data_transfer", id=transfer["id"])
        assert row.status == "PENDING" and "the destination is full" in row.failure_reason
        if message == "lost":  # told by the room left at the destination
            assert "bytes free in" in row.failure_reason and "more needed" in row.failure_reason

        disk.resize(2 * size + 2**20)
        second = sites.run("ccat", "send", str(transfer["id"]), env=env)
        assert "OUTCOME=sent" in second.stdout
        assert sha256(disk.seen(destination)) == transfer["checksum"] and not disk.seen(part).exists()
    assert sites.db.fetch_one("data_transfer", id=transfer["id"]).status == "COMPLETED"


def test_a_local_copy_into_a_full_destination_keeps_no_partial_copy(ops_db, data_root: Path, tmp_path: Path) -> None:
    """The ``local`` method (the demo's): ENOSPC from the copy itself."""
    from ccat_operators import bundling, transfer
    from ccat_operators.hooks.transfer import DestinationFullError
    from tests import pipeline

    pipeline.setup(ops_db, tmp_path)
    pipeline.bundle(ops_db, observations=1)
    row = next(t for t in ops_db.conn.execute("SELECT id FROM data_transfer WHERE depends_on_transfer_id IS NULL"))
    sent = ops_db.fetch_one("data_transfer", id=row["id"])
    destination = Path(sent.destination_root) / bundling.bundle_path(sent.bundle)
    part = Path(f"{destination}.part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={sent.size_bytes // 2}", "tmpfs", str(destination.parent)],
                   check=True)  # fmt: skip
    try:
        with pytest.raises(DestinationFullError, match="the destination is full"):
            transfer.send_transfer(ops_db, sent.id)
        assert not part.exists() and list(destination.parent.iterdir()) == []
        failed = ops_db.fetch_one("data_transfer", id=sent.id)
        assert failed.status == "PENDING" and "the destination is full" in failed.failure_reason
        subprocess.run(["mount", "-o", f"remount,size={2 * sent.size_bytes + 2**20}", str(destination.parent)],
                       check=True)  # fmt: skip
        assert transfer.send_transfer(ops_db, sent.id) == "sent"
        assert sha256(destination) == sent.checksum and not part.exists()
    finally:
        subprocess.run(["umount", str(destination.parent)], check=True)


# -- SSH connections through the SSH provider's hook ----------------------------------------


def write_slow_rsync(directory: Path, pidfile: Path) -> Path:
    """An ``rsync`` that notes its pid (= its process group) and copies at 20 KB/s."""
    wrapper = directory / "rsync"
    wrapper.write_text(f'#!/bin/bash\necho $$ > {pidfile}\nexec /usr/bin/rsync --bwlimit=20 "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper


def remote_rsyncs(part: Path) -> list[str]:
    """Command lines of live processes (any namespace) that mention ``part``: the receiving rsync."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone while we looked
            continue
        if str(part) in text:
            found.append(text)
    return found


def test_on_kill_stops_a_running_copy_and_leaves_no_process(
    sites: Sites, ops_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clearing a running send task: Airflow calls on_kill (here from another thread) while execute copies."""
    from ccat_operators.operators.transfer import SendTransferOperator

    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    part = Path(f"{sites.bundle_file(site, transfer['bundle'])}.part")
    pidfile = tmp_path / "rsync.pid"
    write_slow_rsync(tmp_path, pidfile)
    sites.network.host_address()  # this test process (root namespace) reaches the sites' sshd itself
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("AIRFLOW_CONN_CCAT_OPS_DB", ops_db_url)
    monkeypatch.setenv(f"AIRFLOW_CONN_CCAT_SSH_{site.upper()}_BUFFER", sites.network.ssh_connection(site))
    operator = SendTransferOperator(task_id="send", location="ccat/buffer", transfer_id=transfer["id"], retries=3)
    killed_at = []

    def kill_while_copying() -> None:
        wait_for(pidfile)
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        killed_at.append(time.monotonic())
        operator.on_kill()

    killer = threading.Thread(target=kill_while_copying)
    killer.start()
    with pytest.raises(TransferStoppedError, match="rsync was stopped"):
        ti = SimpleNamespace(dag_id="ccat_transfer", task_id="send", run_id="manual__1", map_index=-1, try_number=1)
        operator.execute({"ti": ti})
    stopped_after = time.monotonic() - killed_at[0]
    killer.join()
    assert stopped_after < 3, f"the copy went on {stopped_after:.1f} s after on_kill"
    size = sites.bundle_file("ccat", transfer["bundle"]).stat().st_size
    assert 0 < part.stat().st_size < size  # really killed mid-copy; the part is kept for rsync to resume
    assert live_processes_in_group(int(pidfile.read_text())) == []  # rsync and its ssh
    deadline = time.monotonic() + 10
    while remote_rsyncs(part):  # the receiving rsync at the destination ends when its connection does
        assert time.monotonic() < deadline, remote_rsyncs(part)
        time.sleep(0.1)
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.status == "PENDING" and "was stopped: the task was killed" in row.failure_reason

    assert "OUTCOME=sent" in sites.run("ccat", "send", str(transfer["id"])).stdout  # the next try completes it
    assert sha256(sites.bundle_file(site, transfer["bundle"])) == transfer["checksum"]


def host_key_of(sites: Sites, site: str) -> str:
    return (sites.network.directory / site / "ssh_host_ed25519_key.pub").read_text()


def send_with_connection(sites: Sites, transfer: dict, extra: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """One send try at ccat whose destination connection has ``extra`` (and no key_file unless given)."""
    site = transfer["destination_site"]
    conn = {"conn_type": "ssh", "host": sites.network.sites[site].address, "port": 22, "login": "root", "extra": extra}
    temp = tmp_path / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**sites.env, f"AIRFLOW_CONN_CCAT_SSH_{site.upper()}_BUFFER": json.dumps(conn), "TMPDIR": str(temp)}
    result = sites.run("ccat", "send", str(transfer["id"]), env=env, check=False)
    assert list(temp.glob("ccat-ssh-*")) == []  # the key and known_hosts files are gone
    return result


@pytest.mark.parametrize("passphrase", ["", "correct horse"], ids=["plain", "with-passphrase"])
def test_a_private_key_given_inline_in_the_connection_works_end_to_end(
    sites: Sites, tmp_path: Path, passphrase: str
) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    key = sites.network.key
    if passphrase:  # a key only this test has: nothing but the inline text can log in with it
        key = ssh_keygen(tmp_path / "id_inline", passphrase=passphrase)
        with open(sites.network.directory / site / "authorized_keys", "a") as authorized:
            authorized.write(key.with_suffix(".pub").read_text())
    extra = {"private_key": key.read_text(), "host_key": host_key_of(sites, site)}
    if passphrase:
        extra["private_key_passphrase"] = passphrase
    result = send_with_connection(sites, transfer, extra, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "OUTCOME=sent" in result.stdout
    assert sha256(sites.bundle_file(site, transfer["bundle"])) == transfer["checksum"]


def test_a_wrong_host_key_refuses_the_connection(sites: Sites, tmp_path: Path) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    impostor = ssh_keygen(tmp_path / "impostor").with_suffix(".pub").read_text()
    extra = {"key_file": str(sites.network.key), "host_key": impostor}
    result = send_with_connection(sites, transfer, extra, tmp_path)
    assert result.returncode != 0
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.status == "PENDING" and "Host key verification failed" in row.failure_reason
    assert not sites.bundle_file(transfer["destination_site"], transfer["bundle"]).parent.exists()


def test_ssh_to_a_site_uses_aes_gcm_not_openssh_default_chacha20(sites: Sites) -> None:
    """The cipher order of SSH_CIPHERS reaches the wire: the sshd agrees on AES-GCM (the CPU's AES instructions)."""
    from ccat_operators.hooks.transfer import SshEndpoint, TransferHook

    site = sites.network.sites["cologne"]
    endpoint = SshEndpoint(site.address, 22, "root", str(sites.network.key), check_host_key=False)
    ssh, *rest = TransferHook("rsync", endpoint=endpoint).remote_argv(["true"])
    result = subprocess.run(sites.network.argv("ccat", [ssh, "-v", *rest]), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kex: client->server cipher: aes128-gcm@openssh.com" in result.stderr, result.stderr[-2000:]


def test_the_destination_hashes_with_openssl_and_falls_back_where_it_is_missing(
    sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sha256 at the destination: ``openssl dgst`` (the CPU's SHA instructions), else the next command."""
    from ccat_operators.hooks import transfer as hooks

    site = sites.network.sites["cologne"]
    sites.network.host_address()  # this test process (root namespace) reaches the site's sshd itself
    endpoint = hooks.SshEndpoint(site.address, 22, "root", str(sites.network.key), check_host_key=False,
                                 connect_timeout=10)  # fmt: skip
    hook = hooks.TransferHook("rsync", endpoint=endpoint)
    path = sites.data_root / "cologne" / "buffer" / "hashed me.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(300_000))
    expected = sha256(path)
    ran: list[str] = []
    remote = hooks.TransferHook._remote

    def noting_each_command(self, command: list[str], *args, **kwargs):
        ran.append(command[0])
        return remote(self, command, *args, **kwargs)

    monkeypatch.setattr(hooks.TransferHook, "_remote", noting_each_command)

    assert hook.checksum(str(path), "sha256") == expected
    assert ran == ["openssl"]

    ran.clear()
    monkeypatch.setitem(hooks.REMOTE_HASH_COMMANDS, "sha256", (["ccat-no-such-hasher"], ["sha256sum", "--"]))
    assert hook.checksum(str(path), "sha256") == expected
    assert ran == ["ccat-no-such-hasher", "sha256sum"]

    monkeypatch.setitem(hooks.REMOTE_HASH_COMMANDS, "sha256", (["ccat-no-such-hasher"],))
    with pytest.raises(
        hooks.InvalidRouteError, match="no command to compute sha256: install one of ccat-no-such-hasher"
    ):
        hook.checksum(str(path), "sha256")
    with pytest.raises(hooks.TransferCommandError, match="openssl at the destination exited 1"):
        monkeypatch.setitem(hooks.REMOTE_HASH_COMMANDS, "sha256", (["openssl", "dgst", "-sha256", "-r", "--"],))
        hook.checksum(str(path.with_name("missing.bin")), "sha256")
