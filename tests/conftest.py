"""Shared test setup: run from the repository root so relative paths read as users type them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    # tests/verify and tests/acceptance both read it; declared once for a run over all of tests/
    parser.addoption(
        "--inventory", default=None, help="inventory YAML to check (e.g. inventory/lab.yml)"
    )


# Checks of a converged cluster: they need an inventory (`citadel verify` and the e2e give one).
CLUSTER_SUITES = (ROOT / "tests" / "verify", ROOT / "tests" / "acceptance")
CLUSTER_FIXTURES = frozenset({"doc", "target"})


def needs_a_cluster(item: pytest.Item) -> bool:
    """A test of tests/verify or tests/acceptance that reads the cluster (its `doc`/`target`)."""
    path = Path(str(item.fspath))
    in_suite = any(path.is_relative_to(suite) for suite in CLUSTER_SUITES)
    return in_suite and bool(CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --inventory the cluster checks are deselected, not skipped: a skip is a reason the
    inventory declares, and a run over all of tests/ (`make test`) has no cluster to declare it."""
    if config.getoption("--inventory"):
        return
    dropped = [item for item in items if needs_a_cluster(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not needs_a_cluster(item)]


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for name in list(os.environ):
        if name.startswith("CITADEL_SECRET") and not name.startswith("CITADEL_SECRETS_FILE"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CITADEL_SECRETS_FILE", raising=False)
