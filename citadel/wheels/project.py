"""Wheels of this repository's own services (services/*): built once per source state (a digest
of the project's sources), from a copy, so the checkout never gets build litter."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from citadel.artifacts import sha256_of
from citadel.wheels.index import find_cached_wheel
from citadel.wheels.store import ArtifactError, file_lock, run, wheels_dir, write_sha256_sidecar

log = logging.getLogger(__name__)

_SOURCE_SUFFIXES = (".py", ".toml", ".cfg", ".typed", ".txt", ".md", ".in")


def source_digest(project: Path) -> str:
    """sha256 over a local project's source files (path + content), ignoring build output."""
    digest = hashlib.sha256()
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if not path.is_file() or path.suffix not in _SOURCE_SUFFIXES:
            continue
        if any(p in ("build", "dist", "__pycache__") or p.endswith(".egg-info") for p in rel.parts):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _project_name_version(project: Path) -> tuple[str, str]:
    import tomllib

    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    return re.sub(r"[-_.]+", "_", meta["name"]).lower(), str(meta["version"])


def ensure_project_wheel(
    project: Path, *, cache: Path | None = None, python: str = sys.executable
) -> Path:
    """The wheel of a local project (e.g. ``services/gpu_exporter``), built once per source state.

    Cached as ``wheels/<name>-<version>-*.whl`` with a ``.source`` sidecar holding
    :func:`source_digest`: a source change rebuilds it even when the version did not move. The
    build runs on a copy of the project in a temporary directory, so the repository gets no
    ``build/`` or ``*.egg-info`` litter.
    """
    name, version = _project_name_version(project)
    requirement = f"{name}=={version}"
    digest = source_digest(project)
    directory = wheels_dir(cache)

    def current() -> Path | None:
        hit = find_cached_wheel(requirement, cache)
        if hit is None:
            return None
        sidecar = hit.with_name(hit.name + ".source")
        return hit if sidecar.is_file() and sidecar.read_text().strip() == digest else None

    hit = current()
    if hit is not None:
        return hit
    with file_lock(directory):
        hit = current()
        if hit is not None:
            return hit
        work = Path(tempfile.mkdtemp(prefix=".project-", dir=directory))
        try:
            src = work / "src"
            shutil.copytree(
                project,
                src,
                ignore=shutil.ignore_patterns("build", "dist", "__pycache__", "*.egg-info"),
            )
            out = work / "out"
            run(
                [
                    *(python, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"),
                    *("--wheel-dir", str(out), str(src)),
                ]
            )
            built = sorted(out.glob(f"{name}-{version}-*.whl"))
            if len(built) != 1:
                raise ArtifactError(f"pip wheel {project}: expected one {name} wheel")
            for old in directory.glob(f"{name}-{version}-*.whl"):
                old.unlink()
            target = directory / built[0].name
            os.replace(built[0], target)
            write_sha256_sidecar(target, sha256_of(target))
            target.with_name(target.name + ".source").write_text(digest + "\n")
            log.info("cached %s (source %s)", target, digest[:12])
            return target
        finally:
            shutil.rmtree(work, ignore_errors=True)
