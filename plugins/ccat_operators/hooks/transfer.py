"""TransferHook: move one file from this host's buffer to another site's buffer.

Three methods:

``rsync``
    rsync over SSH (the default, and what the tests use). Resumable:
    ``--partial --inplace --append-verify``.
``bbcp``
    The production tool for the long link: parallel streams (``streams``), TCP window
    (``window``) and an end-to-end checksum (``checksum: true``) from the route settings,
    over the same SSH connection. If the binary is absent the route is invalid and says so.
``local``
    Same host (the demo): a plain copy.

The SSH endpoint of a destination is an Airflow SSH connection, read by the SSH
provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHook` (so keys and host keys may
come from a secrets backend) and turned into the options ``ssh`` needs on the command
lines of rsync (``-e``), bbcp (``-T``) and the remote commands: ``key_file``, or
``private_key`` (+ ``private_key_passphrase``) written to a private temporary file while
a command runs; ``host_key`` written to a temporary known_hosts file and enforced (no
other key accepted); ``no_host_key_check`` / ``allow_host_key_change`` (no check);
``conn_timeout`` (``ConnectTimeout``). ssh runs in BatchMode, so a connection with only
a password is refused with a message saying so.

Every command runs in its own process group with a wall-clock limit of
:data:`MIN_WALL_CLOCK` + bytes / :data:`THROUGHPUT_FLOOR` (what it copies or reads);
:meth:`TransferHook.kill` (the send operator's ``on_kill``) ends the running group.
A copy that fails because the destination is full raises :class:`DestinationFullError`,
so the caller can remove the partial file that keeps it full: local, ``ENOSPC`` /
``EDQUOT``; rsync and bbcp, "No space left on device" or "Disk quota exceeded" in their
output or, as that message can be lost (the remote's stderr races the end of the
connection: measured with rsync 3.5 over ssh, about one failure in three says nothing),
a failed copy after which the destination has less room than the rest of the file needs.

Every argv is built by a small pure method so it can be unit-tested without a network;
remote commands are argv lists too, quoted with ``shlex.join`` for the remote shell.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from airflow.sdk import BaseHook

from ccat_operators import checksums, safefs
from ccat_operators.states import TransferMethod

CHUNK = 8 << 20
#: Commands that hash a file at the destination, in order of preference; each prints the
#: hex digest first. ``openssl dgst`` uses the CPU's SHA instructions: 0.8 CPU-s per GB
#: here against 2.9 for coreutils' ``sha256sum`` (9.1, built without them). A destination
#: without the first command (its shell answers :data:`COMMAND_NOT_FOUND`) gets the next.
REMOTE_HASH_COMMANDS = {
    "sha256": (["openssl", "dgst", "-sha256", "-r", "--"], ["sha256sum", "--"]),
    "xxh3_128": (["xxhsum", "-H2", "--"],),
}
#: Exit status of a POSIX shell for a command it cannot find (ssh passes it on; its own errors are 255).
COMMAND_NOT_FOUND = 127

#: Wall-clock limit of every transfer command (copy or remote command), in seconds:
#: ``MIN_WALL_CLOCK + bytes / THROUGHPUT_FLOOR``, bytes being what it copies or reads.
#: Generous on purpose: stalls are caught sooner by the route's ``timeout`` (I/O silence,
#: rsync) and ssh's keep-alives; this limit only ends a command that crawls forever.
MIN_WALL_CLOCK = 900.0  # connection set-up, a busy sshd, a slow remote disk
THROUGHPUT_FLOOR = 1_000_000  # bytes per second (8 Mbit/s): far below any link the pipeline uses
#: Seconds between SIGTERM and SIGKILL when a command's process group is ended.
KILL_GRACE = 5.0
#: ssh's ciphers, in order of preference: AES-GCM first, as every x86-64 server CPU since
#: 2010 (and ARMv8 with its crypto extension) has AES instructions; OpenSSH's own default puts
#: chacha20-poly1305 first, which is faster only on CPUs without them. Every OpenSSH since 6.5
#: (2014) has all of these. ``bench/transfer.py`` measures both orders on the same link.
SSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr"
#: What a command prints (strerror of ENOSPC, EDQUOT) when the destination's disk is full.
DESTINATION_FULL_MESSAGES = ("No space left on device", "Disk quota exceeded")


class InvalidRouteError(RuntimeError):
    """The route's transfer method cannot run here (missing binary, bad settings, unusable connection)."""


class TransferCommandError(RuntimeError):
    """The transfer or a remote command exited non-zero."""


class TransferTimeoutError(TransferCommandError):
    """A command ran past its wall-clock limit and was ended."""


class TransferStoppedError(TransferCommandError):
    """The hook was told to stop (:meth:`TransferHook.kill`, the task's ``on_kill``)."""


class DestinationFullError(TransferCommandError):
    """The destination's disk (or quota) is full: nothing more can be written there until room is made."""


@dataclass(frozen=True)
class SshEndpoint:
    """Where and how ``ssh`` reaches a destination.

    :param key_file: private key file on this host.
    :param private_key: private key text (OpenSSH or PEM, unencrypted), written to a
        private temporary file while a command runs; never shown in ``repr``.
    :param host_key: ``<type> <base64>``: the only host key accepted.
    :param check_host_key: False skips host key checking (not with ``host_key``).
    :param connect_timeout: seconds ssh waits for the connection (``ConnectTimeout``).
    """

    host: str
    port: int = 22
    login: str | None = None
    key_file: str | None = None
    private_key: str | None = field(default=None, repr=False)
    host_key: str | None = None
    check_host_key: bool = True
    connect_timeout: int | None = None

    def __post_init__(self) -> None:
        if self.key_file and self.private_key:
            raise ValueError("an SSH endpoint takes key_file or private_key, not both")
        if self.host_key and not self.check_host_key:
            raise ValueError("a host_key is always checked: drop no_host_key_check")

    @property
    def target(self) -> str:
        return f"{self.login}@{self.host}" if self.login else self.host

    def known_hosts_line(self) -> str:
        """The known_hosts line accepting ``host_key`` for this host and port."""
        if self.host_key is None:
            raise ValueError("no host_key")
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{name} {self.host_key}\n"


@dataclass(frozen=True)
class SshFiles:
    """Temporary files an endpoint's ssh options name (see :func:`ssh_files`)."""

    identity_file: str | None = None
    known_hosts_file: str | None = None


#: No temporary files: for endpoints with neither an inline key nor a host key.
NO_FILES = SshFiles()


@contextmanager
def ssh_files(endpoint: SshEndpoint) -> Iterator[SshFiles]:
    """The endpoint's inline private key and host key as files (mode 0600, in a 0700 directory), removed after."""
    if endpoint.private_key is None and endpoint.host_key is None:
        yield NO_FILES
        return
    directory = Path(tempfile.mkdtemp(prefix="ccat-ssh-"))
    try:
        identity = known_hosts = None
        if endpoint.private_key is not None:
            identity = _write_private(directory / "identity", endpoint.private_key)
        if endpoint.host_key is not None:
            known_hosts = _write_private(directory / "known_hosts", endpoint.known_hosts_line())
        yield SshFiles(identity, known_hosts)
    finally:
        shutil.rmtree(directory)


def _write_private(path: Path, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as stream:
        stream.write(text if text.endswith("\n") else f"{text}\n")  # OpenSSH wants the final newline
    return str(path)


def _unencrypted_key(text: str, passphrase: str | None) -> str:
    """``text`` as an unencrypted OpenSSH private key (ssh in BatchMode cannot ask for a passphrase)."""
    if not passphrase:
        return text
    from cryptography.hazmat.primitives import serialization

    data, password = text.encode(), passphrase.encode()
    for load in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
        try:
            key = load(data, password)
        except TypeError:  # not encrypted after all: usable as it is
            return text
        except ValueError:  # not this format
            continue
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
    raise InvalidRouteError("the connection's private_key cannot be decrypted with its private_key_passphrase")


def ssh_endpoint(ssh_conn_id: str) -> SshEndpoint:
    """The endpoint of an Airflow SSH connection, its extras read by the SSH provider's SSHHook.

    Raises InvalidRouteError for a connection with only a password.
    """
    from airflow.providers.ssh.hooks.ssh import SSHHook

    ssh = SSHHook(ssh_conn_id=ssh_conn_id)  # parses and checks host, port, login and every extra
    private_key = None
    if ssh.pkey is not None:  # SSHHook keeps only the parsed key: ssh needs the text
        extra = ssh.get_connection(ssh_conn_id).extra_dejson
        private_key = _unencrypted_key(extra["private_key"], extra.get("private_key_passphrase"))
    elif ssh.password and not ssh.key_file:
        raise InvalidRouteError(
            f"SSH connection {ssh_conn_id!r} has only a password: rsync, bbcp and the remote commands run ssh in "
            "BatchMode, which cannot type one; give the connection a key (extra key_file or private_key)"
        )
    host_key = f"{ssh.host_key.get_name()} {ssh.host_key.get_base64()}" if ssh.host_key is not None else None
    return SshEndpoint(
        host=ssh.remote_host,
        port=int(ssh.port),
        login=ssh.username,
        key_file=None if private_key else ssh.key_file,
        private_key=private_key,
        host_key=host_key,
        check_host_key=host_key is not None or not (ssh.no_host_key_check or ssh.allow_host_key_change),
        connect_timeout=ssh.conn_timeout,
    )


def _dies_with_this_process() -> list[str]:
    """``setpriv --pdeathsig KILL --`` (util-linux) if present: the command dies with this process.

    A command in a session of its own is out of reach of signals to the worker's process
    group; without this it would keep copying after the worker was killed.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with suppress(ProcessLookupError):  # the group has already gone
        os.killpg(process.pid, signum)


class TransferHook(BaseHook):
    """Send files to, and inspect files at, one destination.

    :param method: ``rsync``, ``bbcp`` or ``local``.
    :param ssh_conn_id: Airflow SSH connection of the destination host (not for ``local``).
    :param settings: route settings (bbcp: ``streams``, ``window``, ``checksum``;
        all: ``timeout`` seconds of I/O silence before giving up, default 600).
    :param endpoint: the destination given directly instead of ``ssh_conn_id``.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "CCAT transfer"

    def __init__(
        self,
        method: str,
        ssh_conn_id: str | None = None,
        settings: dict[str, Any] | None = None,
        *,
        endpoint: SshEndpoint | None = None,
    ) -> None:
        super().__init__()
        if ssh_conn_id is not None and endpoint is not None:
            raise ValueError("give ssh_conn_id or endpoint, not both")
        self.method = TransferMethod(method)
        self.ssh_conn_id = ssh_conn_id
        self.settings = settings or {}
        self._endpoint = endpoint
        self._running: subprocess.Popen | None = None
        self._stopped = False
        self._sizes: dict[str, int] = {}  # remote sizes seen by size(): the checksum's time limit

    # -- configuration ---------------------------------------------------------------

    @property
    def endpoint(self) -> SshEndpoint:
        """The destination's SSH endpoint (read from the connection on first use)."""
        if self._endpoint is None:
            if self.ssh_conn_id is None:
                raise InvalidRouteError(f"method {self.method} needs an SSH connection id for the destination")
            self._endpoint = ssh_endpoint(self.ssh_conn_id)
        return self._endpoint

    def validate(self) -> None:
        """Raise InvalidRouteError if this method cannot run on this host."""
        binary = {TransferMethod.RSYNC: "rsync", TransferMethod.BBCP: "bbcp"}.get(self.method)
        if binary and shutil.which(binary) is None:
            raise InvalidRouteError(
                f"transfer method {self.method} is not usable here: the {binary!r} binary is not on PATH "
                f"(install it on this worker or change the route's method)"
            )

    @staticmethod
    def wall_clock_limit(size_bytes: int) -> float:
        """Seconds a command copying or reading ``size_bytes`` may take in all."""
        return MIN_WALL_CLOCK + size_bytes / THROUGHPUT_FLOOR

    # -- argv builders (pure) ------------------------------------------------------------

    def ssh_argv(self, files: SshFiles = NO_FILES) -> list[str]:
        """``ssh`` with the endpoint's options, no host or command; ``files`` from :func:`ssh_files`."""
        endpoint = self.endpoint
        argv = ["ssh", "-p", str(endpoint.port), "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15",
                "-o", f"Ciphers={SSH_CIPHERS}"]  # fmt: skip
        if endpoint.connect_timeout:
            argv += ["-o", f"ConnectTimeout={int(endpoint.connect_timeout)}"]
        if endpoint.private_key is not None and files.identity_file is None:
            raise ValueError("an inline private key needs its file: build the command inside ssh_files()")
        identity = files.identity_file if endpoint.private_key is not None else endpoint.key_file
        if identity:
            argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        if endpoint.host_key is not None:
            if files.known_hosts_file is None:
                raise ValueError("a host key needs its known_hosts file: build the command inside ssh_files()")
            argv += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={files.known_hosts_file}",
                     "-o", "GlobalKnownHostsFile=/dev/null"]  # fmt: skip
        elif not endpoint.check_host_key:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        return argv

    def send_argv(self, source: Path, destination: str, files: SshFiles = NO_FILES) -> list[str]:
        """The command that copies ``source`` to ``destination`` (a path at the destination)."""
        timeout = str(int(self.settings.get("timeout", 600)))
        if self.method == TransferMethod.RSYNC:
            return [
                "rsync", "--inplace", "--partial", "--append-verify", "--mkpath", "--stats",
                f"--timeout={timeout}", "-e", shlex.join(self.ssh_argv(files)),
                str(source), f"{self.endpoint.target}:{destination}",
            ]  # fmt: skip
        if self.method == TransferMethod.BBCP:
            argv = [
                "bbcp", "-f", "-P", "30",
                "-s", str(int(self.settings.get("streams", 4))),
                "-w", str(self.settings.get("window", "8M")),
                "-T", shlex.join([*self.ssh_argv(files), "-x", "-a", "%I", "%U@%H", "bbcp"]),
            ]  # fmt: skip
            if self.settings.get("checksum", True):
                argv += ["-e", "-E", "md5"]
            return [*argv, str(source), f"{self.endpoint.target}:{destination}"]
        raise InvalidRouteError("the local method copies in-process; it has no command")

    def remote_argv(self, command: list[str], files: SshFiles = NO_FILES) -> list[str]:
        """``ssh host -- command`` with the command quoted for the remote shell."""
        return [*self.ssh_argv(files), self.endpoint.target, "--", shlex.join(command)]

    # -- running commands --------------------------------------------------------------

    def run(
        self, argv: list[str], *, timeout: float, log: IO[str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in its own process group for at most ``timeout`` seconds; output to ``log``.

        Raises TransferTimeoutError past ``timeout`` and TransferStoppedError after
        :meth:`kill` (the group ended in both cases), TransferCommandError on a non-zero
        exit if ``check`` (DestinationFullError if the output says the disk is full).
        Nothing of the group outlives the call, and the command is killed if this process
        dies (``setpriv --pdeathsig``).
        """
        if self._stopped:
            raise TransferStoppedError(f"not running {argv[0]}: the transfer was stopped")
        prefix = _dies_with_this_process()
        if not prefix:
            self.log.warning("setpriv not found: %s would outlive this worker process if it were killed", argv[0])
        process = subprocess.Popen(
            [*prefix, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        self._running = process
        timed_out = False
        try:
            if self._stopped:  # kill() came while the process was starting
                _signal_group(process, signal.SIGTERM)
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                stdout, stderr = self._end(process)
        finally:
            if process.returncode is None:  # interrupted here (KeyboardInterrupt, ...): leave nothing behind
                self._end(process)
            self._running = None
        if log is not None:
            log.write(f"$ {shlex.join(argv)}\n{stdout}{stderr}exit {process.returncode}\n")
            log.flush()
        if timed_out:
            raise TransferTimeoutError(f"{argv[0]} ran longer than its limit of {timeout:.0f} s and was stopped")
        if self._stopped:
            raise TransferStoppedError(f"{argv[0]} was stopped: the task was killed")
        if check and process.returncode != 0:
            if any(message in stderr for message in DESTINATION_FULL_MESSAGES):
                raise DestinationFullError(f"{argv[0]} exited {process.returncode}: the destination is full: "
                                           f"{stderr.strip()[-500:]}")  # fmt: skip
            raise TransferCommandError(f"{argv[0]} exited {process.returncode}: {stderr.strip()[-500:]}")
        return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)

    @staticmethod
    def _end(process: subprocess.Popen) -> tuple[str, str]:
        """SIGTERM the process group, SIGKILL it after :data:`KILL_GRACE`; the output so far."""
        _signal_group(process, signal.SIGTERM)
        try:
            return process.communicate(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            return process.communicate()

    def kill(self) -> None:
        """Stop the running command's process group, and run no further command.

        For ``on_kill``: safe from another thread or a signal handler (no lock, no wait).
        The group gets SIGTERM now and SIGKILL after :data:`KILL_GRACE` if it is still
        running; the call in :meth:`run` then raises TransferStoppedError.
        """
        self._stopped = True
        process = self._running
        if process is None or process.returncode is not None:
            return
        _signal_group(process, signal.SIGTERM)
        hard = threading.Timer(KILL_GRACE, self._kill_hard, args=(process,))
        hard.daemon = True
        hard.start()

    def _kill_hard(self, process: subprocess.Popen) -> None:
        if self._running is process:  # run() has not finished with it: the group is still there
            _signal_group(process, signal.SIGKILL)

    def _remote(self, command: list[str], log: IO[str] | None = None, *, size: int = 0, check: bool = True):
        with ssh_files(self.endpoint) as files:
            return self.run(self.remote_argv(command, files), timeout=self.wall_clock_limit(size), log=log,
                            check=check)  # fmt: skip

    # -- operations -------------------------------------------------------------------

    def guard(self, root: str, relative_dir: str, log: IO[str] | None = None) -> None:
        """Create ``root/relative_dir`` at the destination; refuse it if a link lies below ``root``.

        Raises UnsafePathError if any component of ``relative_dir`` is (or resolves through)
        a symbolic link: nothing is ever written through a link planted in a buffer.
        """
        if self.method == TransferMethod.LOCAL:
            with safefs.directory(Path(root), relative_dir, create=True):
                return
        safefs.parts_of(relative_dir)
        target = f"{root.rstrip('/')}/{relative_dir}"
        self._check_resolves_to_itself(root, target, log)
        self._remote(["mkdir", "-p", "--", target], log)
        self._check_resolves_to_itself(root, target, log)

    def _check_resolves_to_itself(self, root: str, target: str, log: IO[str] | None) -> None:
        output = self._remote(["readlink", "-m", "--", root, target], log).stdout.splitlines()
        if len(output) != 2 or output[1] != f"{output[0].rstrip('/')}/{target[len(root.rstrip('/')) + 1 :]}":
            raise safefs.UnsafePathError(f"{target} at the destination goes through a symbolic link; refusing it")

    def send(self, source: Path, destination: str, log: IO[str]) -> None:
        """Copy ``source`` to ``destination`` (in a directory :meth:`guard` created), output to ``log``.

        The copy may take :meth:`wall_clock_limit` of the source's size; :meth:`kill` stops it.
        Raises DestinationFullError when the destination is full (``destination`` is left
        as far as it got).
        """
        if self.method == TransferMethod.LOCAL:
            try:
                _copy_without_links(source, destination, stopped=lambda: self._stopped)
            except OSError as error:
                if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise DestinationFullError(
                    f"copy of {source} to {destination} failed: the destination is full: {error.strerror}"
                ) from error
            log.write(f"copied {source} -> {destination}\n")
            return
        self.validate()
        size = source.stat().st_size
        with ssh_files(self.endpoint) as files:
            try:
                self.run(self.send_argv(source, destination, files), timeout=self.wall_clock_limit(size), log=log)
            except (TransferTimeoutError, TransferStoppedError, DestinationFullError):
                raise
            except TransferCommandError as error:
                shortfall = self._shortfall(destination, size, log)
                if shortfall:
                    raise DestinationFullError(f"{error}; the destination is full: {shortfall}") from error
                raise

    def _shortfall(self, destination: str, size: int, log: IO[str]) -> str | None:
        """``<free> bytes free in <dir>, <n> more needed`` if ``destination`` has no room to grow to ``size`` bytes.

        None if it has room, or if the destination cannot be asked (the network is down).
        """
        directory = str(PurePosixPath(destination).parent)
        try:
            needed = size - (self.size(destination) or 0)
            free = self.free_bytes(directory)
        except TransferCommandError as error:  # the copy's own failure (e.g. the network) stays what is raised
            log.write(f"could not ask the destination for its free space: {error}\n")
            return None
        if free >= needed:
            return None
        return f"{free} bytes free in {directory}, {needed} more needed"

    def free_bytes(self, directory: str) -> int:
        """Bytes that can still be written in ``directory`` at the destination (as a user, not root)."""
        if self.method == TransferMethod.LOCAL:
            usage = os.statvfs(directory)
            return usage.f_bavail * usage.f_frsize
        blocks, block_size = self._remote(["stat", "-f", "-c", "%a %S", "--", directory]).stdout.split()
        return int(blocks) * int(block_size)

    def size(self, path: str) -> int | None:
        """Size of ``path`` at the destination, or None if it does not exist."""
        if self.method == TransferMethod.LOCAL:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        result = self._remote(["stat", "-c", "%s", "--", path], check=False)
        if result.returncode != 0:
            if "No such file" in result.stderr:
                return None
            raise TransferCommandError(f"stat at destination failed: {result.stderr.strip()}")
        self._sizes[path] = int(result.stdout.strip())
        return self._sizes[path]

    def checksum(self, path: str, algorithm: str) -> str:
        """``algorithm:hex`` of ``path`` at the destination, read there."""
        if self.method == TransferMethod.LOCAL:
            return checksums.file_checksum(Path(path), algorithm)
        commands = REMOTE_HASH_COMMANDS[algorithm]
        for command in commands:
            result = self._remote([*command, path], size=self._sizes.get(path, 0), check=False)
            if result.returncode == COMMAND_NOT_FOUND:
                continue
            digest = result.stdout.split()[:1]
            if result.returncode != 0 or not digest:
                raise TransferCommandError(f"{command[0]} at the destination exited {result.returncode}: "
                                           f"{result.stderr.strip()[-500:]}")  # fmt: skip
            return f"{algorithm}:{digest[0]}"
        raise InvalidRouteError(
            f"the destination has no command to compute {algorithm}: install one of "
            f"{', '.join(command[0] for command in commands)} there"
        )

    def rename(self, source: str, destination: str) -> None:
        """Atomically move ``source`` to ``destination`` at the destination."""
        if self.method == TransferMethod.LOCAL:
            os.replace(source, destination)
            return
        self._remote(["mv", "-fT", "--", source, destination])

    def remove(self, path: str) -> None:
        """Delete one of our own temporary files at the destination (never data)."""
        if not path.endswith(".part"):
            raise ValueError(f"refusing to delete {path}: only temporary .part files are removed")
        if self.method == TransferMethod.LOCAL:
            Path(path).unlink(missing_ok=True)
            return
        self._remote(["rm", "-f", "--", path])


def _copy_without_links(source: Path, destination: str, stopped: Callable[[], bool]) -> None:
    """Copy into a fresh ``destination``: whatever stood there (a link included) is replaced, not written through.

    ``stopped()`` is asked between chunks: True ends the copy with TransferStoppedError.
    """
    with suppress(FileNotFoundError):
        os.unlink(destination)
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with safefs.WriteBehind(fd) as writer, safefs.StreamingFile(source) as reader:
            while chunk := reader.read(CHUNK):
                if stopped():
                    raise TransferStoppedError(f"copy of {source} was stopped: the task was killed")
                writer.write(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
