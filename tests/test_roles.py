"""The roles file: what ships is valid, and a bad file is refused with the role and entry named."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccat_operators import roles


def test_the_shipped_roles_file_is_valid() -> None:
    specs = {spec.name: spec for spec in roles.load()}
    assert set(specs) == {"operator", "scientist", "instrument"}
    assert specs["operator"].include == "Op"
    filing = {("can_create", roles.OBSERVATIONS_RESOURCE), ("can_read", roles.OBSERVATIONS_RESOURCE)}
    assert specs["instrument"].include is None and specs["instrument"].permissions == filing
    assert filing <= specs["operator"].permissions
    scientist = specs["scientist"].permissions
    assert {("can_read", "DAG:ccat_staging"), ("can_edit", "DAG:ccat_staging"), ("can_create", "DAG Runs")} <= scientist
    assert not any(
        resource in ("DAGs", "DAG:ccat_transfer") for action, resource in scientist if action != "menu_access"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles: [a, b]\n", "expected a mapping with a 'roles' mapping"),
        ("roles:\n  Admin: {}\n", "role 'Admin' is built into Airflow"),
        ("roles:\n  x: {include: Root}\n", "role 'x': include must be one of"),
        ("roles:\n  x: {permissions: [[can_read]]}\n", "role 'x': permission 0 must be [action, resource]"),
        ("roles:\n  x: {grants: []}\n", "role 'x': unknown keys ['grants']"),
        ("roles: {x: [\n", "cannot read the roles file: while parsing"),
        ("\udcff", "cannot read the roles file"),
    ],
)
def test_a_bad_roles_file_is_refused_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "roles.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(roles.RolesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        roles.load(path)
