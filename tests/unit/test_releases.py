"""Issue #20, upgrades: the pinned gateway release is the checkout's build or one the controller
kept; any other version is refused by name, before anything reaches a host."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel import releases, wheels
from citadel.artifacts import ArtifactUnavailable


def _project(tmp_path: Path, version: str) -> Path:
    project = tmp_path / "demo"
    project.mkdir()
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "demo-svc"\nversion = "{version}"\n'
    )
    return project


def test_the_checkouts_version_is_built_from_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, "1.2.0")
    built = tmp_path / "demo_svc-1.2.0-py3-none-any.whl"
    built.write_bytes(b"wheel")
    monkeypatch.setattr(wheels, "ensure_project_wheel", lambda p: built)
    monkeypatch.setattr(wheels, "ensure_dependency_wheels", lambda req, **kw: tmp_path)
    for pin in (None, "1.2.0"):
        wheel, req, _ = releases.release_wheels(project, pin, "demo", "3.13")
        assert (wheel, req) == (built, "demo-svc==1.2.0")


def test_another_version_comes_from_the_controllers_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path, "1.2.0")
    monkeypatch.setenv(wheels.CACHE_ENV, str(tmp_path / "cache"))
    kept = wheels.wheels_dir() / "demo_svc-1.1.0-py3-none-any.whl"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"an older build")
    monkeypatch.setattr(wheels, "ensure_dependency_wheels", lambda req, **kw: tmp_path)
    wheel, req, _ = releases.release_wheels(project, "1.1.0", "demo", "3.13")
    assert (wheel, req) == (kept, "demo-svc==1.1.0")
    with pytest.raises(ArtifactUnavailable, match=r"demo 0\.9\.0: this checkout builds 1\.2\.0"):
        releases.release_wheels(project, "0.9.0", "demo", "3.13")
