"""Topology as code: idempotent apply, deactivation instead of deletion, whole-file refusal."""

from __future__ import annotations

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
    assert source["root_path"] == f"{data_root}/ccat/telescope_computer"
    assert source["settings"]["package_size_limit"] == 50 * 10**9


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
    assert ramses is not None and ramses["active"] is False

    # Putting it back reactivates the same row.
    report = topology.apply(ops_db, topology.load(EXAMPLE_TOPOLOGY))
    assert report.changes == ["updated location cologne/ramses"]
    again = ops_db.fetch_one("data_location_by_key", site="cologne", name="ramses")
    assert again["id"] == ramses["id"] and again["active"] is True


def test_changed_setting_updates_only_that_location(ops_db: OpsDb, example_topology, tmp_path: Path) -> None:
    document = example_document()
    document["sites"]["ccat"]["locations"]["buffer"]["settings"]["bundle_max_age"] = "2h"
    report = topology.apply(ops_db, topology.load(write(tmp_path, document)))
    assert report.changes == ["updated location ccat/buffer"]
    buffer = ops_db.fetch_one("data_location_by_key", site="ccat", name="buffer")
    assert buffer["settings"]["bundle_max_age"] == 7200


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
