"""TransferHook: its commands, its SSH options from the connection, its time limits and kills (no network)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ccat_operators.hooks.transfer import (
    SSH_CIPHERS,
    DestinationFullError,
    InvalidRouteError,
    SshEndpoint,
    SshFiles,
    TransferHook,
    TransferStoppedError,
    TransferTimeoutError,
    ssh_endpoint,
    ssh_files,
)
from tests.helpers import connection, live_processes_in_group, ssh_keygen, wait_for

pytestmark = pytest.mark.airflow


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
    assert argv[argv.index("-e") + 1].startswith(
        f"ssh -p 22 -o BatchMode=yes -o ServerAliveInterval=15 -o Ciphers={SSH_CIPHERS} -i '/k ey'"
    )
    assert argv[-2:] == ["/b/x.tar", "root@10.0.0.2:/d/x.tar.part"]
    assert hook.remote_argv(["rm", "-f", "--", "/d/a b.part"])[-1] == "rm -f -- '/d/a b.part'"


def test_ssh_options_of_an_inline_key_a_host_key_and_a_connect_timeout() -> None:
    endpoint = SshEndpoint("lta.example.org", 2222, "ccat", private_key="-----BEGIN...", host_key="ssh-ed25519 AAAA",
                           connect_timeout=7)  # fmt: skip
    hook = TransferHook("rsync", endpoint=endpoint)
    files = SshFiles("/run/k/identity", "/run/k/known_hosts")
    argv = hook.ssh_argv(files)
    assert argv[:11] == ["ssh", "-p", "2222", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15",
                         "-o", f"Ciphers={SSH_CIPHERS}", "-o", "ConnectTimeout=7"]  # fmt: skip
    assert argv[11:] == [
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


# -- a full destination ---------------------------------------------------------------------


def test_a_local_copy_into_a_full_disk_says_the_destination_is_full(tmp_path: Path) -> None:
    source = tmp_path / "bundle.tar"
    source.write_bytes(os.urandom(300_000))
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(disk)], check=True)
    try:
        hook = TransferHook("local")
        with pytest.raises(DestinationFullError, match="the destination is full: No space left on device"):
            hook.send(source, str(disk / "bundle.tar.part"), io.StringIO())
        assert hook.free_bytes(str(disk)) < source.stat().st_size
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_command_saying_the_disk_is_full_raises_destination_full() -> None:
    hook = TransferHook("local")
    with pytest.raises(DestinationFullError, match="the destination is full: .*Disk quota exceeded"):
        hook.run(["bash", "-c", "echo 'write failed: Disk quota exceeded (122)' >&2; exit 11"], timeout=10)
