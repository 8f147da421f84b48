"""Filing registers real files idempotently and refuses bad input without recording anything."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import xxhash

from ccat_operators import filing
from ccat_operators.cli import main
from ccat_operators.filing import FilingError, RawFile
from ccat_operators.opsdb import OpsDb
from tests.helpers import observation, write_file


@pytest.fixture
def source_root(example_topology, data_root: Path) -> Path:
    root = data_root / "ccat" / "telescope_computer"
    root.mkdir(parents=True)
    return root


def counts(db: OpsDb) -> dict[str, int]:
    tables = ("observing_program", "obs_unit", "executed_obs_unit", "raw_data_file")
    return {t: db.conn.execute(f"SELECT count(*) AS n FROM {t}").fetchone()["n"] for t in tables}  # noqa: S608


def files_in_db(db: OpsDb) -> dict[str, dict]:
    rows = db.conn.execute("SELECT * FROM raw_data_file").fetchall()
    return {row["relative_path"]: row for row in rows}


def test_filing_records_files_with_checksums_from_disk(ops_db: OpsDb, source_root: Path) -> None:
    contents = {f"primecam/scan/{i:04d}.dat": bytes([i]) * (1000 + i) for i in range(5)}
    for relative, content in contents.items():
        write_file(source_root, relative, content)
    given = "primecam/scan/0000.dat"
    files = [RawFile(path=p, module="280GHz", size=len(c)) for p, c in contents.items() if p != given]
    files.append(RawFile(path=given, module="280GHz", checksum="sha256:" + hashlib.sha256(contents[given]).hexdigest()))

    result = filing.file_observation(ops_db, observation(files))
    assert (result.new_files, result.already_filed) == (5, 0)

    recorded = files_in_db(ops_db)
    assert set(recorded) == set(contents)
    for relative, content in contents.items():
        row = recorded[relative]
        assert row["size_bytes"] == len(content)
        assert row["checksum"] == "sha256:" + hashlib.sha256(content).hexdigest()
        assert row["executed_obs_unit_id"] == result.executed_obs_unit_id
        assert row["raw_data_package_id"] is None
        assert row["id"].version == 4


def test_filing_twice_is_a_no_op(ops_db: OpsDb, source_root: Path) -> None:
    write_file(source_root, "chai/a.dat", b"a" * 100)
    write_file(source_root, "chai/b.dat", b"b" * 100)
    files = [RawFile("chai/a.dat", "280GHz"), RawFile("chai/b.dat", "350GHz")]
    first = filing.file_observation(ops_db, observation(files))
    before = files_in_db(ops_db)
    second = filing.file_observation(ops_db, observation(files))
    assert (second.new_files, second.already_filed) == (0, 2)
    assert second.executed_obs_unit_id == first.executed_obs_unit_id
    assert files_in_db(ops_db) == before
    assert counts(ops_db)["executed_obs_unit"] == 1


def test_xxh3_checksum_is_accepted_and_kept(ops_db: OpsDb, source_root: Path) -> None:
    content = b"fast" * 1000
    write_file(source_root, "fast.dat", content)
    checksum = "xxh3_128:" + xxhash.xxh3_128(content).hexdigest()
    filing.file_observation(ops_db, observation([RawFile("fast.dat", "280GHz", checksum=checksum)]))
    assert files_in_db(ops_db)["fast.dat"]["checksum"] == checksum


BAD_FILINGS = [
    (RawFile("missing.dat", "280GHz"), "file 'missing.dat': not a regular file"),
    (RawFile("good.dat", "280GHz", size=7), "file 'good.dat': size on disk is 4, filed as 7"),
    (RawFile("good.dat", "280GHz", checksum="sha256:" + "0" * 64), "file 'good.dat': checksum on disk is sha256:"),
    (RawFile("good.dat", "280GHz", checksum="md5:abc"), "is not a checksum of the form algorithm:hex"),
    (RawFile("good.dat", "999GHz"), "file 'good.dat': unknown module '999GHz' of Prime-Cam"),
    (RawFile("../etc/passwd", "280GHz"), "path must be relative to the location root"),
    (RawFile("/etc/passwd", "280GHz"), "path must be relative to the location root"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_FILINGS)
def test_bad_file_refuses_the_whole_filing(ops_db: OpsDb, source_root: Path, bad: RawFile, message: str) -> None:
    write_file(source_root, "good.dat", b"good")
    write_file(source_root, "other.dat", b"other")
    before = counts(ops_db)
    with pytest.raises(FilingError) as caught:
        filing.file_observation(ops_db, observation([RawFile("other.dat", "280GHz"), bad]))
    assert message in str(caught.value)
    assert counts(ops_db) == before


def test_refiling_a_changed_file_is_refused(ops_db: OpsDb, source_root: Path) -> None:
    path = write_file(source_root, "scan.dat", b"original")
    filing.file_observation(ops_db, observation([RawFile("scan.dat", "280GHz")]))
    before = files_in_db(ops_db)
    path.write_bytes(b"modified")
    write_file(source_root, "new.dat", b"new")
    with pytest.raises(FilingError, match="'scan.dat' was already filed .* with different"):
        filing.file_observation(ops_db, observation([RawFile("scan.dat", "280GHz"), RawFile("new.dat", "280GHz")]))
    assert files_in_db(ops_db) == before


def test_unknown_or_wrong_location_and_instrument(ops_db: OpsDb, source_root: Path) -> None:
    write_file(source_root, "x.dat", b"x")
    obs = observation([RawFile("x.dat", "280GHz")])
    with pytest.raises(FilingError, match="location 'cologne/buffer' is BUFFER/DISK, not a SOURCE disk"):
        filing.file_observation(ops_db, dataclasses.replace(obs, location="cologne/buffer"))
    with pytest.raises(FilingError, match="unknown location 'mars/x'"):
        filing.file_observation(ops_db, dataclasses.replace(obs, location="mars/x"))
    with pytest.raises(FilingError, match="unknown instrument 'Hubble'"):
        filing.file_observation(ops_db, dataclasses.replace(obs, instrument="Hubble"))


def test_cli_files_a_manifest(ops_db_url: str, ops_db: OpsDb, source_root: Path, tmp_path: Path, capsys) -> None:
    write_file(source_root, "chai/lfa/0001.dat", b"\x00" * 2048)
    manifest = tmp_path / "obs.json"
    manifest.write_text(
        json.dumps(
            {
                "location": "ccat/telescope_computer",
                "instrument": "CHAI",
                "program": "survey",
                "obs_unit": "m83",
                "start_time": "2026-11-20T04:00:00+00:00",
                "end_time": "2026-11-20T04:10:00+00:00",
                "files": [{"path": "chai/lfa/0001.dat", "module": "LFA", "size": 2048}],
            }
        )
    )
    assert main(["file", str(manifest), "--db", ops_db_url]) == 0
    assert "1 new file(s), 0 already filed" in capsys.readouterr().out
    assert main(["file", str(manifest), "--db", ops_db_url, "--progress"]) == 0
    output = capsys.readouterr()
    assert "0 new file(s), 1 already filed" in output.out
    assert "hashing" in output.err and "2.0/2.0 kB" in output.err  # the bar, run to the end

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"location": "ccat/telescope_computer", "files": []}))
    assert main(["file", str(bad), "--db", ops_db_url]) == 1
    assert f"{bad}: instrument is required" in capsys.readouterr().err


def test_filing_reports_progress_per_file_hashed(ops_db: OpsDb, source_root: Path) -> None:
    sizes = [3000, 5000, 7000]
    for index, size in enumerate(sizes):
        write_file(source_root, f"prime/{index}.dat", b"x" * size)
    files = tuple(filing.RawFile(f"prime/{index}.dat", "280GHz") for index in range(len(sizes)))
    obs = observation(list(files))
    assert filing.bytes_on_disk(ops_db, obs) == sum(sizes)
    done: list[int] = []
    filing.file_observation(ops_db, obs, progress=done.append)
    assert done == sizes


def manifest_document(**changes) -> dict:
    document = {
        "location": "ccat/telescope_computer",
        "instrument": "Prime-Cam",
        "program": "commissioning",
        "obs_unit": "orion_map",
        "start_time": "2026-11-20T03:00:00Z",
        "end_time": "2026-11-20T03:25:00Z",
        "files": [{"path": "primecam/scan_0001.dat", "module": "280GHz", "size": 1024}],
    }
    return {**document, **changes}


def with_file(**changes) -> dict:
    return manifest_document(files=[{"path": "primecam/scan_0001.dat", "module": "280GHz", **changes}])


BAD_MANIFESTS = [
    (with_file(checksum=12345), "files[0].checksum: expected a string algorithm:hex (e.g. sha256:9f86d0…), got 12345"),
    (with_file(checksum="md5:abc"), "files[0].checksum: 'md5:abc' is not a checksum of the form algorithm:hex"),
    (manifest_document(files=5), "files: expected a list of at least one file, got 5"),
    (manifest_document(files=[]), "files: expected a list of at least one file, got an empty list"),
    (manifest_document(files=[5]), "files[0]: expected a mapping of path, module, size, checksum, got 5"),
    (with_file(size="abc"), "files[0].size: expected a non-negative integer, got 'abc'"),
    (with_file(size=-1), "files[0].size: expected a non-negative integer, got -1"),
    (with_file(size=True), "files[0].size: expected a non-negative integer, got True"),
    (with_file(size=1.5), "files[0].size: expected a non-negative integer, got 1.5"),
    (with_file(module=7), "files[0].module: expected a string, got 7 (write names that look like numbers in quotes)"),
    (with_file(path=None), "files[0].path is required"),
    (with_file(sise=10), "files[0].sise: unknown key (did you mean 'size'? allowed: path, module, size, checksum)"),
    (manifest_document(obs_units="x"), "obs_units: unknown key (did you mean 'obs_unit'? allowed: location,"),
    (manifest_document(location=["ccat"]), "location: expected a string, got a list"),
    (manifest_document(start_time=12), "start_time: expected an ISO 8601 timestamp with a time zone"),
    (
        manifest_document(start_time="yesterday"),
        "start_time: expected an ISO 8601 timestamp with a time zone (e.g. 2026-11-20T03:00:00Z), got 'yesterday'",
    ),
    (
        manifest_document(start_time="2026-11-20T03:00:00"),
        "start_time: expected an ISO 8601 timestamp with a time "
        "zone (e.g. 2026-11-20T03:00:00Z), got 2026-11-20T03:00:00 "
        "without one",
    ),
    (
        manifest_document(start_time=date(2026, 11, 20)),
        "start_time: expected an ISO 8601 timestamp with a time zone (e.g. 2026-11-20T03:00:00Z), got 2026-11-20",
    ),
    (
        manifest_document(end_time="2026-11-20T02:59:59+00:00"),
        "end_time: 2026-11-20T02:59:59+00:00 is before start_time 2026-11-20T03:00:00+00:00",
    ),
    (manifest_document(instrument=None), "m.yaml: instrument is required"),
]


@pytest.mark.parametrize(("document", "message"), BAD_MANIFESTS)
def test_bad_manifest_values_are_refused_naming_the_key(document: dict, message: str) -> None:
    with pytest.raises(FilingError) as caught:
        filing.observation_from_document(document, source="m.yaml")
    assert len(caught.value.problems) == 1, caught.value.problems
    assert caught.value.problems[0].startswith("m.yaml: ")
    assert message in caught.value.problems[0]


def test_every_manifest_problem_is_reported_at_once() -> None:
    document = manifest_document(program=None, start_time=12, files=[{"path": "a", "module": 1}, {"sise": 3}])
    with pytest.raises(FilingError) as caught:
        filing.observation_from_document(document, source="m.yaml")
    assert caught.value.problems == [
        "m.yaml: program is required",
        "m.yaml: start_time: expected an ISO 8601 timestamp with a time zone (e.g. 2026-11-20T03:00:00Z), got 12",
        "m.yaml: files[0].module: expected a string, got 1 (write names that look like numbers in quotes)",
        "m.yaml: files[1].sise: unknown key (did you mean 'size'? allowed: path, module, size, checksum)",
        "m.yaml: files[1].path is required",
        "m.yaml: files[1].module is required",
    ]


def test_yaml_manifest_with_native_timestamps_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "\ufefflocation: ccat/telescope_computer\ninstrument: Prime-Cam\nprogram: commissioning\n"
        "obs_unit: orion_map\nstart_time: 2026-11-20T03:00:00Z\nend_time: 2026-11-20 04:00:00+01:00\n"
        "files:\n  - path: primecam/a.dat\n    module: '850'\n    size: 0\n    checksum: null\n"
    )
    loaded = filing.load_manifest(path)
    assert loaded.start_time == datetime(2026, 11, 20, 3, tzinfo=UTC)
    assert loaded.end_time == loaded.start_time
    assert loaded.files == (RawFile("primecam/a.dat", "850", size=0),)


UNREADABLE_MANIFESTS = [
    (
        "m.yaml",
        b"location: a\nfiles:\n  - path: x\n   module: y\n",
        "line 4, column 4: not valid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection)",
    ),
    ("m.yaml", b"location: a\nlocation: b\n", "line 2, column 1: not valid YAML: duplicate key 'location'"),
    ("m.yaml", b"location: a\n\x00\n", "line 2: not valid YAML: special characters are not allowed"),
    ("m.json", b'{"location": "a",\n "files": [}', "line 2, column 12: not valid JSON: Expecting value"),
    ("m.json", b'{"location": "a", "location": "b"}', "not valid JSON: duplicate key 'location'"),
    ("m.yaml", b"location: ccat\nprogram: caf\xe9\n", "line 2: not UTF-8 text (byte 0xe9)"),
    (
        "m.yaml",
        b"",
        "expected a mapping of location, instrument, program, obs_unit, start_time, end_time, files, got nothing",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), UNREADABLE_MANIFESTS)
def test_unparsable_manifest_names_the_file_and_line(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FilingError) as caught:
        filing.load_manifest(path)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"{path}: ")
    assert message in caught.value.problems[0]
    assert "\n" not in caught.value.problems[0]


def test_missing_unreadable_or_directory_manifest_names_the_file(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FilingError, match=f"{tmp_path}/missing.yaml: cannot read the manifest: No such file"):
        filing.load_manifest(tmp_path / "missing.yaml")
    with pytest.raises(FilingError, match=f"{tmp_path}: cannot read the manifest: Is a directory"):
        filing.load_manifest(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text("location: x\n")

    def denied(path: Path) -> bytes:  # root may read anything, so the refusal is simulated
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(FilingError, match=f"{secret}: cannot read the manifest: Permission denied"):
        filing.load_manifest(secret)


def test_a_path_through_a_link_leaving_the_root_is_refused(ops_db: OpsDb, source_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_file(outside, "secret.dat", b"not ours")
    (source_root / "dir_link").symlink_to(outside, target_is_directory=True)
    write_file(source_root, "good.dat", b"good")
    before = counts(ops_db)
    with pytest.raises(FilingError) as caught:
        filing.file_observation(
            ops_db, observation([RawFile("good.dat", "280GHz"), RawFile("dir_link/secret.dat", "280GHz")])
        )
    assert "file 'dir_link/secret.dat'" in str(caught.value) and "outside the root" in str(caught.value)
    assert counts(ops_db) == before


def test_a_file_that_is_itself_a_link_is_refused(ops_db: OpsDb, source_root: Path) -> None:
    write_file(source_root, "real.dat", b"real")
    (source_root / "alias.dat").symlink_to(source_root / "real.dat")
    with pytest.raises(FilingError, match="alias.dat.* is a symbolic link"):
        filing.file_observation(ops_db, observation([RawFile("alias.dat", "280GHz")]))


def test_a_link_that_stays_inside_the_root_is_followed_and_the_file_identified(
    ops_db: OpsDb, source_root: Path
) -> None:
    real = write_file(source_root, "2026-11-20/scan.dat", b"scan")
    (source_root / "latest").symlink_to(source_root / "2026-11-20", target_is_directory=True)
    filing.file_observation(ops_db, observation([RawFile("latest/scan.dat", "280GHz")]))
    row = files_in_db(ops_db)["latest/scan.dat"]
    assert row["checksum"] == "sha256:" + hashlib.sha256(b"scan").hexdigest()
    assert (int(row["inode"]), row["mtime_ns"]) == (real.stat().st_ino, real.stat().st_mtime_ns)


def test_end_before_start_is_refused_through_the_python_api_too(ops_db: OpsDb, source_root: Path) -> None:
    write_file(source_root, "good.dat", b"good")
    backwards = observation([RawFile("good.dat", "280GHz")])
    backwards = dataclasses.replace(backwards, end_time=backwards.start_time - timedelta(minutes=1))
    before = counts(ops_db)
    with pytest.raises(FilingError, match="end_time .* is before start_time"):
        filing.file_observation(ops_db, backwards)
    assert counts(ops_db) == before
