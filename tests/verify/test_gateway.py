"""gateway: the API document's front door answers on the gateway host, exactly as documented.

Requests go from the webui host (an ordinary client of the gateway) and, for /metrics, from the
monitoring host; tokens are minted with the inventory's dev signing key when it has one.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

COMPONENT = "gateway"
HEALTH_SETTLE_S = 20
CHAT = {
    "model": "llama-3-chat",
    "messages": [{"role": "user", "content": "Hello, world!"}],
    "max_tokens": 16,
}


def _token(target: Any) -> str:
    auth = target.host.gateway.auth
    if not auth.public_key_file:
        pytest.skip("the gateway uses a JWKS here; no local key to mint a test token")
    from citadel_gateway.devtoken import mint

    private = Path(auth.public_key_file).with_name("private.pem")
    azp = auth.authorized_parties[0] if auth.authorized_parties else None
    return mint(
        private.read_bytes(),
        "verify",
        auth.issuers[0],
        azp=azp,
        ttl_s=600,
        permissions=["vector:search"],
    )


def _client_name(target: Any) -> str:
    """An ordinary client of the gateway: a host that is neither the gateway nor monitoring."""
    for h in target.cluster.hosts:
        if h.name != target.host.name and "monitoring" not in h.roles:
            return h.name
    return target.host.name


def _client(target: Any) -> Any:
    return target.on(_client_name(target))


def _curl(
    client: Any, url: str, *, token: str | None = None, body: Any = None, method: str = "GET"
) -> tuple[int, dict[str, str], Any]:
    args = ["curl", "-sS", "--max-time", "60", "-D", "-", "-X", method, url]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    out = client.check_output(" ".join(shlex.quote(a) for a in args))
    head, _, payload = out.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, json.loads(payload) if payload.strip() else None


def _url(target: Any, path: str) -> str:
    return f"http://{target.host.address}:{target.host.gateway.port}{path}"


def test_service_runs(target):
    service = target.infra.service("citadel-gateway")
    assert service.is_running and service.is_enabled


def _undeployable_qdrant(target: Any) -> str | None:
    """Why the inventory's Qdrant cannot be deployed (pins.yml alone decides), or None."""
    from citadel.artifacts import unavailable_reason

    for h in target.cluster.with_role("qdrant"):
        if h.qdrant is not None:
            if h.qdrant.skip is not None:
                return str(h.qdrant.skip)
            settings = target.cluster.artifacts
            return unavailable_reason(
                "qdrant", h.qdrant, settings.cache_dir, settings.mirror, probe=False
            )
    return None


def test_health_reports_every_deployed_service_healthy(target):
    # A model server restarted by the converge just before is re-admitted at the gateway's next
    # health probe (every few seconds): give /health two probe intervals and some slack.
    deadline = time.monotonic() + HEALTH_SETTLE_S
    while True:
        status, _, body = _curl(_client(target), _url(target, "/health"))
        if (status == 200 and body["status"] == "healthy") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200
    assert set(body) == {"status", "timestamp", "services", "performance"}
    assert body["status"] == "healthy", body
    skipped = {name for name, state in body["services"].items() if state == "skipped"}
    # only what the inventory cannot deploy is skipped (the lab: Qdrant, no artifact pinned)
    assert skipped == ({"vector_db"} if _undeployable_qdrant(target) else set()), body
    assert all(body["services"][name] == "healthy" for name in set(body["services"]) - skipped)


def test_health_names_why_a_service_is_skipped(target):
    reason = _undeployable_qdrant(target)
    if reason is None:
        pytest.skip("every service of this inventory is deployed")
    status, _, body = _curl(
        _client(target), _url(target, "/health?detailed=true"), token=_token(target)
    )
    assert status == 200
    assert body["services"]["vector_db"] == "skipped"
    assert reason in body["details"]["services"]["vector_db"]["reason"]


def test_no_token_is_401_in_the_documents_format(target):
    status, headers, body = _curl(_client(target), _url(target, "/v1/models"))
    assert status == 401
    error = body["error"]
    assert error["code"] == "INVALID_AUTH"
    assert set(error) >= {"type", "message", "code", "request_id"}
    assert headers.get("x-request-id") == error["request_id"]


def test_a_real_chat_completion_through_the_gateway(target):
    status, headers, body = _curl(
        _client(target),
        _url(target, "/v1/chat/completions"),
        token=_token(target),
        body=CHAT,
        method="POST",
    )
    assert status == 200, body
    assert body["object"] == "chat.completion"
    assert body["model"] == "llama-3-chat"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert set(body["performance"]) == {"inference_time_ms", "queue_time_ms", "gpu_utilization"}
    assert headers["x-ratelimit-limit"] == "60"


def test_document_embeddings_route_returns_one_vector_per_input(target):
    texts = [
        "The quick brown fox jumps over the lazy dog",
        "Machine learning is a subset of artificial intelligence",
    ]
    status, _, body = _curl(
        _client(target),
        _url(target, "/api/embeddings"),
        token=_token(target),
        body={"model": "llama-3-embeddings", "input": texts},
        method="POST",
    )
    assert status == 200, body
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    embed_host = next(h for h in target.cluster.model_hosts("embeddings"))
    assert len(body["data"][0]["embedding"]) == embed_host.model.embedding_dimension


def test_metrics_are_for_the_monitoring_host_only(target):
    monitoring = target.cluster.with_role("monitoring")
    if not monitoring:
        pytest.skip("no monitoring host in this inventory")
    out = target.on(monitoring[0].name).check_output(
        f"curl -sS --max-time 10 {_url(target, '/metrics')}"
    )
    assert "http_requests_total" in out
    status, _, _ = _curl(_client(target), _url(target, "/metrics"))
    assert status in (401, 403, 404)
