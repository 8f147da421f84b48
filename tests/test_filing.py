"""Filing registers real files idempotently and refuses bad input without recording anything."""

from __future__ import annotations

import hashlib
import json
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
        filing.file_observation(ops_db, obs.__class__(**{**obs.__dict__, "location": "cologne/buffer"}))
    with pytest.raises(FilingError, match="unknown location 'mars/x'"):
        filing.file_observation(ops_db, obs.__class__(**{**obs.__dict__, "location": "mars/x"}))
    with pytest.raises(FilingError, match="unknown instrument 'Hubble'"):
        filing.file_observation(ops_db, obs.__class__(**{**obs.__dict__, "instrument": "Hubble"}))


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
