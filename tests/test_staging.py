"""Staging: archived packages back out to a scientist, verified; hostile requests and answers refused."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest

from ccat_dev.s3 import LocalS3
from ccat_operators import archive, staging
from ccat_operators.opsdb import OpsDb
from tests import pipeline
from tests.helpers import file_random_observation, location_row


@pytest.fixture
def world(ops_db: OpsDb, data_root: Path, tmp_path: Path, s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch):
    """Packages archived in both sites' S3 archives."""
    filed = pipeline.archive_world(ops_db, tmp_path, s3_server, monkeypatch)
    for site in ("cologne", "us"):
        assert archive.archive_pending(ops_db, lta(ops_db, site)).failed == {}
    return filed


def lta(db: OpsDb, site: str) -> dict:
    return location_row(db, f"{site}/lta")


def first_observation(db: OpsDb) -> int:
    return db.conn.execute("SELECT min(id) AS id FROM executed_obs_unit").fetchone()["id"]


def request_for(observation: int, retention: str = "1d") -> staging.StagingRequest:
    return staging.StagingRequest.from_params(
        {"observations": [observation], "location": "cologne/ramses", "requested_by": "ada", "retention": retention}
    )


def job_row(db: OpsDb, job_id: int) -> dict:
    return db.fetch_one("staging_job", id=job_id)


def no_part_files(root: Path) -> bool:
    return not list(root.rglob("*.part"))


def test_staged_files_equal_the_originals_and_asking_again_redoes_nothing(
    ops_db: OpsDb, world, data_root: Path
) -> None:
    observation = first_observation(ops_db)
    request = request_for(observation)
    job = staging.create_job(ops_db, request)
    result = staging.stage_job(ops_db, job.id)
    assert result.failed == {} and result.staged
    staged_root = data_root / "cologne" / "ramses" / job.name
    files = ops_db.conn.execute(
        "SELECT relative_path FROM raw_data_file WHERE executed_obs_unit_id = %s", (observation,)
    ).fetchall()
    assert files
    for row in files:
        assert (staged_root / row["relative_path"]).read_bytes() == world[row["relative_path"]]
    assert not list(staged_root.rglob("*.part"))
    copies = ops_db.conn.execute("SELECT * FROM physical_copy WHERE staging_job_id = %s", (job.id,)).fetchall()
    assert {c["status"] for c in copies} == {"STAGED"} and len(copies) == len(result.staged)

    again = staging.create_job(ops_db, request)
    assert again.id == job.id
    second = staging.stage_job(ops_db, again.id)
    assert second.staged == [] and sorted(second.already) == sorted(result.staged)


BAD_REQUESTS = [
    ({"location": "cologne/ramses"}, "name the observations"),
    ({"location": "cologne/ramses", "observations": [1], "obs_unit": "x"}, "either observation ids or an obs_unit"),
    (
        {"location": "cologne/ramses", "obs_unit": "x", "start_date": "2026-02-01", "end_date": "2026-01-01"},
        "end_date 2026-01-01 is before start_date 2026-02-01",
    ),
    ({"location": "cologne/ramses", "observations": [1], "retention": "forever"}, "retention:"),
]


@pytest.mark.parametrize(("params", "message"), BAD_REQUESTS)
def test_bad_staging_requests_are_refused_clearly(params: dict, message: str) -> None:
    with pytest.raises(staging.StagingRequestError, match=message):
        staging.StagingRequest.from_params(params)


def test_staging_request_for_unknown_things_is_refused(ops_db: OpsDb, world) -> None:
    with pytest.raises(staging.StagingRequestError, match="unknown observation id"):
        staging.create_job(ops_db, staging.StagingRequest(location="cologne/ramses", observations=(999_999,)))
    with pytest.raises(staging.StagingRequestError, match="not an active PROCESSING location"):
        staging.create_job(ops_db, staging.StagingRequest(location="cologne/buffer", observations=(1,)))
    with pytest.raises(staging.StagingRequestError, match="no observation of obs unit 'nothing'"):
        staging.create_job(ops_db, staging.StagingRequest(location="cologne/ramses", obs_unit="nothing"))


BAD_PARAMS = [
    ({"location": "cologne/ramses", "observations": [1], "retention": "999999999w"}, "longer than the maximum"),
    ({"location": "cologne/ramses", "observations": [2**70]}, "is not an observation id (1 to"),
    ({"location": "cologne/ramses", "observations": ["abc"]}, "'abc' is not an observation id"),
    ({"location": "cologne/ramses", "obs_unit": "x", "start_date": "2026-13-40"}, "start_date: '2026-13-40' is not"),
    ({"location": None, "observations": [1]}, "location: None is not a site/location name"),
    (
        {"location": "cologne/ramses", "observations": [1], "timeout": "31d"},
        "timeout: '31d' is longer than the maximum",
    ),
    ({"location": "cologne/ramses", "observations": [1], "timeout": "soon"}, "timeout: 'soon' is not a duration"),
    ({"location": "cologne/ramses", "observations": "12"}, "observations: '12' is not a list of observation ids"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_absurd_values_are_refused_with_a_message(params: dict, message: str) -> None:
    with pytest.raises(staging.StagingRequestError, match=re.escape(message)):
        staging.StagingRequest.from_params(params)


@pytest.mark.airflow
@pytest.mark.parametrize(
    ("param", "value"),
    [("retention", "999999999w"), ("observations", [2**70]), ("timeout", "forever"), ("timeout", "0h")],
)
def test_the_form_schema_refuses_absurd_values(param: str, value) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    from tests.conftest import REPO

    dag = DagBag(dag_folder=str(REPO / "dags" / "ccat_staging.py")).dags["ccat_staging"]
    with pytest.raises(ParamValidationError):
        dag.params.get_param(param).resolve(value)


def test_a_refused_request_leaves_no_job_behind(ops_db: OpsDb, world, data_root: Path) -> None:
    # Filed but not packaged yet: nothing to stage, and nothing recorded.
    file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [1000], obs_unit="later", minute=40)
    later = ops_db.conn.execute("SELECT max(id) AS id FROM executed_obs_unit").fetchone()["id"]
    with pytest.raises(staging.StagingRequestError, match="no packaged data yet"):
        staging.create_job(ops_db, request_for(later))
    assert ops_db.conn.execute("SELECT count(*) AS n FROM staging_job").fetchone()["n"] == 0


def test_a_request_not_archived_yet_waits_as_a_job_then_stages_what_was_filed(
    ops_db: OpsDb, world, data_root: Path
) -> None:
    later = file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [1000, 2000], minute=40)
    observation = ops_db.conn.execute("SELECT max(id) AS id FROM executed_obs_unit").fetchone()["id"]
    request = request_for(observation)
    job = staging.create_job(ops_db, request, waiting="waiting for 2 files to be packaged and archived")
    row = job_row(ops_db, job.id)
    assert (row.status, row.failure_reason) == ("PENDING", "waiting for 2 files to be packaged and archived")
    assert ops_db.fetch_all("staging_job_packages", job_id=job.id) == []
    with pytest.raises(staging.StagingRequestError, match="no packaged data yet"):
        staging.add_packages(ops_db, job.id, [observation])

    pipeline.archive_filed(ops_db)
    assert staging.create_job(ops_db, request).id == job.id  # archived now: the same job, ready
    assert len(staging.add_packages(ops_db, job.id, [observation])) == 1
    result = staging.stage_job(ops_db, job.id)
    assert result.failed == {} and len(result.staged) == 1
    row = job_row(ops_db, job.id)
    assert (row.status, row.failure_reason) == ("COMPLETED", None)
    for relative, content in later.items():
        assert (data_root / "cologne" / "ramses" / job.name / relative).read_bytes() == content


def test_a_partly_packaged_observation_is_refused_unless_the_request_waits(
    ops_db: OpsDb, world, data_root: Path
) -> None:
    observation = first_observation(ops_db)
    start = ops_db.conn.execute("SELECT start_time FROM executed_obs_unit WHERE id = %s", (observation,)).fetchone()
    # More files of the same observation, filed after it was packaged (another module).
    file_random_observation(ops_db, data_root / "ccat" / "telescope_computer", [1000], module="350GHz",
                            minute=start["start_time"].minute)  # fmt: skip
    with pytest.raises(staging.StagingRequestError, match="1 file.s. of the observations are not packaged yet"):
        staging.create_job(ops_db, request_for(observation))
    assert ops_db.conn.execute("SELECT count(*) AS n FROM staging_job").fetchone()["n"] == 0
    job = staging.create_job(ops_db, request_for(observation), waiting="waiting for 1 file to be packaged")
    assert job_row(ops_db, job.id).failure_reason == "waiting for 1 file to be packaged"


def test_asking_again_with_another_retention_applies_it(ops_db: OpsDb, world) -> None:
    job = staging.create_job(ops_db, request_for(first_observation(ops_db), retention="1d"))
    again = staging.create_job(ops_db, request_for(first_observation(ops_db), retention="3w"))
    assert again.id == job.id
    assert job_row(ops_db, job.id).retention_period.days == 21


def replace_object(s3: LocalS3, db: OpsDb, site: str, key: str, data: bytes) -> None:
    s3.client().put_object(Bucket=lta(db, site).s3_bucket, Key=key, Body=data)


def malformed_tar(records: bytes = b"12 size=abc\n") -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(records)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + records + bytes(-len(records) % 512) + bytes(1024)


def test_a_malformed_archive_copy_is_refused_and_another_copy_serves(
    ops_db: OpsDb, world, s3_server: LocalS3, data_root: Path
) -> None:
    job = staging.create_job(ops_db, request_for(first_observation(ops_db)))
    packages = ops_db.fetch_all("staging_job_packages", job_id=job.id)
    replace_object(s3_server, ops_db, "cologne", packages[0].relative_path, malformed_tar())
    result = staging.stage_job(ops_db, job.id)
    assert result.failed == {} and sorted(result.staged) == sorted(p.name for p in packages)
    staged_root = data_root / "cologne" / "ramses" / job.name
    for relative, content in world.items():
        if (staged_root / relative).exists():
            assert (staged_root / relative).read_bytes() == content
    assert no_part_files(data_root)


@pytest.mark.parametrize("hostile", [malformed_tar(), malformed_tar(b"abc path=x\n"), b"\x00" * 100, b""])
def test_every_copy_refused_fails_the_package_alone_with_the_reason(
    ops_db: OpsDb, world, s3_server: LocalS3, data_root: Path, hostile: bytes
) -> None:
    job = staging.create_job(ops_db, request_for(first_observation(ops_db)))
    victim, *others = ops_db.fetch_all("staging_job_packages", job_id=job.id)
    for site in ("cologne", "us"):
        replace_object(s3_server, ops_db, site, victim.relative_path, hostile)
    result = staging.stage_job(ops_db, job.id)
    assert list(result.failed) == [victim.name] and "every archive copy was refused" in result.failed[victim.name]
    assert sorted(result.staged) == sorted(p.name for p in others)
    row = job_row(ops_db, job.id)
    assert row.status == "FAILED" and victim.name in row.failure_reason
    assert no_part_files(data_root)


def test_a_linked_job_directory_is_refused_not_written_through(
    ops_db: OpsDb, world, data_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "scientist_elsewhere"
    outside.mkdir()
    job = staging.create_job(ops_db, request_for(first_observation(ops_db)))
    (data_root / "cologne" / "ramses").mkdir(parents=True, exist_ok=True)
    (data_root / "cologne" / "ramses" / job.name).symlink_to(outside, target_is_directory=True)
    result = staging.stage_job(ops_db, job.id)
    assert result.staged == [] and result.failed
    assert all("symbolic link" in reason for reason in result.failed.values())
    assert job_row(ops_db, job.id).status == "FAILED"
    assert list(outside.iterdir()) == []


def test_a_planted_part_link_is_replaced_not_written_through(
    ops_db: OpsDb, world, data_root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    observation = first_observation(ops_db)
    job = staging.create_job(ops_db, request_for(observation))
    relative = next(iter(world))
    target = data_root / "cologne" / "ramses" / job.name / relative
    target.parent.mkdir(parents=True)
    Path(f"{target}.part").symlink_to(victim)
    result = staging.stage_job(ops_db, job.id)
    assert result.failed == {}
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == world[relative]
    assert no_part_files(data_root)


def test_storage_down_puts_the_job_back_to_pending_with_nothing_half_written(
    ops_db: OpsDb, world, s3_server: LocalS3, data_root: Path
) -> None:
    job = staging.create_job(ops_db, request_for(first_observation(ops_db)))
    s3_server.stop()
    try:
        with pytest.raises(Exception, match="Could not connect|Connect timeout|Connection"):
            staging.stage_job(ops_db, job.id)
        row = job_row(ops_db, job.id)
        assert row.status == "PENDING" and "interrupted" in row.failure_reason
        assert no_part_files(data_root)
    finally:
        s3_server.start()
    assert staging.stage_job(ops_db, job.id).failed == {}
    assert job_row(ops_db, job.id).status == "COMPLETED"
