"""Queue discovery follows the seeds' naming convention and operation-location matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ccat_operators import queues, topology
from ccat_operators.cli import main
from ccat_operators.opsdb import OpsDb
from ccat_operators.queues import Operation
from tests.conftest import EXAMPLE_TOPOLOGY


def names(found: list[queues.Queue]) -> list[str]:
    return [queue.name for queue in found]


def test_example_topology_queues_follow_the_seeds(ops_db: OpsDb, example_topology) -> None:
    found = names(queues.discover(ops_db))
    for expected in (
        "ccat_telescope_computer_raw_data_package_creation",
        "ccat_telescope_computer_deletion",
        "ccat_buffer_data_transfer_package_creation",
        "cologne_buffer_data_transfer",
        "cologne_buffer_data_transfer_unpacking",
        "cologne_lta_long_term_archive_transfer",
        "cologne_ramses_staging",
        "us_lta_long_term_archive_transfer",
    ):
        assert expected in found
    # The matrix gives an LTA no deletion queue and a SOURCE no transfer queue.
    assert "cologne_lta_deletion" not in found
    assert "ccat_telescope_computer_data_transfer" not in found
    assert len(found) == len(set(found)) == 3 + 5 + 5 + 2 + 3 + 5 + 2


def test_matrix_matches_the_seeds() -> None:
    matrix = {t.value: [o.value for o in ops] for t, ops in queues.OPERATIONS_BY_LOCATION_TYPE.items()}
    assert matrix == {
        "SOURCE": ["raw_data_package_creation", "deletion", "monitoring"],
        "BUFFER": [
            "data_transfer_package_creation",
            "data_transfer",
            "data_transfer_unpacking",
            "deletion",
            "monitoring",
        ],
        "LONG_TERM_ARCHIVE": ["long_term_archive_transfer", "monitoring"],
        "PROCESSING": ["staging", "deletion", "monitoring"],
    }
    assert queues.queue_name("cologne", "lta", Operation.LONG_TERM_ARCHIVE_TRANSFER) == (
        "cologne_lta_long_term_archive_transfer"
    )


def test_filters_and_inactive_locations(ops_db: OpsDb, example_topology, tmp_path: Path) -> None:
    assert names(queues.discover(ops_db, site="cologne", location="buffer")) == [
        "cologne_buffer_data_transfer_package_creation",
        "cologne_buffer_data_transfer",
        "cologne_buffer_data_transfer_unpacking",
        "cologne_buffer_deletion",
        "cologne_buffer_monitoring",
    ]
    assert {q.site for q in queues.discover(ops_db, location="buffer")} == {"ccat", "cologne", "us"}

    document = yaml.safe_load(EXAMPLE_TOPOLOGY.read_text())
    document["sites"]["cologne"]["locations"]["ramses"]["active"] = False
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(document))
    topology.apply(ops_db, topology.load(path))
    assert not any(name.startswith("cologne_ramses") for name in names(queues.discover(ops_db)))
    with pytest.raises(LookupError, match="no active data location matches cologne/ramses"):
        queues.discover(ops_db, site="cologne", location="ramses")


def test_worker_command_serves_exactly_the_sites_queues(ops_db: OpsDb, example_topology) -> None:
    argv = queues.worker_command(queues.discover(ops_db, site="ccat"), "ccat")
    assert argv[:4] == ["airflow", "celery", "worker", "--queues"]
    assert argv[4].split(",") == [
        "ccat_telescope_computer_raw_data_package_creation",
        "ccat_telescope_computer_deletion",
        "ccat_telescope_computer_monitoring",
        "ccat_buffer_data_transfer_package_creation",
        "ccat_buffer_data_transfer",
        "ccat_buffer_data_transfer_unpacking",
        "ccat_buffer_deletion",
        "ccat_buffer_monitoring",
    ]
    assert argv[5:] == ["--celery-hostname", "ccat@%h"]


def test_cli_lists_queues_and_worker_command(ops_db_url: str, example_topology, capsys) -> None:
    assert main(["queues", "--site", "cologne", "--location", "lta", "--db", ops_db_url]) == 0
    assert capsys.readouterr().out.split() == ["cologne_lta_long_term_archive_transfer", "cologne_lta_monitoring"]
    assert main(["queues", "--site", "us", "--worker-command", "--db", ops_db_url]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("airflow celery worker --queues us_buffer_data_transfer_package_creation,")
    assert line.endswith("--celery-hostname us@%h")
    assert main(["queues", "--site", "mars", "--db", ops_db_url]) == 1
    assert "no active data location matches mars" in capsys.readouterr().err


def test_pools_one_per_pair_of_sites_a_leg_takes(capsys) -> None:
    import json

    assert main(["pools", "--topology", str(EXAMPLE_TOPOLOGY), "--slots", "2"]) == 0
    pools = json.loads(capsys.readouterr().out)
    # primary legs ccat -> each archive site, secondary legs between the archive sites (tests/test_cli.py has more)
    assert set(pools) == {f"ccat_transfer_{a}_to_{b}" for a, b in (("ccat", "cologne"), ("ccat", "us"),
                                                                   ("cologne", "us"), ("us", "cologne"))}  # fmt: skip
    assert {pool["slots"] for pool in pools.values()} == {2}
