"""Test sites on their own network: one network namespace per site, an sshd with rsync each.

The namespaces hang off a private bridge, with addresses only these tests use; the
root namespace has no address on the bridge, so nothing outside the tests can reach
them. ops-db is reached from inside a namespace through PostgreSQL's unix socket
(filesystems are shared, networks are not). A site's processes run under
``ip netns exec``; bandwidth can be shaped with ``tc tbf`` on a site's interface.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def run(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@dataclass
class Site:
    name: str
    namespace: str
    address: str
    host_veth: str
    sshd: subprocess.Popen | None = None


@dataclass
class SiteNetwork:
    """Namespaces for ``site_names`` joined on a bridge; ``directory`` holds keys and configs."""

    directory: Path
    site_names: tuple[str, ...] = ("ccat", "cologne", "us")
    sites: dict[str, Site] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tag = secrets.token_hex(2)
        self.bridge = f"ccbr{self.tag}"
        self.subnet = f"10.77.{int(self.tag, 16) % 250 + 1}"
        self.key = self.directory / "id_ed25519"

    def start(self) -> SiteNetwork:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        run(["ip", "link", "set", self.bridge, "up"])
        for index, name in enumerate(self.site_names, start=1):
            site = Site(name, f"{name}-{self.tag}", f"{self.subnet}.{index}", f"cc{self.tag}h{index}")
            run(["ip", "netns", "add", site.namespace])
            run(["ip", "link", "add", site.host_veth, "type", "veth", "peer", "name", "eth0", "netns", site.namespace])
            run(["ip", "link", "set", site.host_veth, "master", self.bridge, "up"])
            run(["ip", "-n", site.namespace, "addr", "add", f"{site.address}/24", "dev", "eth0"])
            run(["ip", "-n", site.namespace, "link", "set", "eth0", "up"])
            run(["ip", "-n", site.namespace, "link", "set", "lo", "up"])
            self.sites[name] = site
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        return self

    def stop(self) -> None:
        for site in self.sites.values():
            if site.sshd is not None:
                site.sshd.send_signal(signal.SIGTERM)
                site.sshd.wait(timeout=10)
            subprocess.run(["ip", "netns", "del", site.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def host_address(self) -> str:
        """Give the host (root namespace) an address on the bridge, for servers the sites reach."""
        address = f"{self.subnet}.254"
        subprocess.run(["ip", "addr", "add", f"{address}/24", "dev", self.bridge], capture_output=True)
        return address

    def argv(self, site: str, argv: list[str]) -> list[str]:
        """``argv`` run inside the site's namespace."""
        return ["ip", "netns", "exec", self.sites[site].namespace, *argv]

    def start_sshd(self, site_name: str, port: int = 22) -> None:
        """An sshd on the site's address accepting our key for root (rsync rides on it)."""
        site = self.sites[site_name]
        home = self.directory / site_name
        home.mkdir(exist_ok=True)
        host_key = home / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)])
        authorized = home / "authorized_keys"
        authorized.write_text(Path(f"{self.key}.pub").read_text())
        config = home / "sshd_config"
        config.write_text(
            f"ListenAddress {site.address}:{port}\n"
            f"HostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\n"
            f"PidFile {home / 'sshd.pid'}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        site.sshd = subprocess.Popen(
            self.argv(site_name, [SSHD, "-D", "-e", "-f", str(config)]),
            stdout=subprocess.DEVNULL,
            stderr=open(home / "sshd.log", "wb"),  # noqa: SIM115 - lives as long as sshd
        )
        deadline = time.monotonic() + 10
        probe = ["bash", "-c", f"exec 3<>/dev/tcp/{site.address}/{port}"]
        while subprocess.run(self.argv(site_name, probe), capture_output=True).returncode != 0:
            if time.monotonic() > deadline or site.sshd.poll() is not None:
                raise RuntimeError(f"sshd for {site_name} did not start: {(home / 'sshd.log').read_text()}")
            time.sleep(0.05)

    def ssh_connection(self, site_name: str, port: int = 22) -> str:
        """An Airflow connection (JSON) for the site's sshd."""
        import json

        return json.dumps(
            {
                "conn_type": "ssh",
                "host": self.sites[site_name].address,
                "port": port,
                "login": "root",
                "extra": {"key_file": str(self.key), "no_host_key_check": "true"},
            }
        )

    def shape(self, site_name: str, rate: str, burst: str = "512kb", latency: str = "50ms") -> None:
        """Limit the site's outgoing bandwidth with a token bucket filter."""
        run(
            self.argv(
                site_name,
                [
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    burst,
                    "latency",
                    latency,
                ],
            )
        )

    def unshape(self, site_name: str) -> None:
        subprocess.run(self.argv(site_name, ["tc", "qdisc", "del", "dev", "eth0", "root"]), capture_output=True)

    def received_bytes(self, site_name: str) -> int:
        """Bytes the site's interface has received so far."""
        return int(run(self.argv(site_name, ["cat", "/sys/class/net/eth0/statistics/rx_bytes"])).strip())


def environment_for_sites(network: SiteNetwork, ops_db_socket_url: str) -> dict[str, str]:
    """Environment for processes in the site namespaces: ops-db over the unix socket, SSH connections."""
    env = dict(os.environ)
    env["AIRFLOW_CONN_CCAT_OPS_DB"] = ops_db_socket_url
    for name in network.site_names:
        if network.sites[name].sshd is not None:
            env[f"AIRFLOW_CONN_CCAT_SSH_{name.upper()}_BUFFER"] = network.ssh_connection(name)
    return env
