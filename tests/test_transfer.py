"""Transfers between sites in their own network namespaces, run by the Airflow tasks."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ccat_dev.postgres import LocalPostgres
from ccat_operators import bundling, packaging, routing
from ccat_operators.hooks.transfer import InvalidRouteError, TransferHook
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
    assert sites.db.fetch_one("data_transfer", id=transfer["id"])["status"] == "IN_PROGRESS"
    assert not destination.exists()

    result = sites.run("ccat", "send", str(transfer["id"]))
    assert "OUTCOME=sent" in result.stdout
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row["status"] == "COMPLETED" and row["attempts"] == 2
    assert sha256(destination) == transfer["checksum"] and not part.exists()
    duplicates = sites.db.conn.execute(
        "SELECT count(*) AS n FROM data_transfer WHERE data_transfer_package_id = %s AND destination_location_id = %s",
        (row["data_transfer_package_id"], row["destination_location_id"]),
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
    size = sites.db.fetch_one("data_transfer", id=transfer["id"])["size_bytes"]
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
    assert sites.db.fetch_one("data_transfer", id=transfer["id"])["unpack_status"] == "PENDING"
    blocker.unlink()

    received = sites.network.received_bytes(site)
    sent_before = sites.network.received_bytes("ccat")
    result = sites.run(site, "unpack", f"{site}/buffer")
    assert "UNPACKED=1" in result.stdout
    assert sites.network.received_bytes(site) - received < 2_000  # no bundle bytes crossed the network
    assert sites.network.received_bytes("ccat") - sent_before < 2_000
    row = sites.db.fetch_one("data_transfer", id=transfer["id"])
    assert row["unpack_status"] == "COMPLETED" and row["attempts"] == 1
    packages = sites.db.fetch_all("packages_of_bundle_by_id", bundle_id=row["data_transfer_package_id"])
    for package in packages:
        assert sha256(sites.data_root / site / "buffer" / package["relative_path"]) == package["checksum"]


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
            path = sites.data_root / "ccat" / "buffer" / package["relative_path"]
            info = archive.gettarinfo(str(path), arcname=package["relative_path"])
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
    assert row["unpack_status"] == "FAILED" and reason in row["unpack_failure_reason"]
    assert not Path("/tmp/ccat-evil.tar").exists()
    assert not list((sites.data_root / site).rglob("*.part"))
    assert not (sites.data_root / site / "buffer" / "raw_data_packages").exists() or not list(
        (sites.data_root / site / "buffer" / "raw_data_packages").rglob("*.tar")
    )


def test_bbcp_command_and_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    from ccat_operators.hooks.transfer import SshEndpoint

    hook = TransferHook("bbcp", ssh_conn_id="x", settings={"streams": 8, "window": "16M", "checksum": True})
    hook.__dict__["endpoint"] = SshEndpoint("lta.example.org", 2222, "ccat", "/keys/id", check_host_key=True)
    argv = hook.send_argv(Path("/buffer/b.tar"), "/remote/b.tar.part")
    assert argv[:8] == ["bbcp", "-f", "-P", "30", "-s", "8", "-w", "16M"]
    assert argv[8] == "-T" and argv[9].startswith("ssh -p 2222 -o BatchMode=yes")
    assert argv[-4:] == ["-E", "md5", "/buffer/b.tar", "ccat@lta.example.org:/remote/b.tar.part"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidRouteError, match="transfer method bbcp is not usable here: the 'bbcp' binary"):
        hook.validate()


def test_rsync_command_quotes_the_ssh_options() -> None:
    from ccat_operators.hooks.transfer import SshEndpoint

    hook = TransferHook("rsync", ssh_conn_id="x")
    hook.__dict__["endpoint"] = SshEndpoint("10.0.0.2", 22, "root", "/k ey", check_host_key=False)
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
            or sites.db.fetch_one("data_transfer", id=t["depends_on_transfer_id"])["status"] == "COMPLETED"
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
    assert row["status"] == "FAILED" and "goes through a symbolic link" in row["failure_reason"]
    assert list(outside.iterdir()) == []
