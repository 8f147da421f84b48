"""Every work-finding query is covered by the ops-db scale benchmark."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import REPO


def test_every_work_finding_query_has_benchmark_parameters() -> None:
    spec = importlib.util.spec_from_file_location("opsdb_scale", REPO / "bench" / "opsdb_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    names = module.work_queries()
    assert "claim_unpackaged_files" in names and "find_deletable_package_copies" in names
    module.check_query_params(names)  # raises naming any query without realistic parameters
