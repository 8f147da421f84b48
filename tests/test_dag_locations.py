"""Per-location DAGs draw their locations from the operation-location matrix, once per file version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ccat_operators import topology
from ccat_operators.dag_locations import dag_topology, locations_serving
from ccat_operators.queues import OPERATIONS_BY_LOCATION_TYPE, Operation
from tests.conftest import EXAMPLE_TOPOLOGY


def write_topology(path: Path, mutate=None) -> Path:
    """Write the example topology to ``path``, optionally changed by ``mutate(document)`` first."""
    document = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    if mutate is not None:
        mutate(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def topology_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_topology(tmp_path / "topology.yaml")
    monkeypatch.setenv("CCAT_TOPOLOGY", str(path))
    return path


def served(operation: Operation) -> list[tuple[str, str]]:
    return [(location.key, queue) for location, queue in locations_serving(operation)]


def test_each_operation_gets_the_active_locations_whose_type_serves_it(topology_file: Path) -> None:
    assert served(Operation.RAW_DATA_PACKAGE_CREATION) == [
        ("ccat/telescope_computer", "ccat_telescope_computer_raw_data_package_creation")
    ]
    assert served(Operation.LONG_TERM_ARCHIVE_TRANSFER) == [
        ("cologne/lta", "cologne_lta_long_term_archive_transfer"),
        ("us/lta", "us_lta_long_term_archive_transfer"),
    ]
    assert served(Operation.STAGING) == [("cologne/ramses", "cologne_ramses_staging")]
    # No LONG_TERM_ARCHIVE deletes; file order is kept.
    assert [key for key, _ in served(Operation.DELETION)] == [
        "ccat/telescope_computer",
        "ccat/buffer",
        "cologne/buffer",
        "cologne/ramses",
        "us/buffer",
    ]
    # Every operation, against the matrix itself.
    locations = topology.load(topology_file).locations
    for operation in Operation:
        expected = [loc.key for loc in locations if operation in OPERATIONS_BY_LOCATION_TYPE[loc.type]]
        assert [key for key, _ in served(operation)] == expected, operation


def test_inactive_locations_get_no_tasks(topology_file: Path) -> None:
    def retire_ramses_and_us_lta(document: dict) -> None:
        document["sites"]["cologne"]["locations"]["ramses"]["active"] = False
        document["sites"]["us"]["locations"]["lta"]["active"] = False

    write_topology(topology_file, retire_ramses_and_us_lta)
    assert served(Operation.STAGING) == []
    assert served(Operation.LONG_TERM_ARCHIVE_TRANSFER) == [("cologne/lta", "cologne_lta_long_term_archive_transfer")]
    assert [key for key, _ in served(Operation.MONITORING)] == [
        "ccat/telescope_computer",
        "ccat/buffer",
        "cologne/buffer",
        "cologne/lta",
        "us/buffer",
    ]


def test_the_file_is_parsed_once_per_version(topology_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Path] = []
    real_load = topology.load

    def counting_load(path):
        loads.append(path)
        return real_load(path)

    monkeypatch.setattr(topology, "load", counting_load)
    first = dag_topology()
    for operation in Operation:  # every DAG file of one parse
        locations_serving(operation)
    assert dag_topology() is first
    assert loads == [topology_file]

    def retire_ramses(document: dict) -> None:
        document["sites"]["cologne"]["locations"]["ramses"]["active"] = False

    write_topology(topology_file, retire_ramses)  # an edit: a new version, parsed again
    assert served(Operation.STAGING) == []
    assert loads == [topology_file, topology_file]

    # The file expands ${VARIABLE}s: a changed environment is a new version too.
    monkeypatch.setenv("CCAT_DAG_LOCATIONS_TEST", "1")
    dag_topology()
    assert len(loads) == 3


def test_an_invalid_file_raises_naming_the_file_and_the_key(topology_file: Path) -> None:
    def misspell_a_type(document: dict) -> None:
        document["sites"]["cologne"]["locations"]["lta"]["type"] = "ARCHIVE"

    write_topology(topology_file, misspell_a_type)
    with pytest.raises(topology.TopologyError) as caught:
        locations_serving(Operation.LONG_TERM_ARCHIVE_TRANSFER)
    assert str(caught.value).startswith(f"{topology_file}: sites.cologne.locations.lta.type: 'ARCHIVE' is not one of")
    assert caught.value.__notes__ == [
        f"DAGs that lay out tasks per data location do not load until {topology_file} is fixed "
        f"(check it with `ccat topology check {topology_file}`)."
    ]

    # Fixed: the same path loads again (a refusal is never cached).
    write_topology(topology_file)
    assert served(Operation.STAGING) == [("cologne/ramses", "cologne_ramses_staging")]


def test_a_missing_file_raises_saying_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv("CCAT_TOPOLOGY", str(missing))
    with pytest.raises(topology.TopologyError, match=rf"^{re.escape(str(missing))}: cannot read file: No such file"):
        locations_serving(Operation.DELETION)
