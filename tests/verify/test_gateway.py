"""gateway: the API document's front door answers on the gateway host, exactly as documented.

Requests go from the webui host (an ordinary client of the gateway) and, for /metrics, from the
monitoring host. Tokens: minted with the inventory's dev signing key when it has one (the lab);
with a JWKS (production) the token of the secret `gateway.auth.verify_token_secret` names, minted
by the operators from their identity provider with the claims of docs/gateway-auth.md.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from typing import Any

import pytest

from citadel.components.gateway import HEALTH_NAMES
from citadel.devtokens import mint_dev_token
from tests.verify.declared import declared_skip, deployed_host, wait_for

COMPONENT = "gateway"
HEALTH_SETTLE_S = 20
# The sandbox's bound (templates/_shared/sandbox.j2, docs/security.md): `systemd-analyze
# security` scores every unit citadel writes this or below. Shared with the other unit modules'
# sandbox checks and with tests/unit/test_sandbox.py (the same bound, offline).
MAX_EXPOSURE = 2.5
CHAT = {
    "model": "llama-3-chat",
    "messages": [{"role": "user", "content": "Hello, world!"}],
    "max_tokens": 16,
}


def _token(target: Any) -> str:
    auth = target.host.gateway.auth
    if not auth.public_key_file:
        # A JWKS: the operators' verification token, named by the inventory.
        if not auth.verify_token_secret:
            pytest.fail("gateway.auth.verify_token_secret is not set: no credential to verify with")
        return str(target.secret(auth.verify_token_secret))
    return mint_dev_token(auth, "verify", ttl_s=600)


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


def test_its_listening_socket_is_systemds(target):
    """An upgrade's restart refuses no connection (docs/upgrades.md): systemd holds the socket
    and the running gateway serves the one it was handed, not one of its own."""
    infra = target.infra
    socket = infra.service("citadel-gateway.socket")
    assert socket.is_running and socket.is_enabled
    pid = infra.check_output("systemctl show -p MainPID --value citadel-gateway").strip()
    started = infra.check_output(
        f"journalctl _PID={pid} -o cat --no-pager | grep -cF 'serving the sockets systemd passed'"
        " || true"
    ).strip()
    assert started not in ("", "0"), f"gateway pid {pid} did not start on systemd's socket"


def exposure(report: str) -> float:
    """The overall exposure level (0-10) of a `systemd-analyze security UNIT` report."""
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", report)
    assert match, f"no overall exposure level in systemd-analyze's report:\n{report[-2000:]}"
    return float(match.group(1))


def assert_sandboxed(infra: Any, service: str, bound: float = MAX_EXPOSURE) -> None:
    """The service is active under its sandbox: systemd-analyze scores it ``bound`` (default
    MAX_EXPOSURE) or below.

    Online: the properties systemd loaded on the host (drop-ins included), not the file we wrote.
    LC_ALL=C: a plain ASCII report (no glyphs for testinfra to decode).
    """
    assert infra.service(service).is_running, f"{service} is not active"
    report = infra.check_output(f"LC_ALL=C systemd-analyze security --no-pager {service}.service")
    level = exposure(report)
    assert level <= bound, f"{service}: exposure {level} > {bound}; what is open:\n{report}"


def test_service_is_sandboxed(target):
    assert_sandboxed(target.infra, "citadel-gateway")


def _declared_qdrant_skip(target: Any) -> str | None:
    """The skip the inventory declares for its Qdrant (the only thing that skips it), or None."""
    for h in target.cluster.with_role("qdrant"):
        if h.qdrant is not None and h.qdrant.skip is not None:
            return str(h.qdrant.skip)
    return None


def _promised_services(target: Any) -> set[str]:
    """The /health services the inventory promises (the API document's five in production)."""
    cluster = target.cluster
    names = {
        HEALTH_NAMES[h.model.api]
        for h in cluster.model_hosts()
        if h.model is not None and h.model.skip is None
    }
    if cluster.with_role("qdrant"):
        names.add("vector_db")  # "skipped" where the inventory declares it
    if cluster.with_role("postgres"):
        names.add("database")
    return names


def test_health_reports_every_deployed_service_healthy(target):
    # A model server restarted by the converge just before is re-admitted at the gateway's next
    # health probe (every few seconds): give /health two probe intervals and some slack.
    status, _, body = wait_for(
        lambda: _curl(_client(target), _url(target, "/health")),
        lambda got: got[0] == 200 and got[2]["status"] == "healthy",
        timeout_s=HEALTH_SETTLE_S,
        interval_s=1,
    )
    assert status == 200
    assert set(body) == {"status", "timestamp", "services", "performance"}
    assert body["status"] == "healthy", body
    assert set(body["services"]) == _promised_services(target), body
    skipped = {name for name, state in body["services"].items() if state == "skipped"}
    # only what the inventory declares skipped is (the lab: Qdrant, lab-no-vendor-downloads)
    assert skipped == ({"vector_db"} if _declared_qdrant_skip(target) else set()), body
    assert all(body["services"][name] == "healthy" for name in set(body["services"]) - skipped)


def test_health_names_why_a_service_is_skipped(target):
    reason = _declared_qdrant_skip(target)
    if reason is None:
        declared_skip("the inventory skips no service the gateway reports")
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
    monitoring = deployed_host(target.cluster, "prometheus")
    out = target.on(monitoring.name).check_output(
        f"curl -sS --max-time 10 {_url(target, '/metrics')}"
    )
    assert "http_requests_total" in out
    status, _, _ = _curl(_client(target), _url(target, "/metrics"))
    assert status in (401, 403, 404)


NO_MODEL = {"model": "verify-no-such-model", "messages": [{"role": "user", "content": "x"}]}


def _as_webui(webui: Any, url: str, token: str, user: str, body: Any, count: int) -> list[str]:
    """``count`` chats as OpenWebUI sends them (its service token, the user's id header) from
    the webui host, in one shell: the HTTP status of each."""
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n", "--max-time", "60"]
    args += ["-H", f"Authorization: Bearer {token}", "-H", f"X-OpenWebUI-User-Id: {user}"]
    args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body), url]
    curl = " ".join(shlex.quote(a) for a in args)
    return str(webui.check_output(f"for i in $(seq {count}); do {curl}; done")).split()


def test_webui_users_each_get_their_own_rate_limit(target):
    """Issue 15, point 3: through OpenWebUI's service token, each UI user has the document's
    chat limit of their own (one exhausted, the other still served), the access log names them,
    and the token is refused off the webui host."""
    webui = deployed_host(target.cluster, "webui")
    on_webui = target.on(webui.name)
    token = target.secret("webui_gateway_token")
    url = _url(target, "/v1/chat/completions")
    run = uuid.uuid4().hex[:8]
    alice, bob = f"verify-{run}-a", f"verify-{run}-b"
    burst = target.host.gateway.rate_limits.chat_completions.burst
    # alice's bucket spent on a model no backend serves: the limiter decides before any
    # inference, so this costs no model time (503 each, then 429)
    codes = _as_webui(on_webui, url, token, alice, NO_MODEL, burst + 5)
    assert "429" in codes and set(codes) <= {"503", "429"}, codes
    # bob's is untouched: a real chat, served
    assert _as_webui(on_webui, url, token, bob, CHAT, 1) == ["200"]
    # the gateway's own host is not the webui: the same token is refused there
    assert _curl(target.infra, url, token=token, body=CHAT, method="POST")[0] == 401
    line = shlex.quote(f'"subject":"webui:{bob}"')
    journal = f"journalctl -u citadel-gateway -o cat --since=-5min | grep -F {line} || true"
    log = wait_for(lambda: target.infra.check_output(journal), bool, timeout_s=10, interval_s=1)
    assert '"forwarder":"webui"' in log and f'"client":"{webui.address}"' in log, log
