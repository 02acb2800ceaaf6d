"""Wheels from an index: an engine's wheel (``pip wheel --no-deps``, cached by its pinned name)
and the offline dependency set for a host's Python and platform (``pip download``)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from citadel.artifacts import sha256_of
from citadel.wheels.pinned import LLAMA_CPP_BUILD_ENV, LLAMA_CPP_REQUIREMENT
from citadel.wheels.store import ArtifactError, file_lock, publish, run, wheels_dir

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*"
    r"==\s*(?P<version>[A-Za-z0-9.+!_-]+)\s*$"
)


def parse_pinned(requirement: str) -> tuple[str, str]:
    """``"llama-cpp-python[server]==0.3.36"`` -> ``("llama_cpp_python", "0.3.36")``.

    The wheel file name form of the project name (PEP 427: runs of ``-_.`` become ``_``,
    lowercase). Only exact pins are accepted: a cache keyed on an unpinned name would go stale.
    """
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise ValueError(f"requirement must be pinned as name[extras]==version: {requirement!r}")
    name = re.sub(r"[-_.]+", "_", match["name"]).lower()
    return name, match["version"]


def _platform_ok(wheel: Path) -> bool:
    platform_tag = wheel.stem.rsplit("-", 1)[-1]
    machine = platform.machine()
    return platform_tag == "any" or any(tag.endswith(machine) for tag in platform_tag.split("."))


def find_cached_wheel(requirement: str, cache: Path | None = None) -> Path | None:
    """The cached wheel for a pinned requirement, or ``None``. Runs nothing."""
    name, version = parse_pinned(requirement)
    directory = wheels_dir(cache)
    if not directory.is_dir():
        return None
    candidates = sorted(
        path
        for path in directory.glob(f"{name}-{version}-*.whl")
        if path.is_file() and _platform_ok(path)
    )
    return candidates[-1] if candidates else None


def ensure_wheel(
    requirement: str = LLAMA_CPP_REQUIREMENT,
    env: Mapping[str, str] | None = None,
    *,
    cache: Path | None = None,
    python: str = sys.executable,
    nice: int = 10,
) -> Path:
    """Return the cached wheel for ``requirement``; build it (``pip wheel --no-deps``) if missing.

    ``env`` is added to the build's environment (for llama-cpp-python pass
    :data:`LLAMA_CPP_BUILD_ENV`; :func:`ensure_llama_cpp_wheel` does). The build runs under the
    cache's lock in a temporary directory next to the cache, at ``nice`` priority, and the wheel
    is moved into place only once it is complete and a valid zip.
    """
    name, version = parse_pinned(requirement)
    hit = find_cached_wheel(requirement, cache)
    if hit is not None:
        return hit
    directory = wheels_dir(cache)
    with file_lock(directory):
        hit = find_cached_wheel(requirement, cache)  # built by another run while we waited
        if hit is not None:
            return hit
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=directory))
        try:
            run(
                [
                    python,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-deps",
                    "--no-cache-dir",
                    "--wheel-dir",
                    str(build),
                    requirement,
                ],
                env=env,
                nice=nice,
            )
            built = sorted(build.glob(f"{name}-{version}-*.whl"))
            if len(built) != 1:
                found = ", ".join(p.name for p in build.iterdir()) or "nothing"
                raise ArtifactError(f"pip wheel {requirement}: expected one wheel, got {found}")
            wheel = built[0]
            try:
                with zipfile.ZipFile(wheel) as archive:
                    bad = archive.testzip()
            except zipfile.BadZipFile as exc:
                raise ArtifactError(f"{wheel.name} is not a valid wheel: {exc}") from exc
            if bad is not None:
                raise ArtifactError(f"{wheel.name} is corrupt (member {bad})")
            return publish(wheel, directory / wheel.name, sha256_of(wheel))
        finally:
            shutil.rmtree(build, ignore_errors=True)


def pip_environment(
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    *,
    only_binary: bool = True,
) -> dict[str, str]:
    """The controller pip's settings for one component (pip reads PIP_* from the environment):
    where it finds what PyPI lacks (e.g. PyTorch's CPU index), binary wheels only unless told."""
    env = {"PIP_ONLY_BINARY": ":all:"} if only_binary else {}
    if extra_index_urls:
        env["PIP_EXTRA_INDEX_URL"] = " ".join(extra_index_urls)
    if find_links:
        env["PIP_FIND_LINKS"] = " ".join(find_links)
    return env


def is_pure(wheel: Path) -> bool:
    """A wheel any Python 3 on any platform installs (``py3-none-any``)."""
    _python, abi, platform_tag = wheel.stem.rsplit("-", 3)[-3:]
    return abi == "none" and platform_tag == "any"


def ensure_pure_wheel(
    requirement: str, env: Mapping[str, str] | None = None, *, cache: Path | None = None
) -> Path:
    """A wheel built here once from a dependency PyPI ships only as source (``pip wheel``), for
    hosts that install offline and binary-only. It must come out pure Python: a wheel compiled
    here would carry this machine's interpreter and C library, not the hosts'."""
    wheel = ensure_wheel(requirement, env, cache=cache)
    if not is_pure(wheel):
        raise ArtifactError(
            f"{requirement}: built {wheel.name}, not a pure-Python wheel (hosts need one that "
            f"does not depend on this machine's Python; remove it from {wheel.parent} after "
            "changing its build settings)"
        )
    return wheel


def ensure_llama_cpp_wheel(cache: Path | None = None) -> Path:
    """The prebuilt llama.cpp engine wheel (xllamacpp), fetched once."""
    return ensure_wheel(LLAMA_CPP_REQUIREMENT, LLAMA_CPP_BUILD_ENV, cache=cache)


# The oldest glibc of the distributions citadel converges (Debian 12: 2.36; Debian 13: 2.41).
HOSTS_GLIBC = (2, 36)


def manylinux_platforms(glibc: tuple[int, int] = HOSTS_GLIBC, arch: str = "x86_64") -> list[str]:
    """Every wheel platform tag a host with ``glibc`` runs (pip's ``--platform`` matches a tag
    exactly, so ``manylinux_2_31`` must be named to be found): newest first."""
    major, minor = glibc
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    return [*tags, f"manylinux2014_{arch}", f"linux_{arch}"]


def ensure_dependency_wheels(
    requirement: str = LLAMA_CPP_REQUIREMENT,
    *,
    python_version: str | None = None,
    platforms: Sequence[str] | None = None,
    cache: Path | None = None,
    python: str = sys.executable,
    tag: str = "",
    env: Mapping[str, str] | None = None,
    constraints: Sequence[str] = (),
) -> Path:
    """Download the wheels ``requirement`` needs into ``wheels/deps/<name>-<version>-py<X.Y>/``.

    ``tag`` (e.g. a project's source digest) goes into the directory name: a project whose
    dependencies changed without a version bump gets a fresh set. ``constraints`` (pip
    constraint lines, e.g. ``torch==2.13.0+cpu``: the CPU build, so no CUDA add-ons come along)
    narrow the resolution without being installed themselves; a digest of them goes into the
    directory name too.

    For hosts that install offline: ``pip install --no-index --find-links <that dir>
    --find-links wheels/ <requirement>``. The package itself is resolved from the cached wheel
    (``--find-links wheels/``, built first if needed); binary-only, for ``python_version`` (the
    hosts' Python, default this one) and ``platforms``. Returns the directory.
    """
    name, version = parse_pinned(requirement)
    pyver = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    platforms = manylinux_platforms() if platforms is None else platforms
    directory = wheels_dir(cache)
    if constraints:
        pinned = "\n".join(sorted(constraints))
        tag = "-".join(t for t in (tag, hashlib.sha256(pinned.encode()).hexdigest()[:12]) if t)
    suffix = f"-{tag}" if tag else ""
    target = directory / "deps" / f"{name}-{version}{suffix}-py{pyver}"
    if (target / ".complete").is_file():
        return target
    own = find_cached_wheel(requirement, cache)
    if own is None:
        raise ArtifactError(f"build the wheel for {requirement} first (ensure_wheel)")
    with file_lock(directory):
        if (target / ".complete").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".deps-", dir=target.parent))
        try:
            cmd = [python, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(work)]
            cmd += ["--find-links", str(directory), "--python-version", pyver]
            for platform_tag in platforms:
                cmd += ["--platform", platform_tag]
            if constraints:
                constraint_file = work / ".constraints.txt"
                constraint_file.write_text("".join(f"{c}\n" for c in constraints))
                cmd += ["--constraint", str(constraint_file)]
            run([*cmd, requirement], env=env)
            # the package's own wheel lives in wheels/ already
            for path in work.glob(f"{name}-{version}-*.whl"):
                path.unlink()
            (work / ".complete").write_text(requirement + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(work, target)
            return target
        finally:
            shutil.rmtree(work, ignore_errors=True)
