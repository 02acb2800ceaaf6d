"""Ollama model hosts (production GPU hosts; the lab runs llama.cpp, so these skip there)."""

from __future__ import annotations

import json
import shlex

COMPONENT = "ollama"


def _url(target, path: str) -> str:
    return f"http://{target.host.address}:{target.host.model.port}{path}"


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("ollama")
    assert service.is_running
    assert service.is_enabled


def test_drop_in_sets_host_models_keep_alive(target):
    content = target.infra.file(
        "/etc/systemd/system/ollama.service.d/10-citadel.conf"
    ).content_string
    assert f"OLLAMA_HOST={target.host.address}:{target.host.model.port}" in content
    assert "OLLAMA_MODELS=" in content
    assert f"OLLAMA_KEEP_ALIVE={target.host.model.ollama.keep_alive}" in content


def test_served_name_is_listed(target):
    tags = json.loads(
        target.infra.check_output(f"curl -sf --max-time 10 {_url(target, '/api/tags')}")
    )
    names = {m["name"] for m in tags["models"]}
    assert f"{target.host.model.served_name}:latest" in names


def test_embeddings_have_the_configured_dimension(target):
    model = target.host.model
    body = json.dumps({"model": model.served_name, "input": ["hello world", "a second text"]})
    out = target.infra.check_output(
        f"curl -sf --max-time 300 -d {shlex.quote(body)} {_url(target, '/api/embed')}"
    )
    vectors = json.loads(out)["embeddings"]
    assert len(vectors) == 2
    assert all(len(v) == model.embedding_dimension for v in vectors)
