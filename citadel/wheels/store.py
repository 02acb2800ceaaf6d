"""The cache's layout and its safety: paths under ``CITADEL_CACHE_DIR``, sha256 sidecars, the
per-directory lock, publishing a made artifact atomically, and running pip/python for it.

Every artifact is made in a temporary directory inside its cache directory and moved into place
with ``os.replace`` (atomic on one filesystem) while holding that directory's ``.lock``
(:func:`file_lock`), so concurrent runs wait for each other and never see half an artifact."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from citadel import paths
from citadel.artifacts import sha256_of

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(paths.DEFAULT_CACHE_DIR)
CACHE_ENV = paths.CACHE_ENV


class ArtifactError(RuntimeError):
    """An artifact could not be built or fetched; the message says which and why."""


class ChecksumError(ArtifactError):
    """An artifact's sha256 is not the pinned one."""


def cache_dir() -> Path:
    """The cache root: ``$CITADEL_CACHE_DIR`` or ``/var/cache/citadel`` (read at call time)."""
    return paths.cache_dir()


def wheels_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "wheels"


def models_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "models"


def write_sha256_sidecar(path: Path, digest: str) -> None:
    sidecar = path.with_name(path.name + ".sha256")
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, sidecar)


def publish(made: Path, target: Path, digest: str) -> Path:
    """Move a finished artifact into place (atomic), then its sha256 sidecar; log it."""
    os.replace(made, target)
    write_sha256_sidecar(target, digest)
    log.info("cached %s (sha256 %s)", target, digest)
    return target


def read_sha256_sidecar(path: Path) -> str | None:
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


def run(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, nice: int = 0) -> None:
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


def wheel_sha256(path: Path) -> str:
    """sha256 of a cached wheel (the sidecar when it is newer than the wheel, else hashed)."""
    sidecar = path.with_name(path.name + ".sha256")
    known = read_sha256_sidecar(path)
    if known and sidecar.stat().st_mtime_ns >= path.stat().st_mtime_ns:
        return known
    return sha256_of(path)
