"""Install Python wheels built/cached on the controller into a venv on a host, offline.

The controller holds every wheel (citadel.wheels: built once, sha256 sidecars). A host gets them
uploaded into a staging directory and installed with ``pip --no-index``, so a host without
internet converges the same way. A fingerprint of the wheel set (names + sha256 + requirement)
is written into the venv after a successful install; the next converge reads it (a fact) and,
when it matches, uploads nothing and runs no pip at all.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command, LinuxDistribution
from pyinfra.operations import apt, files, pip, server

from citadel import wheels
from citadel.artifacts import ArtifactUnavailable
from citadel.wheels import wheel_sha256
from deploys._service import system_account

MARKER = ".citadel-wheels"

# The distribution's python3 when python3 is not there yet to ask.
DEFAULT_PYTHON = {
    ("debian", "12"): "3.11",
    ("debian", "13"): "3.13",
    ("ubuntu", "22.04"): "3.10",
    ("ubuntu", "24.04"): "3.12",
}


def fingerprint(requirement: str, wheels: Sequence[Path]) -> str:
    digest = hashlib.sha256(requirement.encode())
    for wheel in sorted(wheels, key=lambda p: p.name):
        digest.update(f"\n{wheel.name} {wheel_sha256(wheel)}".encode())
    return digest.hexdigest()


def interpreter_version(python: str) -> str | None:
    """``X.Y`` of an interpreter on the host (a command name or path), None when it is not there."""
    out = host.get_fact(
        Command,
        command=f"{shlex.quote(python)} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' "
        "2>/dev/null || true",
    )
    return out.strip() if out and out.strip() else None


def host_python_version() -> str:
    """``X.Y`` of the host's python3 (asked; else the distribution's default)."""
    version = interpreter_version("python3")
    if version:
        return version
    distro = host.get_fact(LinuxDistribution) or {}
    name = str(distro.get("name") or "").lower()
    release = str((distro.get("release_meta") or {}).get("VERSION_ID") or "")
    try:
        return DEFAULT_PYTHON[(name, release)]
    except KeyError:
        raise RuntimeError(
            f"cannot tell the python3 version of {host.name} ({name} {release})"
        ) from None


def install_wheels(
    *,
    label: str,
    venv: str,
    requirement: str,
    main_wheel: Path,
    dependency_wheels: Sequence[Path],
    stage: str,
    force_main: bool = False,
    remove: Sequence[str] = (),
    python: str = "python3",
) -> OperationMeta | None:
    """Venv + offline pip install; returns the install operation, or None when already current.

    Everything comes from the staging directory only. ``force_main``: reinstall ``main_wheel``
    even at the same version (a project built here: same version, new content). ``remove``:
    distributions uninstalled again right after (dependencies that must not be there), before
    the fingerprint is written. ``python``: the interpreter the venv is made with.
    """
    pip.venv(name=f"{label}: virtualenv {venv}", path=venv, python=python)
    wheels = [main_wheel, *dependency_wheels]
    wanted = fingerprint(" ".join([requirement, *(f"-{r}" for r in remove)]), wheels)
    marker = f"{venv}/{MARKER}"
    installed = host.get_fact(Command, command=f"cat {marker} 2>/dev/null || true")
    if (installed or "").strip() == wanted:
        return None
    for wheel in wheels:
        files.put(
            name=f"{label}: upload {wheel.name}",
            src=str(wheel),
            dest=f"{stage}/{wheel.name}",
            mode="0644",
            create_remote_dir=True,
        )
    pip_cmd = f"{venv}/bin/pip install --no-index --disable-pip-version-check --quiet"
    command = f"{pip_cmd} --find-links {stage} {shlex.quote(requirement)}"
    if force_main:
        command += f" && {pip_cmd} --no-deps --force-reinstall {stage}/{main_wheel.name}"
    if remove:
        names = " ".join(shlex.quote(r) for r in remove)
        command += f" && {venv}/bin/pip uninstall --yes --quiet {names}"
    return server.shell(
        name=f"{label}: pip install {requirement} (offline, from the uploaded wheels)",
        commands=[f"rm -f {marker} && {command} && echo {wanted} > {marker}"],
    )


def project_wheels(project: Path, label: str, python_version: str) -> tuple[Path, str, list[Path]]:
    """(wheel, pinned requirement, dependency wheels) of one of this repository's services,
    built once per source state on the controller (citadel.wheels)."""
    try:
        wheel = wheels.ensure_project_wheel(project)
        name, version = wheel.name.split("-")[:2]
        req = f"{name.replace('_', '-')}=={version}"
        deps = wheels.ensure_dependency_wheels(
            req, python_version=python_version, tag=wheels.source_digest(project)[:12]
        )
    except wheels.ArtifactError as exc:
        raise ArtifactUnavailable(f"{label} wheel: {exc}") from None
    return wheel, req, sorted(deps.glob("*.whl"))


def install_project_service(
    built: tuple[Path, str, list[Path]],
    *,
    label: str,
    venv: str,
    stage: str,
    user: str | None = None,
) -> list[OperationMeta]:
    """The install step of a service of this repository (services/<name>), from ``built``
    (``project_wheels``: its wheel, pinned requirement and dependency wheels for the host's
    Python, built here first, before any operation): python3-venv and curl (the ready check), a
    system account ``user`` when it runs as one, and the offline install into ``venv`` (the
    project's wheel reinstalled: same version, new content). Returns the install operation when
    one runs (a changed package restarts the service)."""
    wheel, req, deps = built
    apt.packages(
        name="Install python3-venv and curl", packages=["python3-venv", "curl"], no_recommends=True
    )
    if user is not None:
        system_account(user, home="/nonexistent")
    op = install_wheels(
        label=label,
        venv=venv,
        requirement=req,
        main_wheel=wheel,
        dependency_wheels=deps,
        stage=stage,
        force_main=True,
    )
    return [op] if op is not None else []


def index_wheels(
    requirement: str,
    python_version: str,
    *,
    label: str,
    env: Mapping[str, str] | None = None,
    build_env: Mapping[str, str] | None = None,
) -> tuple[Path, list[Path]]:
    """A wheel from an index and its dependency wheels for the host's Python, fetched once on the
    controller (``env``: pip's settings for both; ``build_env``, where given: the wheel's build
    environment instead). What cannot be had is ``ArtifactUnavailable("<label>: why")``."""
    try:
        wheel = wheels.ensure_wheel(requirement, env if build_env is None else build_env)
        deps_dir = wheels.ensure_dependency_wheels(
            requirement, python_version=python_version, env=env
        )
    except wheels.ArtifactError as exc:
        raise ArtifactUnavailable(f"{label}: {exc}") from None
    return wheel, sorted(deps_dir.glob("*.whl"))
