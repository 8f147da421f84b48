"""`ccat deploy compose|workers`: what runs where, read from a topology file alone (no database)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
import yaml

from ccat_operators import deploy, queues, topology
from ccat_operators.cli import main
from tests.conftest import EXAMPLE_TOPOLOGY, REPO

OTHER_TOPOLOGY = REPO / "tests" / "topologies" / "other_observatory.yaml"

#: An archive site with two buffers; a DIRECT route delivers into the one that is not preferred.
DIRECT_TO_SECOND_BUFFER = """
observatory: O
telescope: T
sites:
  peak:
    name: Peak
    locations:
      instrument: {type: SOURCE, root_path: /srv/peak/instrument}
      spool: {type: BUFFER, root_path: /srv/peak/spool}
  vault:
    name: Vault
    locations:
      front: {type: BUFFER, root_path: /srv/vault/front, priority: 1}
      back: {type: BUFFER, root_path: /srv/vault/back, priority: 2}
      store: {type: LONG_TERM_ARCHIVE, storage: S3, bucket: store, conn_id: vault_store}
routes:
  peak_to_back:
    type: DIRECT
    from: peak
    to: vault
    to_location: vault/back
"""


def write(tmp_path: Path, text: str, name: str = "topology.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def compose_of(tmp_path: Path, text: str) -> dict:
    return yaml.safe_load(deploy.compose_file(write(tmp_path, text), tmp_path))


def test_receiving_buffers_follow_the_routing_rules(tmp_path: Path) -> None:
    assert [b.key for b in deploy.receiving_buffers(topology.load(EXAMPLE_TOPOLOGY))] == ["cologne/buffer", "us/buffer"]
    # RELAY through hilo; bonn's preferred buffer is inactive, so its second one receives
    other = topology.load(OTHER_TOPOLOGY)
    assert [b.key for b in deploy.receiving_buffers(other)] == ["hilo/relay", "bonn/landing", "tokyo/landing"]
    assert deploy.primary_buffer(next(s for s in other.sites if s.short_name == "bonn")).name == "landing"
    # a DIRECT route replaces the leg into the primary buffer: only vault/back receives
    direct = topology.load(write(tmp_path, DIRECT_TO_SECOND_BUFFER))
    assert [b.key for b in deploy.receiving_buffers(direct)] == ["vault/back"]
    services = compose_of(tmp_path, DIRECT_TO_SECOND_BUFFER)["services"]
    assert services["vault-ssh"]["volumes"] == ["./keys:/keys:ro", "vault-back:/srv/vault/back"]
    assert "AIRFLOW_CONN_CCAT_SSH_VAULT_BACK" in services["airflow-scheduler"]["environment"]
    assert "AIRFLOW_CONN_CCAT_SSH_VAULT_FRONT" not in services["airflow-scheduler"]["environment"]
    assert "peak-ssh" not in services  # nothing is delivered to a site with only a SOURCE's buffer


def test_a_site_worker_serves_the_matrix_queues_of_its_active_locations() -> None:
    other = topology.load(OTHER_TOPOLOGY)
    workers = {worker.site.short_name: worker for worker in deploy.site_workers(other)}
    assert list(workers) == ["summit", "hilo", "bonn", "tokyo"]
    bonn = workers["bonn"]
    assert [location.name for location in bonn.locations] == ["landing", "tape_robot", "cluster"]  # not old_disks
    expected = [q for loc in bonn.locations for q in queues.queues_for_location("bonn", loc.name, loc.type)]
    assert bonn.argv() == queues.worker_command(expected, "bonn")
    assert deploy.central_worker_argv() == ["airflow", "celery", "worker", "--queues", "default",
                                            "--celery-hostname", "central@%h"]  # fmt: skip


def test_deploy_workers_prints_each_sites_command_as_the_compose_file_runs_it(capsys) -> None:
    assert main(["deploy", "workers", str(OTHER_TOPOLOGY)]) == 0
    listing = capsys.readouterr().out
    commands = [line for line in listing.splitlines() if line and not line.startswith("#")]
    compose = yaml.safe_load(deploy.compose_file(OTHER_TOPOLOGY, REPO))
    services = ["airflow-worker", *(deploy.worker_service(site) for site in ("summit", "hilo", "bonn", "tokyo"))]
    in_compose = [compose["services"][name]["command"] for name in services]
    assert sorted(shlex.join(shlex.split(command)[1:]) for command in commands) == sorted(in_compose)
    assert "#   landing: BUFFER, /srv/bonn/landing" in listing
    assert "#   tape_robot: LONG_TERM_ARCHIVE, s3://bonn-raw/observatory/raw/ (connection bonn_objects)" in listing
    assert "old_disks" not in listing

    assert main(["deploy", "workers", str(OTHER_TOPOLOGY), "--site", "hilo"]) == 0
    hilo = deploy.site_workers(topology.load(OTHER_TOPOLOGY))[1]
    assert capsys.readouterr().out == shlex.join(hilo.argv()) + "\n"

    assert main(["deploy", "workers", str(OTHER_TOPOLOGY), "--site", "cologne"]) == 1
    assert "no site 'cologne' with an active location (sites: summit, hilo, bonn, tokyo)" in capsys.readouterr().err


def test_deploy_compose_defaults_to_the_shipped_topology_and_writes_the_committed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("CCAT_TOPOLOGY", raising=False)
    assert main(["deploy", "compose"]) == 0
    assert capsys.readouterr().out == (REPO / "docker-compose.yaml").read_text()
    # --output: relative paths are the output directory's; a topology outside it is mounted by absolute path
    output = tmp_path / "docker-compose.yaml"
    assert main(["deploy", "compose", str(OTHER_TOPOLOGY), "--output", str(output)]) == 0
    assert capsys.readouterr().out == f"wrote {output}\n"
    written = yaml.safe_load(output.read_text())
    assert f"{OTHER_TOPOLOGY}:/opt/airflow/topology/other_observatory.yaml:ro" in written["x-airflow-common"]["volumes"]
    assert [path.name for path in tmp_path.iterdir()] == ["docker-compose.yaml"]  # no partial file left


def test_the_output_depends_on_the_file_not_the_callers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = deploy.compose_file(EXAMPLE_TOPOLOGY, REPO)
    monkeypatch.setenv("CCAT_DATA_ROOT", "/somewhere/else")  # what `make demo` sets, for instance
    monkeypatch.setenv("CCAT_S3_ENDPOINT", "http://127.0.0.1:9")
    before = dict(os.environ)
    assert deploy.compose_file(EXAMPLE_TOPOLOGY, REPO) == reference
    assert dict(os.environ) == before  # the containers' environment was only borrowed
    assert "/data/cologne/buffer" in reference and "/somewhere" not in reference


def test_an_invalid_topology_is_the_one_line_error_of_topology_check(tmp_path: Path, capsys) -> None:
    bad = write(tmp_path, EXAMPLE_TOPOLOGY.read_text().replace("type: BUFFER", "type: BUFER", 1))
    assert main(["topology", "check", str(bad)]) == 1
    expected = capsys.readouterr().err
    for command in (["deploy", "compose", str(bad)], ["deploy", "workers", str(bad)]):
        assert main(command) == 1
        captured = capsys.readouterr()
        assert captured.err == expected and captured.out == ""
        assert len(captured.err.splitlines()) == 1 and "'BUFER' is not one of" in captured.err


def test_a_variable_the_containers_do_not_have_is_explained(tmp_path: Path, monkeypatch, capsys) -> None:
    text = EXAMPLE_TOPOLOGY.read_text().replace("/ramses", "/${RAMSES_DIR}")
    monkeypatch.setenv("RAMSES_DIR", "ramses")  # set here, but not in the containers
    assert main(["deploy", "compose", str(write(tmp_path, text))]) == 1
    error = capsys.readouterr().err
    assert "environment variable RAMSES_DIR is not set and has no default" in error
    assert "read it with CCAT_DATA_ROOT=/data" in error and "(${VAR:-value})" in error


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("/cologne/ramses", "/cologne/ra:mses"), "sites.cologne.locations.ramses.root_path: '/data/cologne/ra:mses' "
                                                  "contains ':', which a compose volume cannot mount"),
        (("conn_id: ccat_s3_us", "conn_id: ccat_s3_cologne"), "is already cologne/lta (conn_id)'s, a different"),
        (("conn_id: ccat_s3_us", "conn_id: ccat_ops_db"), "us/lta (conn_id): 'ccat_ops_db' is ops-db's connection"),
        (("conn_id: ccat_s3_us", "conn_id: ccat_s3_us/x"), "connection id 'ccat_s3_us/x' is not letters, digits"),
    ],
)  # fmt: skip
def test_what_compose_cannot_express_is_refused_by_name(tmp_path: Path, change, message, capsys) -> None:
    path = write(tmp_path, EXAMPLE_TOPOLOGY.read_text().replace(*change))
    assert main(["deploy", "compose", str(path)]) == 1
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and message in error, error


def test_clashing_names_are_refused(tmp_path: Path) -> None:
    clash = DIRECT_TO_SECOND_BUFFER.replace("  vault:\n", "  s3:\n").replace("to: vault", "to: s3")
    clash = clash.replace("back: {type: BUFFER", "data: {type: BUFFER").replace("vault/back", "s3/data")
    with pytest.raises(deploy.ComposeError, match=r"sites\.s3\.locations\.data: its volume name 's3-data' is a"):
        deploy.compose_file(write(tmp_path, clash), tmp_path)
    # two receiving buffers at different sites (so SSH endpoints) under one connection name
    mirror = "  mirror:\n    name: Mirror\n    locations:\n"
    mirror += "      in: {type: BUFFER, root_path: /in, settings: {ssh_conn_id: landing}}\n"
    mirror += "      arc: {type: LONG_TERM_ARCHIVE, storage: S3, bucket: b, conn_id: c}\n"
    shared = DIRECT_TO_SECOND_BUFFER.replace("routes:", mirror + "routes:")
    shared = shared.replace("priority: 2}", "priority: 2, settings: {ssh_conn_id: landing}}")
    with pytest.raises(deploy.ComposeError, match="AIRFLOW_CONN_LANDING is already vault/back"):
        deploy.compose_file(write(tmp_path, shared), tmp_path)


def test_secrets_and_dollars(tmp_path: Path) -> None:
    """Archives without conn_id get boto3's default credentials; a `$` in a path is not interpolated."""
    text = DIRECT_TO_SECOND_BUFFER.replace(", conn_id: vault_store", "").replace("/srv/vault/back", "/srv/$HOME/back")
    compose = compose_of(tmp_path, text)
    environment = compose["x-airflow-common"]["environment"]
    assert environment["AWS_ACCESS_KEY_ID"] == "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"  # no endpoint: AWS
    assert "vault-back:/srv/$$HOME/back" in compose["services"]["airflow-worker-vault"]["volumes"]
    local = text.replace("bucket: store", "bucket: store, endpoint_url: 'http://s3:8333'")
    environment = compose_of(tmp_path, local)["x-airflow-common"]["environment"]
    assert environment["AWS_ACCESS_KEY_ID"] == "ccat"
    assert environment["AWS_SECRET_ACCESS_KEY"] == "${S3_SECRET:-ccat-s3-secret}"
