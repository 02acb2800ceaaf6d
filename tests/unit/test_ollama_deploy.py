"""Ollama deploy: artifact checksum path, rendered unit/drop-in/Modelfile, model idempotence."""

from __future__ import annotations

import hashlib
from pathlib import Path

import deploy_harness as h
import pytest

from citadel import artifacts
from citadel.artifacts import ArtifactUnavailable
from citadel.components.model_server import OLLAMA_DROPIN, OLLAMA_UNIT
from citadel.render import render_host
from deploys import ollama

TAGS = "http://192.168.10.31:11434"


def _files() -> dict[str, str]:
    ctx = h.context("inventory/production.yml", "llm-embed")
    return {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}


def test_unit_drop_in_and_modelfile() -> None:
    files = _files()
    assert "ExecStart=/usr/local/bin/ollama serve" in files[OLLAMA_UNIT]
    assert "User=ollama" in files[OLLAMA_UNIT]
    dropin = files[OLLAMA_DROPIN]
    assert "Environment=OLLAMA_HOST=192.168.10.31:11434" in dropin
    assert "Environment=OLLAMA_MODELS=/var/lib/ollama/models" in dropin
    assert "Environment=OLLAMA_KEEP_ALIVE=24h" in dropin
    assert "\nFROM llama3:8b\n" in files["/etc/ollama/modelfiles/llama-3-embeddings"]


# -- the artifact: pins, checksum, cache -------------------------------------------------------


def _pins(url: str, sha: str | None) -> dict:
    return {"ollama": {"0.12.3": {"url": url, "sha256": {"x86_64": sha}}}}


def test_release_url_from_pins() -> None:
    cfg = h.context("inventory/production.yml", "llm-embed").host.model
    assert cfg is not None
    art = ollama.release(cfg, "x86_64")
    assert (
        art.url
        == "https://github.com/ollama/ollama/releases/download/v0.12.3/ollama-linux-amd64.tgz"
    )
    assert ollama.release(cfg, "aarch64").filename == "ollama-linux-arm64.tgz"


def test_checksum_mismatch_is_refused_and_nothing_cached(tmp_path: Path) -> None:
    upstream = tmp_path / "ollama-linux-amd64.tgz"
    upstream.write_bytes(b"not the pinned tarball")
    art = artifacts.pinned("ollama", "0.12.3", "x86_64", _pins(upstream.as_uri(), "0" * 64))
    cache = tmp_path / "cache"
    with pytest.raises(ArtifactUnavailable, match="sha256 mismatch"):
        artifacts.ensure_cached(art, cache)
    assert not list(cache.rglob("*.tgz"))


def test_unpinned_checksum_is_refused(tmp_path: Path) -> None:
    upstream = tmp_path / "ollama-linux-amd64.tgz"
    upstream.write_bytes(b"x")
    art = artifacts.pinned("ollama", "0.12.3", "x86_64", _pins(upstream.as_uri(), None))
    with pytest.raises(ArtifactUnavailable, match="no sha256 is pinned"):
        artifacts.ensure_cached(art, tmp_path / "cache")


def test_matching_checksum_is_cached_once(tmp_path: Path) -> None:
    upstream = tmp_path / "ollama-linux-amd64.tgz"
    upstream.write_bytes(b"tarball")
    sha = hashlib.sha256(b"tarball").hexdigest()
    art = artifacts.pinned("ollama", "0.12.3", "x86_64", _pins(upstream.as_uri(), sha))
    first = artifacts.ensure_cached(art, tmp_path / "cache")
    upstream.unlink()  # the second call needs no source
    assert artifacts.ensure_cached(art, tmp_path / "cache") == first


def test_unavailable_artifact_stops_before_any_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*_: object, **__: object) -> Path:
        raise ArtifactUnavailable("ollama 0.12.3 (x86_64): unavailable from https://github.com/...")

    monkeypatch.setattr(artifacts, "ensure_cached", unavailable)
    ctx = h.context("inventory/production.yml", "llm-embed")
    ops: list = []
    with pytest.raises(ArtifactUnavailable, match="unavailable"):
        ops = h.run(ollama.apply, {}, ctx, ctx.host.model).ops
    assert ops == []


# -- the deploy's commands ---------------------------------------------------------------------


@pytest.fixture
def tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ollama-linux-amd64.tgz"
    path.write_bytes(b"tgz")
    monkeypatch.setattr(ollama, "fetch_release", lambda ctx, cfg, arch: str(path))
    return path


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_cold_converge_commands(distro: str, tarball: Path) -> None:
    ctx = h.context("inventory/production.yml", "llm-embed")
    run = h.run(ollama.apply, {"LinuxDistribution": h.DISTROS[distro]}, ctx, ctx.host.model)
    assert "useradd" in run.op("User ollama").text()
    assert (
        f"<upload {tarball} -> /var/cache/citadel/artifacts/ollama-linux-amd64.tgz>"
        in run.op("Upload ollama").text()
    )
    assert (
        "tar -C /opt/ollama/0.12.3.tmp -xzf /var/cache/citadel/artifacts/ollama-linux-amd64.tgz"
        in (run.op("Unpack ollama").text())
    )
    assert "ln -s /opt/ollama/0.12.3/bin/ollama /usr/local/bin/ollama" in run.op("Link").text()
    pull = run.op("Pull llama3:8b")
    create = run.op("Create llama-3-embeddings (missing)")
    assert pull.commands == ["OLLAMA_HOST=192.168.10.31:11434 /usr/local/bin/ollama pull llama3:8b"]
    assert create.commands == [
        "OLLAMA_HOST=192.168.10.31:11434 /usr/local/bin/ollama create llama-3-embeddings "
        "-f /etc/ollama/modelfiles/llama-3-embeddings"
    ]
    order = [
        "Unpack",
        f"Write {OLLAMA_DROPIN}",
        "Restart ollama",
        "Run ollama",
        "Wait until",
        "Pull",
        "Create",
    ]
    assert [run.index(o) for o in order] == sorted(run.index(o) for o in order)
    assert run.op("Wait until /api/version").conditional


def test_present_models_are_neither_pulled_nor_recreated(tarball: Path) -> None:
    ctx = h.context("inventory/production.yml", "llm-embed")
    facts = {
        ("Directory", "/opt/ollama/0.12.3/bin"): {"mode": 755},
        ("OllamaTags", TAGS): {"llama3:8b", "llama-3-embeddings:latest"},
    }
    run = h.run(ollama.apply, facts, ctx, ctx.host.model)
    assert not run.has("Pull")
    assert not run.has("Upload ollama") and not run.has("Unpack")
    recreate = run.op("Re-create llama-3-embeddings (Modelfile changed)")
    assert recreate.conditional


def test_tags_fact_parses_api_tags() -> None:
    fact = ollama.OllamaTags()
    out = (
        '{"models":[{"name":"llama3:8b","model":"llama3:8b"},{"name":"llama-3-embeddings:latest"}]}'
    )
    assert fact.process([out]) == {"llama3:8b", "llama-3-embeddings:latest"}
    assert fact.process([]) is None
    assert fact.process(["<html>"]) is None
    assert ollama.tagged("llama-3-embeddings") == "llama-3-embeddings:latest"
    assert ollama.tagged("library/llama3:8b") == "library/llama3:8b"
