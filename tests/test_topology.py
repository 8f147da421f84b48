"""Topology as code: idempotent apply, deactivation instead of deletion, whole-file refusal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from ccat_operators import topology
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from tests.conftest import EXAMPLE_TOPOLOGY


def snapshot(db: OpsDb) -> dict[str, list[dict]]:
    tables = ("site", "data_location", "retention_policy", "data_transfer_route", "instrument", "instrument_module")
    return {t: db.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in tables}  # noqa: S608


def example_document() -> dict:
    return yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())


def write(tmp_path: Path, document: dict, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_example_applies_and_second_apply_changes_nothing(ops_db: OpsDb, data_root: Path) -> None:
    loaded = topology.load(EXAMPLE_TOPOLOGY)
    first = topology.apply(ops_db, loaded)
    assert "created location ccat/telescope_computer" in first.changes
    assert "created location cologne/lta" in first.changes
    before = snapshot(ops_db)
    assert len(before["site"]) == 3
    assert len(before["data_location"]) == 7

    second = topology.apply(ops_db, topology.load(EXAMPLE_TOPOLOGY))
    assert second.changes == []
    assert snapshot(ops_db) == before

    source = ops_db.fetch_one("data_location_by_key", site="ccat", name="telescope_computer")
    assert source.root_path == f"{data_root}/ccat/telescope_computer"
    assert source.settings["package_size_limit"] == 50 * 10**9


def test_show_output_applies_back_without_change(ops_db: OpsDb, example_topology, tmp_path: Path) -> None:
    before = snapshot(ops_db)
    shown = tmp_path / "shown.yaml"
    shown.write_text(topology.dumps(ops_db))
    assert topology.apply(ops_db, topology.load(shown)).changes == []
    assert snapshot(ops_db) == before


def test_removed_location_is_deactivated_not_deleted(ops_db: OpsDb, example_topology, tmp_path: Path) -> None:
    document = example_document()
    del document["sites"]["cologne"]["locations"]["ramses"]
    report = topology.apply(ops_db, topology.load(write(tmp_path, document)))
    assert report.changes == ["deactivated location cologne/ramses"]
    ramses = ops_db.fetch_one("data_location_by_key", site="cologne", name="ramses")
    assert ramses is not None and ramses.active is False

    # Putting it back reactivates the same row.
    report = topology.apply(ops_db, topology.load(EXAMPLE_TOPOLOGY))
    assert report.changes == ["updated location cologne/ramses"]
    again = ops_db.fetch_one("data_location_by_key", site="cologne", name="ramses")
    assert again.id == ramses.id and again.active is True


def test_changed_setting_updates_only_that_location(ops_db: OpsDb, example_topology, tmp_path: Path) -> None:
    document = example_document()
    document["sites"]["ccat"]["locations"]["buffer"]["settings"]["bundle_max_age"] = "2h"
    report = topology.apply(ops_db, topology.load(write(tmp_path, document)))
    assert report.changes == ["updated location ccat/buffer"]
    buffer = ops_db.fetch_one("data_location_by_key", site="ccat", name="buffer")
    assert buffer.settings["bundle_max_age"] == 7200


def test_routes_apply_and_deactivate(ops_db: OpsDb, example_topology, tmp_path: Path) -> None:
    document = example_document()
    document["routes"] = {
        "ccat_to_us_via_cologne": {"type": "RELAY", "from": "ccat", "to": "us", "via": "cologne", "method": "bbcp"},
        "cologne_buffer_to_us_buffer": {
            "type": "CUSTOM",
            "from": "cologne",
            "to": "us",
            "from_location": "cologne/buffer",
            "to_location": "us/buffer",
        },
    }
    report = topology.apply(ops_db, topology.load(write(tmp_path, document)))
    assert sorted(report.changes) == [
        "created route ccat_to_us_via_cologne",
        "created route cologne_buffer_to_us_buffer",
    ]
    assert topology.dump(ops_db)["routes"]["ccat_to_us_via_cologne"]["via"] == "cologne"

    report = topology.apply(ops_db, topology.load(EXAMPLE_TOPOLOGY))
    assert sorted(report.changes) == [
        "deactivated route ccat_to_us_via_cologne",
        "deactivated route cologne_buffer_to_us_buffer",
    ]


BAD_FILES = [
    (
        lambda d: d["sites"]["ccat"]["locations"]["buffer"].update(type="BUFER"),
        "sites.ccat.locations.buffer.type: 'BUFER' is not one of SOURCE, BUFFER, LONG_TERM_ARCHIVE, PROCESSING",
    ),
    (
        lambda d: d["sites"]["ccat"]["locations"]["buffer"].update(root_pth="/x"),
        "sites.ccat.locations.buffer.root_pth: unknown key",
    ),
    (
        lambda d: d["sites"]["ccat"]["locations"]["buffer"].pop("root_path"),
        "sites.ccat.locations.buffer.root_path: is required",
    ),
    (
        lambda d: d["sites"]["ccat"]["locations"]["buffer"].update(bucket="b"),
        "sites.ccat.locations.buffer.bucket: does not apply to DISK storage",
    ),
    (lambda d: d["sites"]["us"]["locations"]["lta"].pop("bucket"), "sites.us.locations.lta.bucket: is required"),
    (
        lambda d: d["sites"]["ccat"]["locations"]["telescope_computer"]["settings"].update(package_size_limit="big"),
        "sites.ccat.locations.telescope_computer.settings.package_size_limit: 'big' is not a size",
    ),
    (
        lambda d: d["sites"]["ccat"]["locations"]["telescope_computer"]["settings"].update(checksum_algorithm="md5"),
        "settings.checksum_algorithm: 'md5' is not one of sha256, xxh3_128",
    ),
    (
        lambda d: d["sites"]["ccat"]["locations"]["buffer"]["retention"].update(disk_pressure_threshold=85),
        "sites.ccat.locations.buffer.retention.disk_pressure_threshold: expected a fraction in (0, 1]",
    ),
    (
        lambda d: d["sites"]["ccat"]["locations"]["buffer"].update(active=False),
        "sites.ccat.locations: a site with a SOURCE location needs an active BUFFER",
    ),
    (lambda d: d["sites"].update({"Bad-Site": {"name": "x"}}), "sites.Bad-Site: 'Bad-Site' is not a valid name"),
    (
        lambda d: d.update(routes={"r": {"type": "RELAY", "from": "ccat", "to": "mars"}}),
        "routes.r.to: unknown site 'mars'",
    ),
    (
        lambda d: d.update(routes={"r": {"type": "RELAY", "from": "ccat", "to": "us"}}),
        "routes.r.via: a RELAY route needs `via`",
    ),
    (
        lambda d: d.update(
            routes={
                "r": {
                    "type": "CUSTOM",
                    "from": "ccat",
                    "to": "us",
                    "from_location": "ccat/buffer",
                    "to_location": "cologne/buffer",
                }
            }
        ),
        "routes.r.to_location: 'cologne/buffer' is not at site 'us'",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_FILES)
def test_bad_file_is_refused_whole_naming_file_and_key(
    ops_db: OpsDb, example_topology, tmp_path: Path, mutate, message: str
) -> None:
    before = snapshot(ops_db)
    document = example_document()
    # A harmless change alongside the bad one must not land either.
    document["sites"]["cologne"]["name"] = "Renamed"
    mutate(document)
    path = write(tmp_path, document, "bad.yaml")
    with pytest.raises(topology.TopologyError) as caught:
        topology.apply(ops_db, topology.load(path))
    assert f"{path}: " in str(caught.value)
    assert message in str(caught.value)
    assert snapshot(ops_db) == before


def test_duplicate_keys_and_broken_yaml_are_refused(tmp_path: Path) -> None:
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text("observatory: A\nobservatory: B\n")
    with pytest.raises(topology.TopologyError, match="duplicate key 'observatory'"):
        topology.load(duplicate)
    broken = tmp_path / "broken.yaml"
    broken.write_text("sites: [unclosed\n")
    with pytest.raises(topology.TopologyError, match=f"{broken}: not valid YAML"):
        topology.load(broken)


def test_unset_environment_variable_without_default_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCAT_NOWHERE", raising=False)
    document = example_document()
    document["sites"]["ccat"]["locations"]["buffer"]["root_path"] = "${CCAT_NOWHERE}/buffer"
    with pytest.raises(
        topology.TopologyError,
        match="sites.ccat.locations.buffer.root_path: environment variable CCAT_NOWHERE is not set",
    ):
        topology.load(write(tmp_path, document))


def test_cli_apply_show_and_error(ops_db_url: str, data_root: Path, tmp_path: Path, capsys) -> None:
    assert main(["topology", "apply", str(EXAMPLE_TOPOLOGY), "--db", ops_db_url]) == 0
    assert "created site ccat" in capsys.readouterr().out
    assert main(["topology", "apply", str(EXAMPLE_TOPOLOGY), "--db", ops_db_url]) == 0
    assert capsys.readouterr().out.strip() == "no change"
    assert main(["topology", "show", "--db", ops_db_url]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["sites"]["cologne"]["locations"]["lta"]["bucket"] == "ccat-lta-cologne"

    document = example_document()
    document["sites"]["us"]["locations"]["lta"]["type"] = "ARCHIVE"
    bad = write(tmp_path, document, "bad.yaml")
    assert main(["topology", "apply", str(bad), "--db", ops_db_url]) == 1
    error = capsys.readouterr().err
    assert f"{bad}: sites.us.locations.lta.type: 'ARCHIVE' is not one of" in error


# Storage roots: `apply --create-dirs`, the warning without it, `--require-dirs` ------------------

#: The active DISK roots of the example topology, under $CCAT_DATA_ROOT.
EXAMPLE_ROOTS = ["ccat/telescope_computer", "ccat/buffer", "cologne/buffer", "cologne/ramses", "us/buffer"]


def test_apply_create_dirs_makes_the_active_roots_0755(
    ops_db_url: str, ops_db: OpsDb, data_root: Path, tmp_path: Path, capsys
) -> None:
    document = example_document()
    locations(document, "cologne")["ramses"]["active"] = False
    umask = os.umask(0o077)  # the mode must not depend on the user's umask
    try:
        assert main(["topology", "apply", "--create-dirs", str(write(tmp_path, document)), "--db", ops_db_url]) == 0
    finally:
        os.umask(umask)
    captured = capsys.readouterr()
    roots = [data_root / root for root in EXAMPLE_ROOTS if root != "cologne/ramses"]
    assert captured.out.splitlines()[: len(roots)] == [f"created directory {root}" for root in roots]
    assert "created location ccat/buffer" in captured.out
    assert captured.err == ""
    for directory in [*roots, data_root / "ccat", data_root / "cologne", data_root / "us"]:
        assert directory.is_dir() and stat.S_IMODE(directory.stat().st_mode) == 0o755, directory
    assert not (data_root / "cologne" / "ramses").exists()  # inactive: nothing runs there
    assert ops_db.fetch_one("data_location_by_key", site="ccat", name="buffer").root_path == str(roots[1])

    assert main(["topology", "apply", "--create-dirs", str(write(tmp_path, document)), "--db", ops_db_url]) == 0
    assert capsys.readouterr().out.strip() == "no change"


def test_apply_warns_about_missing_roots_and_applies(ops_db_url: str, ops_db: OpsDb, data_root: Path, capsys) -> None:
    (data_root / "ccat" / "buffer").mkdir(parents=True)
    assert main(["topology", "apply", str(EXAMPLE_TOPOLOGY), "--db", ops_db_url]) == 0
    captured = capsys.readouterr()
    assert "created location ccat/buffer" in captured.out
    missing = [root for root in EXAMPLE_ROOTS if root != "ccat/buffer"]
    assert captured.err.splitlines() == [
        f"ccat: warning: {root}: its root {data_root / root} is not a directory on this host (fine if it is mounted "
        "only where the location's worker runs; --create-dirs creates it here)"
        for root in missing
    ]
    assert not (data_root / "us" / "buffer").exists()


def test_apply_require_dirs_refuses_missing_roots_changing_nothing(
    ops_db_url: str, ops_db: OpsDb, data_root: Path, capsys
) -> None:
    for root in EXAMPLE_ROOTS[:3]:
        (data_root / root).mkdir(parents=True)
    assert main(["topology", "apply", "--require-dirs", str(EXAMPLE_TOPOLOGY), "--db", ops_db_url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "ccat: error: ops-db not changed: storage roots that are not directories here: "
        f"cologne/ramses: {data_root}/cologne/ramses; us/buffer: {data_root}/us/buffer (--create-dirs creates them)"
    ]
    assert ops_db.fetch_all("sites") == []
    assert not (data_root / "us" / "buffer").exists()

    (data_root / "cologne" / "ramses").mkdir()
    (data_root / "us" / "buffer").mkdir(parents=True)
    assert main(["topology", "apply", "--require-dirs", str(EXAMPLE_TOPOLOGY), "--db", ops_db_url]) == 0
    assert "created site ccat" in capsys.readouterr().out


def test_apply_create_dirs_names_a_root_it_cannot_make(ops_db_url: str, data_root: Path, capsys) -> None:
    (data_root / "us").write_text("a file where the site's directory should be")
    assert main(["topology", "apply", "--create-dirs", str(EXAMPLE_TOPOLOGY), "--db", ops_db_url]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"ccat: error: us/buffer: cannot create its root {data_root}/us/buffer: File exists ({data_root}/us)"
    ]


def test_apply_takes_create_dirs_or_require_dirs_not_both(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["topology", "apply", "--create-dirs", "--require-dirs", str(EXAMPLE_TOPOLOGY)])
    assert exited.value.code == 2
    assert "argument --require-dirs: not allowed with argument --create-dirs" in capsys.readouterr().err


# What `check` must refuse because a DAG or `apply` would break on it ---------------------


def locations(document: dict, site: str) -> dict:
    return document["sites"][site]["locations"]


def route(document: dict, **spec) -> None:
    document["routes"] = {"r": {"from": "ccat", "to": "us", **spec}}


def problems_of(document: dict) -> str:
    with pytest.raises(topology.TopologyError) as caught:
        topology.loads(yaml.safe_dump(document), source="t.yaml")
    return str(caught.value)


REFUSED = {
    # 1. `{site}_{location}` names queues, task groups and task ids.
    "site_location_collision": (
        lambda d: (
            locations(d, "ccat").update(x_buffer={"type": "PROCESSING", "root_path": "/data/ccat/x_buffer"}),
            d["sites"].update(ccat_x={"name": "X", "locations": {"buffer": {"type": "PROCESSING", "root_path": "/x"}}}),
        ),
        "t.yaml: sites.ccat_x.locations.buffer: gives the same queue and task names "
        "(ccat_x_buffer_<operation>) as ccat/x_buffer",
    ),
    "site_location_is_a_task_id": (
        lambda d: d["sites"].update(
            announce={"name": "A", "locations": {"packages_buffered": {"type": "PROCESSING", "root_path": "/a"}}}
        ),
        "sites.announce.locations.packages_buffered: 'announce_packages_buffered' (site_location) is the id of a task",
    ),
    "name_too_long": (
        lambda d: locations(d, "cologne").update({"r" * 64: {"type": "PROCESSING", "root_path": "/r"}}),
        f"sites.cologne.locations.{'r' * 64}: {'r' * 64!r} is longer than 63 characters",
    ),
    # 2. Sizes: limits of at least one byte, and within a PostgreSQL bigint.
    "bundle_size_limit_zero": (
        lambda d: locations(d, "ccat")["buffer"]["settings"].update(bundle_size_limit=0),
        "sites.ccat.locations.buffer.settings.bundle_size_limit: 0 is less than the minimum of 1 byte",
    ),
    "package_size_limit_zero": (
        lambda d: locations(d, "ccat")["telescope_computer"]["settings"].update(package_size_limit="0GB"),
        "sites.ccat.locations.telescope_computer.settings.package_size_limit: '0GB' is less than the minimum",
    ),
    "size_beyond_bigint": (
        lambda d: locations(d, "ccat")["buffer"]["settings"].update(min_free_space=2**63),
        "sites.ccat.locations.buffer.settings.min_free_space: 9223372036854775808 is too large",
    ),
    "size_string_beyond_bigint": (
        lambda d: locations(d, "ccat")["buffer"]["settings"].update(bundle_size_limit="9" * 400 + "PB"),
        "sites.ccat.locations.buffer.settings.bundle_size_limit: '999",
    ),
    # 3. Integers and durations that fit their columns (and timedelta).
    "priority_beyond_integer": (
        lambda d: locations(d, "ccat")["buffer"].update(priority=10**20),
        "sites.ccat.locations.buffer.priority: expected an integer from 0 to 2147483647, got 100000000000000000000",
    ),
    "min_lta_copies_beyond_integer": (
        lambda d: locations(d, "ccat")["telescope_computer"]["retention"].update(min_lta_copies=2**31),
        "sites.ccat.locations.telescope_computer.retention.min_lta_copies: expected an integer from 1 to 2147483647",
    ),
    "bundle_max_age_beyond_100_years": (
        lambda d: locations(d, "ccat")["buffer"]["settings"].update(bundle_max_age="5300w"),
        "sites.ccat.locations.buffer.settings.bundle_max_age: '5300w' is too long (at most 36500d, 100 years)",
    ),
    "retention_period_beyond_100_years": (
        lambda d: locations(d, "ccat")["buffer"]["retention"].update(period=10**10),
        "sites.ccat.locations.buffer.retention.period: 10000000000 is too long",
    ),
    # 4. DISK roots: absolute, not /, no .. (after ${VAR} expansion).
    "root_path_empty": (
        lambda d: locations(d, "ccat")["buffer"].update(root_path="${CCAT_TEST_UNSET_ROOT:-}"),
        "sites.ccat.locations.buffer.root_path: is empty (after ${VAR} expansion)",
    ),
    "root_path_relative": (
        lambda d: locations(d, "ccat")["buffer"].update(root_path="data/buffer"),
        "sites.ccat.locations.buffer.root_path: 'data/buffer' is not an absolute path",
    ),
    "root_path_slash": (
        lambda d: locations(d, "ccat")["buffer"].update(root_path="/"),
        "sites.ccat.locations.buffer.root_path: '/' is the whole file system",
    ),
    "root_path_dot_dot": (
        lambda d: locations(d, "ccat")["buffer"].update(root_path="/data/ccat/../buffer"),
        "sites.ccat.locations.buffer.root_path: '/data/ccat/../buffer' contains a .. component",
    ),
    "root_path_double_slash_start": (
        lambda d: locations(d, "ccat")["buffer"].update(root_path="//server/buffer"),
        "sites.ccat.locations.buffer.root_path: '//server/buffer' starts with //",
    ),
    # 5. Roots of one site's DISK locations are disjoint.
    "buffer_inside_source": (
        lambda d: locations(d, "ccat")["buffer"].update(root_path="/data/ccat/telescope_computer/buffer"),
        "sites.ccat.locations.buffer.root_path: '/data/ccat/telescope_computer/buffer' is inside the root of "
        "ccat/telescope_computer ('/data/ccat/telescope_computer')",
    ),
    "source_inside_buffer": (
        lambda d: locations(d, "ccat")["telescope_computer"].update(root_path="/data/ccat/buffer/raw"),
        "sites.ccat.locations.telescope_computer.root_path: '/data/ccat/buffer/raw' is inside the root of ccat/buffer",
    ),
    "same_root": (
        lambda d: locations(d, "cologne")["ramses"].update(root_path="/data/cologne/buffer/"),
        "sites.cologne.locations.ramses.root_path: '/data/cologne/buffer' is also the root of cologne/buffer",
    ),
    # 6. A RELAY goes through a third site.
    "relay_via_origin": (
        lambda d: route(d, type="RELAY", via="ccat"),
        "routes.r.via: 'ccat' is the route's origin; a RELAY goes through a third site",
    ),
    "relay_via_destination": (
        lambda d: route(d, type="RELAY", via="us"),
        "routes.r.via: 'us' is the route's destination",
    ),
    "relay_via_site_without_buffer": (
        lambda d: (
            d["sites"].update(lab={"name": "L", "locations": {"p": {"type": "PROCESSING", "root_path": "/p"}}}),
            route(d, type="RELAY", via="lab"),
        ),
        "routes.r.via: site 'lab' has no active BUFFER for the relayed bundles",
    ),
    # 7. DIRECT and CUSTOM routes deliver into (and CUSTOM leaves from) a BUFFER.
    "direct_into_archive": (
        lambda d: route(d, type="DIRECT", to_location="us/lta"),
        "routes.r.to_location: 'us/lta' is a LONG_TERM_ARCHIVE location; bundles are delivered into a BUFFER",
    ),
    "custom_into_processing": (
        lambda d: route(d, type="CUSTOM", to="cologne", from_location="ccat/buffer", to_location="cologne/ramses"),
        "routes.r.to_location: 'cologne/ramses' is a PROCESSING location; bundles are delivered into a BUFFER",
    ),
    "custom_from_source": (
        lambda d: route(d, type="CUSTOM", from_location="ccat/telescope_computer", to_location="us/buffer"),
        "routes.r.from_location: 'ccat/telescope_computer' is a SOURCE location; bundles leave from a BUFFER",
    ),
    "direct_into_inactive_buffer": (
        lambda d: (
            locations(d, "us").update(inbox={"type": "BUFFER", "root_path": "/data/us/inbox", "active": False}),
            route(d, type="DIRECT", to_location="us/inbox"),
        ),
        "routes.r.to_location: 'us/inbox' is not active; deactivate the route too",
    ),
    "direct_with_from_location": (
        lambda d: route(d, type="DIRECT", from_location="ccat/buffer", to_location="us/buffer"),
        "routes.r.from_location: a DIRECT route takes no from_location",
    ),
    "two_active_routes_between_two_sites": (
        lambda d: d.update(
            routes={
                "a": {"type": "RELAY", "from": "ccat", "to": "us", "via": "cologne"},
                "b": {"type": "DIRECT", "from": "ccat", "to": "us", "to_location": "us/buffer"},
            }
        ),
        "routes.b.to: route 'a' already overrides ccat -> us",
    ),
    # 8. Route settings the transfer hook understands, for the method that reads them.
    "streams_not_a_number": (
        lambda d: route(d, type="RELAY", via="cologne", method="bbcp", settings={"streams": "many"}),
        "routes.r.settings.streams: expected an integer from 1 to 64, got 'many'",
    ),
    "streams_zero": (
        lambda d: route(d, type="RELAY", via="cologne", method="bbcp", settings={"streams": 0}),
        "routes.r.settings.streams: expected an integer from 1 to 64, got 0",
    ),
    "window_not_a_size": (
        lambda d: route(d, type="RELAY", via="cologne", method="bbcp", settings={"window": "huge"}),
        "routes.r.settings.window: expected a window size such as 8M",
    ),
    "checksum_not_a_bool": (
        lambda d: route(d, type="RELAY", via="cologne", method="bbcp", settings={"checksum": "yes"}),
        "routes.r.settings.checksum: expected true or false, got 'yes'",
    ),
    "timeout_zero": (
        lambda d: route(d, type="RELAY", via="cologne", settings={"timeout": 0}),
        "routes.r.settings.timeout: expected 1 to 2147483647 seconds, got 0",
    ),
    "unknown_route_setting": (
        lambda d: route(d, type="RELAY", via="cologne", settings={"compression": True}),
        "routes.r.settings.compression: unknown key (allowed: checksum, streams, timeout, window)",
    ),
    "bbcp_setting_on_rsync_route": (
        lambda d: route(d, type="RELAY", via="cologne", settings={"streams": 8}),
        "routes.r.settings.streams: does not apply to method rsync (only bbcp)",
    ),
    # 9. min_lta_copies that the archives in the file can reach.
    "min_lta_copies_above_archives": (
        lambda d: locations(d, "ccat")["telescope_computer"]["retention"].update(min_lta_copies=3),
        "sites.ccat.locations.telescope_computer.retention.min_lta_copies: 3 verified archive copies can never "
        "exist: the file has 2 active LONG_TERM_ARCHIVE location(s)",
    ),
    "min_lta_copies_above_active_archives": (
        lambda d: (
            locations(d, "us")["lta"].update(active=False),
            locations(d, "ccat")["telescope_computer"]["retention"].update(min_lta_copies=2),
        ),
        "retention.min_lta_copies: 2 verified archive copies can never exist: the file has 1 active",
    ),
    # Found along the way: each passed check and broke a DAG run or apply.
    "site_without_locations": (
        lambda d: d["sites"].update(lab={"name": "Lab"}),
        "sites.lab.locations: at least one location is required",
    ),
    "archive_site_without_buffer": (
        lambda d: locations(d, "us")["buffer"].update(active=False),
        "sites.us.locations: a site with a LONG_TERM_ARCHIVE location needs an active BUFFER",
    ),
    "archive_on_disk": (
        lambda d: locations(d, "us").update(disk_lta={"type": "LONG_TERM_ARCHIVE", "root_path": "/data/us/lta"}),
        "sites.us.locations.disk_lta.storage: an active LONG_TERM_ARCHIVE location must be S3 storage",
    ),
    "archive_on_tape": (
        lambda d: locations(d, "us").update(tape={"type": "LONG_TERM_ARCHIVE", "storage": "TAPE", "library": "t"}),
        "sites.us.locations.tape.storage: an active LONG_TERM_ARCHIVE location must be S3 storage",
    ),
    "retention_at_an_archive": (
        lambda d: locations(d, "us")["lta"].update(retention={"period": "30d"}),
        "sites.us.locations.lta.retention: does not apply to a LONG_TERM_ARCHIVE location",
    ),
    "buffer_setting_on_a_source": (
        lambda d: locations(d, "ccat")["telescope_computer"]["settings"].update(bundle_size_limit="1GB"),
        "sites.ccat.locations.telescope_computer.settings.bundle_size_limit: does not apply to a SOURCE location "
        "(only BUFFER)",
    ),
    "source_retention_key_on_a_buffer": (
        lambda d: locations(d, "ccat")["buffer"]["retention"].update(min_lta_copies=1),
        "sites.ccat.locations.buffer.retention.min_lta_copies: does not apply to a BUFFER location (only SOURCE)",
    ),
    "text_setting_not_text": (
        lambda d: locations(d, "us")["buffer"]["settings"].update(ssh_conn_id=None),
        "sites.us.locations.buffer.settings.ssh_conn_id: expected a name without spaces, got None",
    ),
    "nul_in_text": (
        lambda d: d.update(observatory="CCAT\x00"),
        "observatory: contains a NUL character",
    ),
    "nul_in_instrument_module": (
        lambda d: d["instruments"]["CHAI"].update(modules=["LFA", "H\x00FA"]),
        "instruments.CHAI.modules: contains a NUL character",
    ),
    "bad_bucket": (
        lambda d: locations(d, "us")["lta"].update(bucket="my bucket"),
        "sites.us.locations.lta.bucket: 'my bucket' is not a valid bucket name",
    ),
    "bad_endpoint": (
        lambda d: locations(d, "us")["lta"].update(endpoint_url="s3.example.org"),
        "sites.us.locations.lta.endpoint_url: 's3.example.org' is not an http:// or https:// URL",
    ),
    "bad_region": (
        lambda d: locations(d, "us")["lta"].update(region="us east"),
        "sites.us.locations.lta.region: 'us east' is not a valid region name",
    ),
}


@pytest.mark.parametrize(("mutate", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_check_refuses_what_a_dag_or_apply_cannot_run(mutate, message: str) -> None:
    document = example_document()
    mutate(document)
    assert message in problems_of(document)


def test_only_the_faulty_keys_are_named() -> None:
    document = example_document()
    locations(document, "ccat")["buffer"]["settings"]["bundle_size_limit"] = 0
    route(document, type="RELAY", via="ccat")
    assert problems_of(document).splitlines() == [
        "t.yaml: sites.ccat.locations.buffer.settings.bundle_size_limit: 0 is less than the minimum of 1 byte",
        "t.yaml: routes.r.via: 'ccat' is the route's origin; a RELAY goes through a third site",
    ]


def test_roots_are_normalised_and_other_sites_may_reuse_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCAT_DATA_ROOT", "/data/")  # a trailing slash in the environment is common
    document = example_document()
    locations(document, "ccat")["buffer"]["root_path"] = "/data//ccat/./buffer/"
    # Another site is another machine: the same path there is fine.
    locations(document, "us")["buffer"]["root_path"] = "/data/ccat/buffer"
    # Siblings sharing a prefix are not nested.
    locations(document, "cologne")["ramses"]["root_path"] = "${CCAT_DATA_ROOT}/cologne/buffer2"
    loaded = topology.loads(yaml.safe_dump(document))
    assert loaded.location("ccat/buffer").storage_details["root_path"] == "/data/ccat/buffer"
    assert loaded.location("ccat/telescope_computer").storage_details["root_path"] == "/data/ccat/telescope_computer"
    assert loaded.location("cologne/ramses").storage_details["root_path"] == "/data/cologne/buffer2"


def test_inactive_locations_are_not_checked_for_overlap_or_archives() -> None:
    document = example_document()
    # An inactive location runs nothing: a retired buffer may keep the root its successor uses.
    locations(document, "ccat")["old_buffer"] = {"type": "BUFFER", "root_path": "/data/ccat/buffer", "active": False}
    # ... and an archive kept for history may be on storage nothing implements.
    locations(document, "us")["tape"] = {
        "type": "LONG_TERM_ARCHIVE",
        "storage": "TAPE",
        "library": "t",
        "active": False,
    }
    topology.loads(yaml.safe_dump(document))


def test_min_lta_copies_default_is_accepted_without_archives() -> None:
    # Without archives nothing is archived and so nothing deleted anyway; such a file
    # (tests/test_routing.py uses one) must still load.
    document = example_document()
    del locations(document, "cologne")["lta"]
    del locations(document, "us")["lta"]
    assert topology.loads(yaml.safe_dump(document)).location("ccat/telescope_computer").retention.min_lta_copies == 1


def test_route_settings_are_stored_parsed() -> None:
    document = example_document()
    route(document, type="RELAY", via="cologne", method="bbcp",
          settings={"streams": 8, "window": "=16M", "checksum": False, "timeout": "10m"})  # fmt: skip
    (loaded,) = topology.loads(yaml.safe_dump(document)).routes
    assert loaded.settings == {"streams": 8, "window": "=16M", "checksum": False, "timeout": 600}


def test_sizes_and_durations_are_exact() -> None:
    document = example_document()
    locations(document, "ccat")["buffer"]["settings"].update(bundle_size_limit="1.15GB", bundle_max_age="1.5h")
    settings = topology.loads(yaml.safe_dump(document)).location("ccat/buffer").settings
    assert settings["bundle_size_limit"] == 1_150_000_000
    assert settings["bundle_max_age"] == 5400


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8 text"),
        (b"", "(top level): the file is empty"),
        (b"# only a comment\n", "(top level): the file is empty"),
        (b"- observatory: x\n", "(top level): expected a mapping, got list"),
        (b"just text\n", "(top level): expected a mapping, got str"),
        (b"42\n", "(top level): expected a mapping, got int"),
        (b"? [a, b]\n: 1\n", "not valid YAML: a mapping key must be a plain value"),
        (b"[" * 5000, "not valid YAML: nested too deeply"),
        (b"observatory: " + b"9" * 5000 + b"\n", "not valid YAML"),
    ],
    ids=["binary", "empty", "comment_only", "list", "scalar", "int", "list_key", "deep", "huge_int"],
)
def test_files_that_are_not_a_topology_are_refused_cleanly(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(content)
    with pytest.raises(topology.TopologyError) as caught:
        topology.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_directory_and_unreadable_file_are_refused_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(topology.TopologyError, match=f"^{tmp_path}: cannot read file: Is a directory$"):
        topology.load(tmp_path)
    with pytest.raises(topology.TopologyError, match="cannot read file: No such file or directory"):
        topology.load(tmp_path / "missing.yaml")
    unreadable = tmp_path / "secret.yaml"
    unreadable.write_text("observatory: x\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    # Tests may run as root, which reads any file: refuse the read itself.
    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(topology.TopologyError, match=f"^{unreadable}: cannot read file: Permission denied$"):
        topology.load(unreadable)


@pytest.mark.airflow
def test_reserved_task_ids_are_the_announce_tasks() -> None:
    from ccat_operators.assets import OUTPUT_OF_STAGE, announce_task_id

    assert {announce_task_id(stage) for stage in OUTPUT_OF_STAGE} == topology.RESERVED_TASK_IDS


def test_the_readme_format_example_is_a_valid_topology() -> None:
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    start = readme.index("```yaml\nobservatory:") + len("```yaml\n")
    example = topology.loads(readme[start : readme.index("```", start)], source="README.md")
    assert {location.key for location in example.locations} >= {"ccat/telescope_computer", "cologne/lta"}
