"""Which build of one of this repository's services a host gets: the pinned version's.

A service of this repository (``services/<name>``) is pinned by its version like any artifact
(``gateway.version``). The pin equal to the checkout's own version (its ``pyproject.toml``) is
built from the checkout, once per source state; any other version is a release this controller
built before — every build stays in the wheel cache beside the others (``citadel.wheels``), so
the previous pin is always there to roll back to. A version that is neither is refused by name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from citadel import wheels
from citadel.artifacts import ArtifactUnavailable
from citadel.wheels import wheel_sha256


def source_version(project: Path) -> str:
    """The version a checkout of ``project`` builds (its pyproject.toml)."""
    return str(tomllib.loads((project / "pyproject.toml").read_text())["project"]["version"])


def requirement_of(project: Path, version: str) -> str:
    name = tomllib.loads((project / "pyproject.toml").read_text())["project"]["name"]
    return f"{name}=={version}"


def cached_release(project: Path, version: str) -> Path | None:
    """The cached wheel of ``version`` of ``project`` (None when this controller has none)."""
    return wheels.find_cached_wheel(requirement_of(project, version))


def release_wheels(
    project: Path, version: str | None, label: str, python_version: str
) -> tuple[Path, str, list[Path]]:
    """(wheel, pinned requirement, dependency wheels) of the pinned ``version`` of ``project``
    for hosts with ``python_version``; ``None`` (no pin) is the checkout's own version."""
    own = source_version(project)
    if version is None or version == own:
        try:
            wheel = wheels.ensure_project_wheel(project)
            tag = wheels.source_digest(project)[:12]
        except wheels.ArtifactError as exc:
            raise ArtifactUnavailable(f"{label} wheel: {exc}") from None
    else:
        found = cached_release(project, version)
        if found is None:
            raise ArtifactUnavailable(missing_release(project, label, version, own))
        wheel, tag = found, wheel_sha256(found)[:12]
    name, built = wheel.name.split("-")[:2]
    req = f"{name.replace('_', '-')}=={built}"
    try:
        deps = wheels.ensure_dependency_wheels(req, python_version=python_version, tag=tag)
    except wheels.ArtifactError as exc:
        raise ArtifactUnavailable(f"{label} {built} dependency wheels: {exc}") from None
    return wheel, req, sorted(deps.glob("*.whl"))


def missing_release(project: Path, label: str, version: str, own: str) -> str:
    return (
        f"{label} {version}: this checkout builds {own} and the controller's wheel cache "
        f"({wheels.wheels_dir()}) holds no {version}; pin {own}, or run citadel once from a "
        f"checkout of {version} (its build stays in the cache)"
    )
