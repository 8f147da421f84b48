"""Transfers between sites in their own network namespaces, run by the Airflow tasks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ccat_dev.postgres import LocalPostgres
from ccat_operators import bundling, packaging, routing
from ccat_operators.hooks.transfer import (
    InvalidRouteError,
    SshEndpoint,
    SshFiles,
    TransferHook,
    TransferStoppedError,
    TransferTimeoutError,
    ssh_endpoint,
    ssh_files,
)
from ccat_operators.opsdb import OpsDb
from tests.conftest import REPO
from tests.helpers import apply_topology, file_random_observation, location_row, unguarded
from tests.sitenet import SiteNetwork, environment_for_sites

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.utils import db

    db.resetdb()


@pytest.fixture
def sites(
    ops_db: OpsDb,
    ops_db_url: str,
    postgres_server: LocalPostgres,
    site_network: SiteNetwork,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Example topology on the site network; bundles made at ccat and routed."""

    def fast(document: dict) -> None:
        document["sites"]["ccat"]["locations"]["telescope_computer"]["settings"]["package_size_limit"] = "300KB"
        document["sites"]["ccat"]["locations"]["buffer"]["settings"].update(
            bundle_max_age="0s", bundle_size_limit="1MB"
        )

    _, topology_file = apply_topology(ops_db, tmp_path, fast)
    monkeypatch.setenv("CCAT_TOPOLOGY", str(topology_file))
    dbname = ops_db_url.rsplit("/", 1)[1]
    env = environment_for_sites(site_network, postgres_server.socket_url(dbname))
    return Sites(ops_db, site_network, env, data_root)


class Sites:
    def __init__(self, db: OpsDb, network: SiteNetwork, env: dict[str, str], data_root: Path) -> None:
        self.db, self.network, self.env, self.data_root = db, network, env, data_root

    def make_bundles(self, observations: int = 2, sizes: tuple[int, ...] = (120_000, 90_000, 150_000)) -> dict:
        source = location_row(self.db, "ccat/telescope_computer")
        filed = {}
        for minute in range(observations):
            filed |= file_random_observation(self.db, Path(source["root_path"]), list(sizes), minute=minute)
        packaging.plan_packages(self.db, source)
        assert packaging.write_packages(self.db, source).failed == {}
        buffer = location_row(self.db, "ccat/buffer")
        bundling.plan_bundles(self.db, buffer)
        assert bundling.write_bundles(self.db, buffer).failed == {}
        routing.route_bundles(self.db, buffer)
        return filed

    def run(self, site: str, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        argv = self.network.argv(site, [sys.executable, "-m", "tests.site_runner", *args])
        result = subprocess.run(argv, cwd=REPO, env=env or self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{args} in {site} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def transfers(self) -> list[dict]:
        return self.db.conn.execute(
            "SELECT t.*, ds.short_name AS destination_site, os.short_name AS origin_site, d.name AS bundle, "
            "d.checksum FROM data_transfer t JOIN data_transfer_package d ON d.id = t.data_transfer_package_id "
            "JOIN data_location dl ON dl.id = t.destination_location_id JOIN site ds ON ds.id = dl.site_id "
            "JOIN data_location ol ON ol.id = t.origin_location_id JOIN site os ON os.id = ol.site_id ORDER BY t.id"
        ).fetchall()

    def bundle_file(self, site: str, bundle: str) -> Path:
        return self.data_root / site / "buffer" / bundling.bundle_path(bundle)


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


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


def primary_transfer(sites: Sites) -> dict:
    return next(t for t in sites.transfers() if t["origin_site"] == "ccat")


def test_byte_corrupted_in_transit_is_detected_and_resent(sites: Sites, tmp_path: Path) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    write_corrupting_rsync(tmp_path, tmp_path / "corrupted-once")
    env = {**sites.env, "PATH": f"{tmp_path}:{sites.env['PATH']}"}

    first = sites.run("ccat", "send", str(transfer["id"]), env=env, check=False)
    assert first.returncode != 0 and "does not match" in first.stderr
    after_first = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert after_first["status"] == "PENDING"
    assert "size or checksum at the destination does not match" in after_first["failure_reason"]
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


def test_unpack_retried_after_a_forced_failure_sends_nothing_again(sites: Sites) -> None:
    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    sites.run("ccat", "send", str(transfer["id"]))
    blocker = sites.data_root / site / "buffer" / "raw_data_packages"
    blocker.write_text("not a directory")  # the unpack cannot create its output
    failed = sites.run(site, "unpack", f"{site}/buffer", check=False)
    assert failed.returncode != 0
    assert sites.db.fetch_one("data_transfer", id=transfer["id"]).unpack_status == "PENDING"
    blocker.unlink()

    received = sites.network.received_bytes(site)
    sent_before = sites.network.received_bytes("ccat")
    result = sites.run(site, "unpack", f"{site}/buffer")
    assert "UNPACKED=1" in result.stdout
    assert sites.network.received_bytes(site) - received < 2_000  # no bundle bytes crossed the network
    assert sites.network.received_bytes("ccat") - sent_before < 2_000
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.unpack_status == "COMPLETED" and row.attempts == 1
    packages = sites.db.fetch_all("packages_of_bundle_by_id", bundle_id=row.data_transfer_package_id)
    for package in packages:
        assert sha256(sites.data_root / site / "buffer" / package.relative_path) == package.checksum


MALICIOUS = {
    "absolute": (lambda info: setattr(info, "name", "/tmp/ccat-evil.tar"), "has an absolute path"),
    "dotdot": (lambda info: setattr(info, "name", "../../evil.tar"), "contains '..'"),
    "symlink": (
        lambda info: (setattr(info, "type", tarfile.SYMTYPE), setattr(info, "linkname", "/etc/passwd")),
        "is a link",
    ),
    "hardlink": (
        lambda info: (setattr(info, "type", tarfile.LNKTYPE), setattr(info, "linkname", "/etc/shadow")),
        "is a link",
    ),
    "device": (
        lambda info: (setattr(info, "type", tarfile.CHRTYPE), setattr(info, "devmajor", 1)),
        "is a device or FIFO",
    ),
    "stranger": (
        lambda info: setattr(info, "name", "raw_data_packages/someone_else.tar"),
        "is not expected in this archive",
    ),
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_malicious_bundle_is_refused(sites: Sites, kind: str) -> None:
    from ccat_operators import unpacking

    sites.make_bundles(observations=1)
    transfer = primary_transfer(sites)
    site = transfer["destination_site"]
    sites.run("ccat", "send", str(transfer["id"]))
    destination = sites.bundle_file(site, transfer["bundle"])
    packages = sites.db.fetch_all("packages_of_bundle_by_id", bundle_id=transfer["data_transfer_package_id"])
    mutate, reason = MALICIOUS[kind]
    with tarfile.open(destination, "w") as archive:
        for index, package in enumerate(packages):
            path = sites.data_root / "ccat" / "buffer" / package.relative_path
            info = archive.gettarinfo(str(path), arcname=package.relative_path)
            if index == 0:
                mutate(info)
            if info.isreg():
                with open(path, "rb") as stream:
                    archive.addfile(info, stream)
            else:
                archive.addfile(info)
    # The bundle's recorded checksum matches the doctored tar: only the member check can catch it.
    sites.db.conn.execute(
        "UPDATE data_transfer_package SET checksum = %s WHERE id = %s",
        (sha256(destination), transfer["data_transfer_package_id"]),
    )
    result = unpacking.unpack_arrived(sites.db, location_row(sites.db, f"{site}/buffer"))
    assert list(result.failed) == [transfer["bundle"]]
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row.unpack_status == "FAILED" and reason in row.unpack_failure_reason
    assert not Path("/tmp/ccat-evil.tar").exists()
    assert not list((sites.data_root / site).rglob("*.part"))
    assert not (sites.data_root / site / "buffer" / "raw_data_packages").exists() or not list(
        (sites.data_root / site / "buffer" / "raw_data_packages").rglob("*.tar")
    )


def test_bbcp_command_and_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = SshEndpoint("lta.example.org", 2222, "ccat", "/keys/id", check_host_key=True)
    hook = TransferHook("bbcp", settings={"streams": 8, "window": "16M", "checksum": True}, endpoint=endpoint)
    argv = hook.send_argv(Path("/buffer/b.tar"), "/remote/b.tar.part")
    assert argv[:8] == ["bbcp", "-f", "-P", "30", "-s", "8", "-w", "16M"]
    assert argv[8] == "-T" and argv[9].startswith("ssh -p 2222 -o BatchMode=yes")
    assert argv[-4:] == ["-E", "md5", "/buffer/b.tar", "ccat@lta.example.org:/remote/b.tar.part"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidRouteError, match="transfer method bbcp is not usable here: the 'bbcp' binary"):
        hook.validate()


def test_rsync_command_quotes_the_ssh_options() -> None:
    hook = TransferHook("rsync", endpoint=SshEndpoint("10.0.0.2", 22, "root", "/k ey", check_host_key=False))
    argv = hook.send_argv(Path("/b/x.tar"), "/d/x.tar.part")
    assert argv[0] == "rsync" and "--append-verify" in argv
    assert argv[argv.index("-e") + 1].startswith("ssh -p 22 -o BatchMode=yes -o ServerAliveInterval=15 -i '/k ey'")
    assert argv[-2:] == ["/b/x.tar", "root@10.0.0.2:/d/x.tar.part"]
    assert hook.remote_argv(["rm", "-f", "--", "/d/a b.part"])[-1] == "rm -f -- '/d/a b.part'"


def test_relay_route_sends_through_the_intermediate_site(sites: Sites, tmp_path: Path) -> None:
    from tests.helpers import apply_topology

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


# -- SSH connections through the SSH provider's hook ----------------------------------------


def ssh_keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)
    return path


def test_ssh_options_of_an_inline_key_a_host_key_and_a_connect_timeout() -> None:
    endpoint = SshEndpoint("lta.example.org", 2222, "ccat", private_key="-----BEGIN...", host_key="ssh-ed25519 AAAA",
                           connect_timeout=7)  # fmt: skip
    hook = TransferHook("rsync", endpoint=endpoint)
    files = SshFiles("/run/k/identity", "/run/k/known_hosts")
    argv = hook.ssh_argv(files)
    assert argv[:9] == ["ssh", "-p", "2222", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15",
                        "-o", "ConnectTimeout=7"]  # fmt: skip
    assert argv[9:] == [
        "-i", "/run/k/identity", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=/run/k/known_hosts",
        "-o", "GlobalKnownHostsFile=/dev/null",
    ]  # fmt: skip
    assert "private_key" not in repr(endpoint) and "BEGIN" not in repr(endpoint)
    assert endpoint.known_hosts_line() == "[lta.example.org]:2222 ssh-ed25519 AAAA\n"
    with pytest.raises(ValueError, match="inside ssh_files"):
        hook.ssh_argv()  # the key's file is made by ssh_files(): never an argv without it
    with pytest.raises(ValueError, match="a host_key is always checked"):
        SshEndpoint("h", host_key="ssh-ed25519 AAAA", check_host_key=False)


def test_ssh_files_are_private_and_removed_afterwards(tmp_path: Path) -> None:
    endpoint = SshEndpoint("10.0.0.2", 22, "root", private_key="KEY TEXT", host_key="ssh-ed25519 AAAA")
    with ssh_files(endpoint) as files:
        identity, known_hosts = Path(files.identity_file), Path(files.known_hosts_file)
        assert identity.read_text() == "KEY TEXT\n" and known_hosts.read_text() == "10.0.0.2 ssh-ed25519 AAAA\n"
        assert stat.S_IMODE(identity.stat().st_mode) == 0o600 and stat.S_IMODE(known_hosts.stat().st_mode) == 0o600
        assert stat.S_IMODE(identity.parent.stat().st_mode) == 0o700
    assert not identity.parent.exists()
    with pytest.raises(RuntimeError, match="boom"), ssh_files(endpoint) as files:
        raise RuntimeError("boom")
    assert not Path(files.identity_file).parent.exists()
    with ssh_files(SshEndpoint("h", key_file="/k")) as files:
        assert files == SshFiles()  # nothing to write


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "ssh", **fields}))
    return conn_id


def test_endpoint_from_the_connection_reads_what_the_ssh_provider_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives import serialization

    host_key = (ssh_keygen(tmp_path / "host").with_suffix(".pub")).read_text()
    plain = ssh_keygen(tmp_path / "plain").read_text()
    extra = {"private_key": plain, "host_key": host_key, "conn_timeout": "7"}
    endpoint = ssh_endpoint(connection(monkeypatch, "inline", host="lta", port=2222, login="ccat", extra=extra))
    assert (endpoint.host, endpoint.port, endpoint.login, endpoint.key_file) == ("lta", 2222, "ccat", None)
    assert endpoint.private_key == plain and endpoint.connect_timeout == 7 and endpoint.check_host_key
    assert endpoint.host_key == " ".join(host_key.split()[:2])

    encrypted = ssh_keygen(tmp_path / "encrypted", passphrase="correct horse").read_text()
    extra = {"private_key": encrypted, "private_key_passphrase": "correct horse"}
    endpoint = ssh_endpoint(connection(monkeypatch, "encrypted", host="lta", login="ccat", extra=extra))
    decrypted = endpoint.private_key
    assert decrypted != encrypted and serialization.load_ssh_private_key(decrypted.encode(), None)

    extra = {"key_file": "/keys/id", "no_host_key_check": "true"}
    endpoint = ssh_endpoint(connection(monkeypatch, "keyfile", host="lta", extra=extra))
    assert endpoint.key_file == "/keys/id" and not endpoint.check_host_key and endpoint.port == 22
    endpoint = ssh_endpoint(connection(monkeypatch, "changing", host="lta", extra={"allow_host_key_change": "true"}))
    assert not endpoint.check_host_key

    with pytest.raises(InvalidRouteError, match="has only a password: .* BatchMode"):
        ssh_endpoint(connection(monkeypatch, "password", host="lta", login="ccat", password="secret"))
    hook = TransferHook("rsync", ssh_conn_id=connection(monkeypatch, "password2", host="lta", password="secret"))
    with pytest.raises(InvalidRouteError, match="only a password"):
        hook.send_argv(Path("/b/x.tar"), "/d/x.tar.part")


# -- process groups, time limits, kill -------------------------------------------------------


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is ``pgid``."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_command_past_its_time_limit_is_ended_with_its_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    hook = TransferHook("local")
    started = time.monotonic()
    with pytest.raises(TransferTimeoutError, match="ran longer than its limit of 1 s"):
        hook.run(["bash", "-c", f"echo $$ > {pidfile}; sleep 300 & sleep 301 & wait"], timeout=1)
    assert time.monotonic() - started < 4
    assert live_processes_in_group(int(pidfile.read_text())) == []
    assert hook.run(["true"], timeout=10).returncode == 0  # a time-out does not stop the hook


def test_kill_from_another_thread_ends_even_a_command_that_ignores_sigterm(tmp_path: Path) -> None:
    from ccat_operators.hooks import transfer as transfer_hook

    pidfile = tmp_path / "pid"
    hook = TransferHook("local")
    killed_at = []

    def kill() -> None:
        wait_for(pidfile)
        killed_at.append(time.monotonic())
        hook.kill()

    killer = threading.Thread(target=kill)
    killer.start()
    with pytest.raises(TransferStoppedError, match="bash was stopped"):
        hook.run(["bash", "-c", f"trap '' TERM; echo $$ > {pidfile}; sleep 300 & wait"], timeout=600)
    killer.join()
    assert time.monotonic() - killed_at[0] < transfer_hook.KILL_GRACE + 3  # SIGTERM ignored: SIGKILL after the grace
    assert live_processes_in_group(int(pidfile.read_text())) == []
    with pytest.raises(TransferStoppedError, match="not running true"):
        hook.run(["true"], timeout=10)  # a killed hook starts nothing more


def test_a_killed_local_copy_stops_and_on_kill_before_execute_does_nothing(tmp_path: Path) -> None:
    import io

    from ccat_operators.operators.transfer import SendTransferOperator

    operator = SendTransferOperator(task_id="send", location="ccat/buffer", transfer_id=1)
    assert operator.transfer_hook is None  # no hook before execute()
    operator.on_kill()
    source = tmp_path / "bundle.tar"
    source.write_bytes(os.urandom(3 << 20))
    hook = TransferHook("local")
    hook.kill()
    with pytest.raises(TransferStoppedError, match="copy of .* was stopped"):
        hook.send(source, str(tmp_path / "bundle.tar.part"), io.StringIO())


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
        operator.execute({"ti": SimpleNamespace(try_number=1)})
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
