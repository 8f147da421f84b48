"""TransferHook: move one file from this host's buffer to another site's buffer.

Three methods:

``rsync``
    rsync over SSH (the default, and what the tests use). The SSH endpoint is an Airflow
    SSH connection per destination (host, port, login, ``key_file`` and
    ``no_host_key_check`` extras). Resumable: ``--partial --inplace --append-verify``.
``bbcp``
    The production tool for the long link: parallel streams (``streams``), TCP window
    (``window``) and an end-to-end checksum (``checksum: true``) from the route settings,
    over the same SSH connection. If the binary is absent the route is invalid and says so.
``local``
    Same host (the demo): a plain copy.

Every argv is built by a small pure method so it can be unit-tested without a network;
remote commands are argv lists too, quoted with ``shlex.join`` for the remote shell.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from airflow.sdk import BaseHook

from ccat_operators import checksums, safefs
from ccat_operators.states import TransferMethod

CHUNK = 1 << 20
REMOTE_HASH_COMMANDS = {"sha256": ["sha256sum", "--"], "xxh3_128": ["xxhsum", "-H2", "--"]}


class InvalidRouteError(RuntimeError):
    """The route's transfer method cannot run here (missing binary, bad settings)."""


class TransferCommandError(RuntimeError):
    """The transfer or a remote command exited non-zero."""


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int = 22
    login: str | None = None
    key_file: str | None = None
    check_host_key: bool = True

    @property
    def target(self) -> str:
        return f"{self.login}@{self.host}" if self.login else self.host


class TransferHook(BaseHook):
    """Send files to, and inspect files at, one destination.

    :param method: ``rsync``, ``bbcp`` or ``local``.
    :param ssh_conn_id: Airflow SSH connection of the destination host (not for ``local``).
    :param settings: route settings (bbcp: ``streams``, ``window``, ``checksum``;
        all: ``timeout`` seconds of I/O silence before giving up, default 600).
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "CCAT transfer"

    def __init__(self, method: str, ssh_conn_id: str | None = None, settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.method = TransferMethod(method)
        self.ssh_conn_id = ssh_conn_id
        self.settings = settings or {}

    # -- configuration ---------------------------------------------------------------

    @cached_property
    def endpoint(self) -> SshEndpoint:
        if self.ssh_conn_id is None:
            raise InvalidRouteError(f"method {self.method} needs an SSH connection id for the destination")
        conn = self.get_connection(self.ssh_conn_id)
        extra = conn.extra_dejson
        return SshEndpoint(
            host=conn.host,
            port=int(conn.port or 22),
            login=conn.login,
            key_file=extra.get("key_file"),
            check_host_key=str(extra.get("no_host_key_check", "false")).lower() != "true",
        )

    def validate(self) -> None:
        """Raise InvalidRouteError if this method cannot run on this host."""
        binary = {TransferMethod.RSYNC: "rsync", TransferMethod.BBCP: "bbcp"}.get(self.method)
        if binary and shutil.which(binary) is None:
            raise InvalidRouteError(
                f"transfer method {self.method} is not usable here: the {binary!r} binary is not on PATH "
                f"(install it on this worker or change the route's method)"
            )

    # -- argv builders (pure) ------------------------------------------------------------

    def ssh_argv(self) -> list[str]:
        """``ssh`` with the endpoint's options, no host or command."""
        endpoint = self.endpoint
        argv = ["ssh", "-p", str(endpoint.port), "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15"]
        if endpoint.key_file:
            argv += ["-i", endpoint.key_file, "-o", "IdentitiesOnly=yes"]
        if not endpoint.check_host_key:
            argv += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        return argv

    def send_argv(self, source: Path, destination: str) -> list[str]:
        """The command that copies ``source`` to ``destination`` (a path at the destination)."""
        timeout = str(int(self.settings.get("timeout", 600)))
        if self.method == TransferMethod.RSYNC:
            return [
                "rsync", "--inplace", "--partial", "--append-verify", "--mkpath", "--stats",
                f"--timeout={timeout}", "-e", shlex.join(self.ssh_argv()),
                str(source), f"{self.endpoint.target}:{destination}",
            ]  # fmt: skip
        if self.method == TransferMethod.BBCP:
            argv = [
                "bbcp", "-f", "-P", "30",
                "-s", str(int(self.settings.get("streams", 4))),
                "-w", str(self.settings.get("window", "8M")),
                "-T", shlex.join([*self.ssh_argv(), "-x", "-a", "%I", "%U@%H", "bbcp"]),
            ]  # fmt: skip
            if self.settings.get("checksum", True):
                argv += ["-e", "-E", "md5"]
            return [*argv, str(source), f"{self.endpoint.target}:{destination}"]
        raise InvalidRouteError("the local method copies in-process; it has no command")

    def remote_argv(self, command: list[str]) -> list[str]:
        """``ssh host -- command`` with the command quoted for the remote shell."""
        return [*self.ssh_argv(), self.endpoint.target, "--", shlex.join(command)]

    # -- operations -------------------------------------------------------------------

    def _run(self, argv: list[str], log: IO[str] | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True)
        if log is not None:
            log.write(f"$ {shlex.join(argv)}\n{result.stdout}{result.stderr}exit {result.returncode}\n")
            log.flush()
        if result.returncode != 0:
            raise TransferCommandError(f"{argv[0]} exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return result

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
        self._run(self.remote_argv(["mkdir", "-p", "--", target]), log)
        self._check_resolves_to_itself(root, target, log)

    def _check_resolves_to_itself(self, root: str, target: str, log: IO[str] | None) -> None:
        output = self._run(self.remote_argv(["readlink", "-m", "--", root, target]), log).stdout.splitlines()
        if len(output) != 2 or output[1] != f"{output[0].rstrip('/')}/{target[len(root.rstrip('/')) + 1 :]}":
            raise safefs.UnsafePathError(f"{target} at the destination goes through a symbolic link; refusing it")

    def send(self, source: Path, destination: str, log: IO[str]) -> None:
        """Copy ``source`` to ``destination`` (in a directory :meth:`guard` created), output to ``log``."""
        if self.method == TransferMethod.LOCAL:
            _copy_without_links(source, destination)
            log.write(f"copied {source} -> {destination}\n")
            return
        self.validate()
        self._run(self.send_argv(source, destination), log)

    def size(self, path: str) -> int | None:
        """Size of ``path`` at the destination, or None if it does not exist."""
        if self.method == TransferMethod.LOCAL:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None
        result = subprocess.run(self.remote_argv(["stat", "-c", "%s", "--", path]), capture_output=True, text=True)
        if result.returncode != 0:
            if "No such file" in result.stderr:
                return None
            raise TransferCommandError(f"stat at destination failed: {result.stderr.strip()}")
        return int(result.stdout.strip())

    def checksum(self, path: str, algorithm: str) -> str:
        """``algorithm:hex`` of ``path`` at the destination, read there."""
        if self.method == TransferMethod.LOCAL:
            return checksums.file_checksum(Path(path), algorithm)
        output = self._run(self.remote_argv([*REMOTE_HASH_COMMANDS[algorithm], path])).stdout
        return f"{algorithm}:{output.split()[0]}"

    def rename(self, source: str, destination: str) -> None:
        """Atomically move ``source`` to ``destination`` at the destination."""
        if self.method == TransferMethod.LOCAL:
            os.replace(source, destination)
            return
        self._run(self.remote_argv(["mv", "-fT", "--", source, destination]))

    def remove(self, path: str) -> None:
        """Delete one of our own temporary files at the destination (never data)."""
        if not path.endswith(".part"):
            raise ValueError(f"refusing to delete {path}: only temporary .part files are removed")
        if self.method == TransferMethod.LOCAL:
            Path(path).unlink(missing_ok=True)
            return
        self._run(self.remote_argv(["rm", "-f", "--", path]))


def _copy_without_links(source: Path, destination: str) -> None:
    """Copy into a fresh ``destination``: whatever stood there (a link included) is replaced, not written through."""
    with suppress(FileNotFoundError):
        os.unlink(destination)
    fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(source, "rb") as reader, open(fd, "wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK)
        writer.flush()
        os.fsync(writer.fileno())
