"""Shared test setup: run from the repository root so relative paths read as users type them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for name in list(os.environ):
        if name.startswith("CITADEL_SECRET") and not name.startswith("CITADEL_SECRETS_FILE"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("CITADEL_SECRETS_FILE", raising=False)
