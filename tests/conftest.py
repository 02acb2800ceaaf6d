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


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for name in list(os.environ):
        if name.startswith("CITADEL_SECRET") and not name.startswith("CITADEL_SECRETS_FILE"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CITADEL_SECRETS_FILE", raising=False)
