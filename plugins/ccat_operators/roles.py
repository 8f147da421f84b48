"""Airflow roles (FAB auth manager) from ``include/auth/roles.yaml``.

The file declares each role's permissions; :func:`sync` makes the FAB security database
hold exactly those (adding what is missing, removing what is not listed), so running it
again changes nothing. FAB's built-in roles are never modified. Airflow is imported only
by the functions that talk to it, so the file can be checked without a deployment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from ccat_operators.paths import include_dir

BUILT_IN_ROLES = frozenset({"Admin", "Op", "User", "Viewer", "Public"})

#: The resource of the HTTP filing API (``ccat_operators.api``), created by :func:`sync`:
#: ``can_create`` files observations, ``can_read`` reads filing requests and progress.
OBSERVATIONS_RESOURCE = "CCAT Observations"

#: Users ``make up`` creates on a fresh local deployment (password = user name). Local development only.
DEV_USERS = {"admin": "Admin", "operator": "operator", "scientist": "scientist", "instrument": "instrument"}

Permission = tuple[str, str]


class RolesError(ValueError):
    """The roles file is invalid."""


@dataclass(frozen=True)
class RoleSpec:
    name: str
    include: str | None
    permissions: frozenset[Permission]


def default_roles_file() -> Path:
    return include_dir() / "auth" / "roles.yaml"


def load(path: Path | None = None) -> list[RoleSpec]:
    """Read and validate a roles file; errors name the role and entry at fault."""
    path = path or default_roles_file()
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise RolesError(f"{path}: cannot read the roles file: {' '.join(str(error).split())}") from None
    if not isinstance(document, dict) or not isinstance(document.get("roles"), dict):
        raise RolesError(f"{path}: expected a mapping with a 'roles' mapping")
    specs = []
    for name, body in document["roles"].items():
        if name in BUILT_IN_ROLES:
            raise RolesError(f"{path}: role {name!r} is built into Airflow; use `include: {name}` in a new role")
        body = body or {}
        unknown = set(body) - {"include", "permissions"}
        if unknown:
            raise RolesError(f"{path}: role {name!r}: unknown keys {sorted(unknown)}")
        include = body.get("include")
        if include is not None and include not in BUILT_IN_ROLES:
            raise RolesError(f"{path}: role {name!r}: include must be one of {sorted(BUILT_IN_ROLES)}, not {include!r}")
        permissions = set()
        for index, entry in enumerate(body.get("permissions") or []):
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(p, str) and p for p in entry)):
                raise RolesError(f"{path}: role {name!r}: permission {index} must be [action, resource], not {entry!r}")
            permissions.add((entry[0], entry[1]))
        specs.append(RoleSpec(name, include, frozenset(permissions)))
    return specs


@contextmanager
def security_manager() -> Iterator:
    """FAB's security manager on the configured Airflow metadata database."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        yield appbuilder.sm


def _built_in_permissions(sm, role: str) -> set[Permission]:
    for config in sm.ROLE_CONFIGS:
        if config["role"] == role:
            return set(config["perms"])
    raise RolesError(f"Airflow has no built-in role {role!r}")


def sync(sm, specs: list[RoleSpec]) -> list[str]:
    """Make every role in ``specs`` hold exactly its permissions; return what changed."""
    changes = []
    for spec in specs:
        wanted = set(spec.permissions)
        if spec.include:
            wanted |= _built_in_permissions(sm, spec.include)
        role = sm.find_role(spec.name)
        if role is None:
            role = sm.add_role(spec.name)
            changes.append(f"created role {spec.name}")
        held = {(p.action.name, p.resource.name): p for p in role.permissions}
        for action, resource in sorted(wanted - held.keys()):
            permission = sm.create_permission(action, resource)
            if permission is None:
                raise RolesError(f"role {spec.name!r}: FAB could not create permission {action} on {resource}")
            sm.add_permission_to_role(role, permission)
            changes.append(f"{spec.name}: + {action} on {resource}")
        for key in sorted(held.keys() - wanted):
            sm.remove_permission_from_role(role, held[key])
            changes.append(f"{spec.name}: - {key[0]} on {key[1]}")
    return changes


def ensure_user(sm, username: str, role: str, password: str) -> bool:
    """Create ``username`` with ``role`` unless the user exists; return whether it was created."""
    if sm.find_user(username=username) is not None:
        return False
    found = sm.find_role(role)
    if found is None:
        raise RolesError(f"cannot create user {username!r}: no role {role!r} (run `ccat auth sync` first)")
    if not sm.add_user(username, username, "", f"{username}@localhost", found, password):
        raise RolesError(f"FAB refused to create user {username!r}")
    return True
