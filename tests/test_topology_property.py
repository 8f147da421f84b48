"""Property: whatever `ccat topology check` accepts, `apply` stores and every DAG lays out.

Documents are generated around the shape of a real topology (sites with buffers,
sources, archives, processing; routes of every type; settings and retention), mostly
valid and now and then subtly wrong: a zero size limit, a priority beyond a PostgreSQL
integer, a root inside another root, a RELAY via its own origin, a DIRECT route into an
archive, colliding ``{site}_{location}`` names... For each document ``topology.loads``
either refuses it with a TopologyError (and nothing else), or accepts it; an accepted
document must then apply to a freshly migrated ops-db, apply again with no change, read
back through ``dump`` to the same thing, and parse in every DAG without import errors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ccat_dev.postgres import LocalPostgres
from ccat_operators import queues, topology
from ccat_operators.opsdb import OpsDb
from ccat_operators.states import LocationType
from tests.conftest import REPO

ROOT_VARIABLE = "CCAT_PROPERTY_ROOT"
SITE_NAMES = ("ccat", "ccat_x", "cologne", "us", "lab")  # ccat + x_buffer vs ccat_x + buffer collide
OTHER_LOCATION_NAMES = ("x_buffer", "telescope_computer", "lta", "ramses", "inbox", "buffer2")
DAG_IDS = {
    "ccat_archive", "ccat_audit", "ccat_bundling", "ccat_deletion", "ccat_filing", "ccat_monitoring", "ccat_packaging",
    "ccat_staging", "ccat_topology", "ccat_transfer", "ccat_unpacking",
}  # fmt: skip

# Good values span the edges of what is allowed; bad ones sit just outside.
GOOD_SETTINGS: dict[str, list[Any]] = {
    "package_size_limit": [1, "1", "300KB", "1.5KB", "50GB", "512MiB", topology.BIGINT_MAX],
    "bundle_size_limit": [1, "1MB", "100GB", "1.15GB", topology.BIGINT_MAX],
    "bundle_max_age": [0, "0s", "6h", "1.5h", 3600, "36500d"],
    "min_free_space": [0, "0", "1PB", topology.BIGINT_MAX],
    "checksum_algorithm": ["sha256", "xxh3_128"],
    "transfer_method": ["rsync", "bbcp", "local"],
    "ssh_conn_id": ["ccat_ssh_custom"],
    "audit_period": [0, "30d", "1h"],
    "audit_dark_grace": [0, "1d"],
    "audit_full_read": [True, False],
}
BAD_SETTINGS: dict[str, list[Any]] = {
    "package_size_limit": [0, "0GB", "0.5B", 2**63, "big", -1, True],
    "bundle_size_limit": [0, "0", 2**63, "9" * 30 + "PB", None],
    "bundle_max_age": [-1, "5300w", 10**10, "6 hours", 1.5],
    "min_free_space": [2**63, -5, "lots"],
    "checksum_algorithm": ["md5", "SHA256", 256],
    "transfer_method": ["RSYNC", "scp", None],
    "ssh_conn_id": ["two words", "", None, ["a"]],
    "audit_period": [-1, "forever"],
    "audit_dark_grace": ["soon", -5],
    "audit_full_read": ["yes", 1],
}
GOOD_ROUTE_SETTINGS: dict[str, list[Any]] = {
    "streams": [1, 4, 64],
    "window": ["8M", "=16M", "512k", 1048576],
    "checksum": [True, False],
    "timeout": [1, 600, "10m", topology.INTEGER_MAX],
}
BAD_ROUTE_SETTINGS: dict[str, list[Any]] = {
    "streams": [0, 65, "many", "8", 2.5],
    "window": ["huge", 0, "8MB", "-1M"],
    "checksum": ["yes", 1],
    "timeout": [0, -1, "forever", 2**31],
    "compression": [True],
}


def flaw(draw: st.DrawFn, rate: int) -> bool:
    """True about once in ``rate`` draws (never when ``rate`` is 0): time for a subtle mistake.

    The middle value, not 0: Hypothesis favours the ends of a range, and shrinks toward 0,
    so a shrunk counterexample keeps only the mistakes it needs.
    """
    return rate > 0 and draw(st.integers(0, rate - 1)) == rate // 2


def value(draw: st.DrawFn, rate: int, good: list[Any], bad: list[Any]) -> Any:
    return draw(st.sampled_from(bad if bad and flaw(draw, rate) else good))


def root_path(draw: st.DrawFn, rate: int, site: str, name: str) -> str:
    good = [
        f"${{{ROOT_VARIABLE}}}/{site}/{name}",
        f"${{{ROOT_VARIABLE}}}/{site}/{name}/",
        f"${{{ROOT_VARIABLE}}}//{site}/./{name}",
        f"${{{ROOT_VARIABLE}:-/nowhere}}/{site}/{name}",
    ]
    bad = [
        "/",
        "",
        "${CCAT_PROPERTY_UNSET:-}",
        f"relative/{site}/{name}",
        f"${{{ROOT_VARIABLE}}}/{site}/../{name}",
        f"//{site}/{name}",
        f"${{{ROOT_VARIABLE}}}/{site}/buffer/{name}",  # inside the site's buffer
        f"${{{ROOT_VARIABLE}}}/{site}",  # around every other root of the site
        f"${{{ROOT_VARIABLE}}}/{site}/buffer",  # the buffer's own root
    ]
    return value(draw, rate, good, bad)


@st.composite
def locations(draw: st.DrawFn, site: str, name: str, kind: str, rate: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind}
    if flaw(draw, rate):
        spec["type"] = draw(st.sampled_from(["BUFER", "ARCHIVE", 3]))
    if kind == "LONG_TERM_ARCHIVE":
        storage = value(draw, rate, ["S3"], ["DISK", "TAPE"])
        spec["storage"] = storage
        if storage == "S3":
            spec["bucket"] = value(draw, rate, [f"ccat-lta-{site}", "b.u_c-k"], ["my bucket", "", "s3://x"])
            if draw(st.booleans()):
                spec["endpoint_url"] = value(
                    draw, rate, ["http://127.0.0.1:8333", "https://s3.example.org"], ["s3.example.org", "ftp://x"]
                )
            if draw(st.booleans()):
                spec["region"] = value(draw, rate, ["eu-central-1", "us-east-1"], ["eu central", "-x"])
            if draw(st.booleans()):
                spec["prefix"] = "raw/"
            if draw(st.booleans()):
                spec["conn_id"] = f"ccat_s3_{site}"
        elif storage == "TAPE":
            spec["library"] = "tape_library"
        else:
            spec["root_path"] = root_path(draw, rate, site, name)
    else:
        if flaw(draw, rate):
            spec["storage"] = draw(st.sampled_from(["S3", "TAPE"]))
        elif draw(st.booleans()):
            spec["storage"] = "DISK"
        spec["root_path"] = root_path(draw, rate, site, name)
        if draw(st.booleans()):
            spec["host"] = value(draw, rate, ["localhost", "${CCAT_PROPERTY_HOST:-ccat-ic1}"], [["h"]])
    if draw(st.booleans()):
        spec["priority"] = value(draw, rate, [0, 1, 5, topology.INTEGER_MAX], [-1, 2**31, 10**20, True, "1"])
    if flaw(draw, rate * 3):
        spec["active"] = value(draw, rate, [False], ["no", 0])
    applicable = [key for key, types in topology.SETTING_LOCATION_TYPES.items() if kind in types]
    chosen = draw(st.lists(st.sampled_from(applicable), unique=True, max_size=4)) if applicable else []
    settings: dict[str, Any] = {key: value(draw, rate, GOOD_SETTINGS[key], BAD_SETTINGS[key]) for key in chosen}
    if flaw(draw, rate):  # a setting where no stage reads it, or none at all
        misplaced = [key for key in topology.SETTINGS if key not in applicable] + ["colour"]
        settings[draw(st.sampled_from(misplaced))] = 1
    if settings:
        spec["settings"] = settings
    if kind != "LONG_TERM_ARCHIVE" and draw(st.booleans()):
        retention: dict[str, Any] = {"period": value(draw, rate, [0, "0s", "7d", 86400, "36500d"], ["forever", 10**10])}
        if kind == "BUFFER" and draw(st.booleans()):
            retention["disk_pressure_threshold"] = value(draw, rate, [0.85, 1, 0.01], [0, 85, 1.5, "high"])
        if kind == "SOURCE" and draw(st.booleans()):
            retention["min_lta_copies"] = value(draw, rate, [1, 2], [0, 2**31, 3])
        if flaw(draw, rate):
            retention[draw(st.sampled_from(["min_lta_copies", "disk_pressure_threshold", "keep"]))] = 1
        spec["retention"] = retention
    elif flaw(draw, rate):
        spec["retention"] = {"period": "30d"}
    return spec


@st.composite
def routes(draw: st.DrawFn, document: dict[str, Any], rate: int) -> dict[str, Any]:
    sites = list(document["sites"])
    keys = [f"{site}/{name}" for site in sites for name in document["sites"][site]["locations"]]
    pairs = [(origin, destination) for origin in sites for destination in sites if origin != destination]
    chosen_pairs = draw(st.lists(st.sampled_from(pairs), unique=True, min_size=1, max_size=3)) if pairs else []
    if chosen_pairs and flaw(draw, rate):  # a second active route between the same two sites
        chosen_pairs.append(chosen_pairs[0])
    result: dict[str, Any] = {}
    for number, (origin, destination) in enumerate(chosen_pairs):
        others = [site for site in sites if site not in (origin, destination)]
        route_type = draw(st.sampled_from(["DIRECT", "CUSTOM"] + (["RELAY"] if others else [])))
        spec: dict[str, Any] = {"type": route_type, "from": origin, "to": destination}
        if flaw(draw, rate):
            spec["to"] = draw(st.sampled_from([origin, "mars"]))
        if route_type == "RELAY":
            spec["via"] = draw(st.sampled_from(others if not flaw(draw, rate) else [origin, destination]))
        if route_type == "CUSTOM":
            spec["from_location"] = f"{origin}/buffer" if not flaw(draw, rate) else draw(st.sampled_from(keys))
        if route_type in ("DIRECT", "CUSTOM"):
            spec["to_location"] = f"{destination}/buffer" if not flaw(draw, rate) else draw(st.sampled_from(keys))
        method = draw(st.sampled_from(["rsync", "bbcp", "local", None]))
        if method is not None:
            spec["method"] = method
        names = ["timeout"] + (["streams", "window", "checksum"] if method == "bbcp" else [])
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
        settings = {name: value(draw, rate, GOOD_ROUTE_SETTINGS[name], BAD_ROUTE_SETTINGS[name]) for name in chosen}
        if flaw(draw, rate):
            settings[draw(st.sampled_from(list(BAD_ROUTE_SETTINGS)))] = "x"
        if settings:
            spec["settings"] = settings
        if draw(st.integers(0, 4)) == 2:
            spec["active"] = False
        result[f"route_{number}"] = spec
    return result


@st.composite
def documents(draw: st.DrawFn, rate: int = 40) -> dict[str, Any]:
    """A topology document; roughly one value in ``rate`` is subtly wrong (0: none)."""
    document: dict[str, Any] = {
        "observatory": value(draw, rate, ["CCAT Observatory", 2026], [None, ["x"], "CCAT\x00"]),
        "telescope": "FYST",
        "instruments": {},
        "sites": {},
    }
    for instrument in draw(st.lists(st.sampled_from(["Prime-Cam", "CHAI", 2026]), unique=True, max_size=2)):
        modules = value(draw, rate, [["EoR-Spec", "280GHz"], ["LFA"]], [[], ["a", "a"], [""], "LFA"])
        document["instruments"][instrument] = {"modules": modules}
    count = draw(st.sampled_from([3, 2, 4, 1]))
    for site in draw(st.permutations(SITE_NAMES))[:count]:
        names: dict[str, str] = {}
        if not flaw(draw, rate):
            names["buffer"] = "BUFFER"
        others = draw(st.lists(st.sampled_from(OTHER_LOCATION_NAMES), unique=True, max_size=3))
        if site == "ccat" and draw(st.booleans()):
            others.append("x_buffer")  # with site ccat_x's buffer: the same {site}_{location}
        for name in others:
            names[name] = draw(st.sampled_from(["SOURCE", "BUFFER", "LONG_TERM_ARCHIVE", "PROCESSING"]))
        document["sites"][site] = {
            "name": f"Site {site}",
            "locations": {name: draw(locations(site, name, kind, rate)) for name, kind in names.items()},
        }
        if draw(st.booleans()):
            document["sites"][site]["location"] = "Somewhere"
    document["routes"] = draw(routes(document, rate))
    return document


def accept(document: dict[str, Any]) -> topology.Topology | None:
    """The parsed topology, or None when refused (only ever with a clean TopologyError)."""
    try:
        return topology.loads(yaml.safe_dump(document, allow_unicode=True), source="t.yaml")
    except topology.TopologyError as error:
        assert error.problems, "a refusal names at least one problem"
        assert all(problem.isprintable() for problem in error.problems), error.problems
        assert str(error) == "\n".join(f"t.yaml: {problem}" for problem in error.problems)
        return None


@pytest.fixture(scope="module")
def property_db_url(postgres_server: LocalPostgres, migrated_template: str) -> Iterator[str]:
    """One migrated database for the module; each example applies inside a rolled-back transaction."""
    name = "test_topology_property"
    yield postgres_server.create_database(name, template=migrated_template)
    postgres_server.drop_database(name)


@pytest.fixture
def property_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the generated DISK roots point (through ``${CCAT_PROPERTY_ROOT}``)."""
    monkeypatch.setenv(ROOT_VARIABLE, str(tmp_path))
    monkeypatch.delenv("CCAT_PROPERTY_UNSET", raising=False)
    return tmp_path


def test_accepted_documents_apply_twice_without_change_and_read_back(property_db_url: str, property_root: Path) -> None:
    seen: Counter[str] = Counter()

    with OpsDb.connect(property_db_url) as db:

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(documents())
        def check(document: dict[str, Any]) -> None:
            seen["generated"] += 1
            loaded = accept(document)
            if loaded is None:
                return
            seen["accepted"] += 1
            names = [
                q.name for loc in loaded.locations for q in queues.queues_for_location(loc.site, loc.name, loc.type)
            ]
            assert len(names) == len(set(names)), "two locations share a queue"
            with db.conn.transaction(force_rollback=True):
                first = topology.apply(db, loaded)
                assert first.changes, "a fresh database changes"
                assert topology.apply(db, loaded).changes == []
                shown = topology.loads(topology.dumps(db), source="shown.yaml")
                assert topology.apply(db, shown).changes == []

        check()
    # Not vacuous: a fair share of the documents got through to apply.
    assert seen["accepted"] >= seen["generated"] // 5, seen


#: Any YAML at all, and mappings that look like a topology from far away.
ANY_DOCUMENT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
) | st.fixed_dictionaries(
    {
        "observatory": st.text(),
        "telescope": st.text(),
        "sites": st.dictionaries(
            st.sampled_from(SITE_NAMES), st.dictionaries(st.sampled_from(["name", "locations"]), st.text())
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(ANY_DOCUMENT)
def test_any_yaml_is_accepted_or_refused_cleanly(document: Any) -> None:
    accept(document)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bytes")


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=64))
def test_any_bytes_are_accepted_or_refused_cleanly(scratch: Path, content: bytes) -> None:
    path = scratch / "t.yaml"
    path.write_bytes(content)
    try:
        topology.load(path)
    except topology.TopologyError as error:
        assert str(error).startswith(f"{path}: ")


@pytest.mark.airflow
def test_accepted_documents_parse_in_every_dag(property_root: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    parsed = 0

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(documents())
    def check(document: dict[str, Any]) -> None:
        nonlocal parsed
        loaded = accept(document)
        assume(loaded is not None)
        path = property_root / "topology.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CCAT_TOPOLOGY", str(path))
            dagbag = DagBag(dag_folder=str(REPO / "dags"))
        assert dagbag.import_errors == {}
        assert set(dagbag.dag_ids) == DAG_IDS
        archive = dagbag.dags["ccat_archive"]
        lta = [loc for loc in loaded.locations if loc.active and loc.type == LocationType.LONG_TERM_ARCHIVE]
        assert {t.task_id for t in archive.tasks if t.task_id.startswith("archive_to_")} == {
            f"archive_to_{loc.site}_{loc.name}" for loc in lta
        }
        parsed += 1

    check()
    assert parsed >= 5, f"only {parsed} generated documents were accepted"
