"""Pinned artifacts: looked up in pins.yml, fetched once to the controller cache, sha256-checked.

Nothing here fakes an artifact: when it cannot be had, `ArtifactUnavailable` says which artifact,
from which source, and why; the converge of that host fails closed (deploys.preflight) unless the
inventory declares the component skipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from citadel.components import REGISTRY
from citadel.errors import CitadelError

PINS_FILE = Path(__file__).resolve().parent.parent / "pins.yml"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
FETCH_TIMEOUT_S = 20


class ArtifactUnavailable(CitadelError):
    """The artifact is not in the cache and could not be fetched and verified."""


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    arch: str
    url: str
    sha256: str | None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def label(self) -> str:
        return f"{self.name} {self.version} ({self.arch})"


def load_pins(path: Path = PINS_FILE) -> dict[str, dict[str, dict[str, object]]]:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def pinned(name: str, version: str, arch: str = "x86_64", pins: dict | None = None) -> Artifact:
    pins = pins if pins is not None else load_pins()
    try:
        entry = pins[name][version]
    except KeyError:
        raise ArtifactUnavailable(f"{name} {version}: not in pins.yml") from None
    template = entry["url"]
    if isinstance(template, dict):  # one URL per architecture (names differ, e.g. gnu / musl)
        if arch not in template:
            raise ArtifactUnavailable(f"{name} {version}: no {arch} URL in pins.yml")
        template = template[arch]
    url = str(template).format(version=version, arch=arch, goarch=GOARCH.get(arch, arch))
    sums = entry.get("sha256") or {}
    sha = sums.get(arch) if isinstance(sums, dict) else None
    return Artifact(name, version, arch, url, str(sha) if sha else None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_url(artifact: Artifact, mirror: str | None) -> str:
    return f"{mirror.rstrip('/')}/{artifact.filename}" if mirror else artifact.url


def ensure_cached(artifact: Artifact, cache_dir: str | Path, mirror: str | None = None) -> Path:
    """The verified file in the controller cache, downloading it once if needed."""
    cache = Path(cache_dir) / artifact.name / artifact.version
    target = cache / artifact.filename
    url = source_url(artifact, mirror)
    if target.exists():
        got = sha256_of(target)
        if artifact.sha256 is not None and got == artifact.sha256:
            return target
        raise ArtifactUnavailable(
            f"{artifact.label()}: cached file {target} has sha256 {got}, "
            f"pinned {artifact.sha256 or 'nothing'} in pins.yml"
        )
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".part-")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as rsp,
        ):
            shutil.copyfileobj(rsp, out)
        got = sha256_of(tmp)
        if artifact.sha256 is None:
            raise ArtifactUnavailable(
                f"{artifact.label()}: fetched from {url} but no sha256 is pinned in pins.yml "
                f"(the file's is {got}); refusing an unverified artifact"
            )
        if got != artifact.sha256:
            raise ArtifactUnavailable(
                f"{artifact.label()}: sha256 mismatch for {url} (got {got[:12]}…, "
                f"pinned {artifact.sha256[:12]}…)"
            )
        os.replace(tmp, target)
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ArtifactUnavailable(
            f"{artifact.label()}: unavailable from {url} ({reason})"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def artifact_of(section: str, config: object) -> tuple[str, str] | None:
    """The pinned artifact (name, version) a component installs: its declaration's ``artifact``."""
    component = REGISTRY.get(section)
    return component.pinned_artifact(config) if component is not None else None


_artifact_of = artifact_of  # the name citadel.pins uses

_AVAILABILITY: dict[tuple[str, str, str, str, str | None], str | None] = {}


def unavailable_reason(
    section: str,
    config: object,
    cache_dir: str | Path,
    mirror: str | None,
    arch: str = "x86_64",
    probe: bool = True,
) -> str | None:
    """Why a component cannot be installed (its artifact), or None.

    Without `probe` only pins.yml decides (an artifact with no sha256 pinned is never
    installed); with it, the artifact is fetched into the controller cache once per process.
    Only the converge's preflight asks (deploys.preflight), which fails the host with this line;
    rendering never does (a config's shape follows the inventory alone).
    """
    wanted = artifact_of(section, config)
    if wanted is None:
        return None
    try:
        artifact = pinned(wanted[0], wanted[1], arch)
    except ArtifactUnavailable as exc:
        return str(exc)
    if artifact.sha256 is None:
        return (
            f"{artifact.label()}: artifact unavailable: no sha256 pinned in pins.yml for "
            f"{source_url(artifact, mirror)} (an unverified download is never installed)"
        )
    if not probe:
        return None
    key = (wanted[0], wanted[1], arch, str(cache_dir), mirror)
    if key not in _AVAILABILITY:
        try:
            ensure_cached(artifact, cache_dir, mirror)
            _AVAILABILITY[key] = None
        except ArtifactUnavailable as exc:
            _AVAILABILITY[key] = str(exc)
    return _AVAILABILITY[key]
