"""Every route, error codes, streaming, embeddings shape, request ids, cache, metrics."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from .conftest import GatewayFactory, Gw, Tokens, backend_state, wait_until

CAPTURE = Path(__file__).resolve().parents[1] / "unit" / "fixtures" / "gpu" / "h100"
CHAT = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}


def _err(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"type", "message", "code", "details", "request_id"}
    assert err["code"] == code
    assert err["request_id"] == r.headers["x-request-id"]
    return err


def test_chat_completion_with_performance_block(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.post("/v1/chat/completions", json=CHAT, headers=token.headers())
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "llama-3-chat"
    assert body["choices"][0]["message"]["content"] == "echo: hi"
    assert body["usage"]["total_tokens"] == 12
    perf = body["performance"]
    assert set(perf) == {"inference_time_ms", "queue_time_ms", "gpu_utilization"}
    assert perf["inference_time_ms"] >= 0 and perf["queue_time_ms"] >= 0
    assert perf["gpu_utilization"] is None
    assert r.headers["x-ratelimit-limit"] == "60"


def test_gpu_utilization_comes_from_the_backend_hosts_exporter(
    gateways: GatewayFactory, cfg: dict[str, Any], backend: str, token: Tokens
) -> None:
    c = copy.deepcopy(cfg)
    c["models"]["gpu-chat"] = {
        "kind": "chat",
        "backends": [{"url": backend + "/v1", "gpu_metrics_url": backend + "/gpu/metrics"}],
    }
    g = gateways(c, "gpu")
    with g.client() as client:

        def perf() -> Any:
            r = client.post(
                "/v1/chat/completions", json=dict(CHAT, model="gpu-chat"), headers=token.headers()
            )
            return r.json()["performance"]["gpu_utilization"]

        # the exporter is read with the background health probes (every second here)
        assert wait_until(perf, 10, "gpu_utilization from the exporter") == 50.0


def test_gpu_utilization_parses_the_exporters_exposition() -> None:
    from citadel_gateway.health import gpu_utilization

    text = (CAPTURE / "metrics-load.txt").read_text()
    assert gpu_utilization(text) == 99.0  # one H100 under a matrix-product loop
    assert gpu_utilization("nvidia_gpu_up 0.0\n") is None


def test_completions_stop_suffix(gw: Gw, token: Tokens, backend: str) -> None:
    req = {
        "model": "llama-3-instruct",
        "prompt": "def fib(n):",
        "max_tokens": 500,
        "temperature": 0.3,
        "stop": ["\n\n"],
        "suffix": "",
    }
    with gw.client() as c:
        r = c.post("/v1/completions", json=req, headers=token.headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "llama-3-instruct"
    assert "stop=['\\n\\n']" in body["choices"][0]["text"]
    sent = backend_state(backend)["last_body"]
    # the document's empty suffix means none: vLLM would refuse it for Llama 3 (no FIM)
    assert sent["stop"] == ["\n\n"] and "suffix" not in sent


def test_a_real_suffix_for_a_model_without_fill_in_the_middle_is_refused_by_name(
    gw: Gw, token: Tokens
) -> None:
    req = {"model": "llama-3-instruct", "prompt": "def fib(n):", "suffix": "    return x"}
    with gw.client() as c:
        r = c.post("/v1/completions", json=req, headers=token.headers())
    assert r.status_code == 400
    assert r.json()["error"]["details"]["field"] == "suffix"


def test_a_fill_in_the_middle_model_gets_its_suffix(
    gateways: GatewayFactory, cfg: dict[str, Any], backend: str, token: Tokens
) -> None:
    c = copy.deepcopy(cfg)
    c["models"]["llama-3-instruct"]["fill_in_middle"] = True
    g = gateways(c, "fim")
    req = {"model": "llama-3-instruct", "prompt": "def fib(n):", "suffix": "    return x"}
    with g.client() as client:
        r = client.post("/v1/completions", json=req, headers=token.headers())
    assert r.status_code == 200, r.text
    assert backend_state(backend)["last_body"]["suffix"] == "    return x"


def test_embeddings_shape_string_and_list(gw: Gw, token: Tokens) -> None:
    h = token.headers()
    with gw.client() as c:
        for path in ("/api/embeddings", "/v1/embeddings"):
            one = c.post(path, json={"model": "llama-3-embeddings", "input": "hello"}, headers=h)
            assert one.status_code == 200, one.text
            b = one.json()
            assert b["object"] == "list" and b["model"] == "llama-3-embeddings"
            assert [d["index"] for d in b["data"]] == [0]
            assert b["data"][0]["object"] == "embedding"
            assert isinstance(b["data"][0]["embedding"], list)
            assert set(b["usage"]) >= {"prompt_tokens", "total_tokens"}
            two = c.post(path, json={"model": "llama-3-embeddings", "input": ["a", "b"]}, headers=h)
            assert [d["index"] for d in two.json()["data"]] == [0, 1]
        bad = c.post("/api/embeddings", json={"model": "llama-3-embeddings", "input": 5}, headers=h)
        assert _err(bad, 400, "INVALID_PARAMS")["details"]["field"] == "input"


def test_models(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.get("/v1/models", headers=token.headers())
    assert r.status_code == 200
    assert r.json()["object"] == "list"


def test_collection_search_adds_api_key(gw: Gw, token: Tokens, backend: str) -> None:
    body = {
        "vector": [0.1, 0.2, 0.3, 0.4],
        "limit": 5,
        "with_payload": True,
        "filter": {"must": [{"key": "category", "match": {"value": "technology"}}]},
    }
    h = token.headers(perms=["vector:search"])
    with gw.client() as c:
        r = c.post("/collections/documents/points/search", json=body, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["result"][0]["payload"]["text"] == "Sample document"
        assert r.headers["x-ratelimit-limit"] == "300"
        assert backend_state(backend)["last_api_key"] == "qdrant-secret-key"
        missing = c.post("/collections/missing/points/search", json=body, headers=h)
        issue = _err(missing, 400, "INVALID_PARAMS")["details"]["issue"]
        assert "HTTP 404" in issue and "Collection not found" not in issue  # logged, not shown
        novec = c.post("/collections/documents/points/search", json={"limit": 1}, headers=h)
        assert _err(novec, 400, "INVALID_PARAMS")["details"]["field"] == "vector"


def test_health_body(gw: Gw) -> None:
    with gw.client() as c:
        r = c.get("/health")
    assert r.status_code == 200
    b = r.json()
    assert set(b) == {"status", "timestamp", "services", "performance"}
    assert set(b["services"]) == {
        "llama_chat",
        "llama_instruct",
        "embeddings",
        "vector_db",
        "database",
    }
    assert b["services"]["llama_chat"] == "healthy"
    assert b["services"]["vector_db"] == "healthy"
    assert b["services"]["database"] == "unhealthy"  # nothing listens on the test's postgres port
    assert b["status"] == "degraded"
    assert b["timestamp"].endswith("Z")
    assert set(b["performance"]) == {"avg_response_time_ms", "requests_per_second"}
    assert r.headers["x-ratelimit-limit"] == "600"
    assert "x-ratelimit-remaining" in r.headers


def test_health_skipped_service_is_named_with_its_reason_and_not_counted_as_down(
    gateways: GatewayFactory, cfg: dict[str, Any], token: Tokens
) -> None:
    c = copy.deepcopy(cfg)
    services = c["health"]["services"]
    services["vector_db"] = {"probe": "skipped", "reason": "Qdrant is not deployed: no artifact"}
    del services["database"]
    c.pop("qdrant")
    g = gateways(c, "skipped")
    with g.client() as client:
        body = wait_until(
            lambda: (
                (b := client.get("/health").json())["services"].get("llama_chat") == "healthy" and b
            ),
            10,
            "first health round",
        )
        ops = token.headers(perms=["health:detailed"])
        detailed = client.get("/health?detailed=true", headers=ops).json()
        search = client.post(
            "/collections/docs/points/search",
            json={"vector": [0.1], "limit": 1},
            headers=token.headers(perms=["vector:search"]),
        )
    assert body["services"]["vector_db"] == "skipped"
    assert body["status"] == "healthy"
    assert detailed["details"]["services"]["vector_db"] == {
        "reason": "Qdrant is not deployed: no artifact"
    }
    assert search.status_code == 503
    assert search.json()["error"]["code"] == "MODEL_UNAVAILABLE"


def test_status(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        assert c.get("/api/v1/status").status_code == 401
        r = c.get("/api/v1/status", headers=token.headers())
    assert r.status_code == 200
    b = r.json()
    assert b["models"]["llama-3-chat"]["status"] == "healthy"
    assert b["rate_limits"]["chat_completions"] == {"per_minute": 60, "burst": 10}


def test_openapi(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        assert c.get("/openapi.json").status_code == 401
        r = c.get("/openapi.json", headers=token.headers())
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for p in (
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/api/embeddings",
        "/v1/models",
        "/collections/{name}/points/search",
        "/health",
        "/api/v1/status",
        "/metrics",
        "/openapi.json",
    ):
        assert p in doc["paths"], p


def test_metrics_names(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        c.post("/v1/chat/completions", json=CHAT, headers=token.headers())
        r = c.get("/metrics")
    assert r.status_code == 200
    text = r.text
    for name in (
        "ai_inference_duration_seconds_bucket",
        "ai_queue_size",
        "cache_hit_ratio",
        "vector_search_duration_seconds",
        "http_requests_total",
        "gateway_upstream_up",
        "gateway_overhead_seconds_bucket",
    ):
        assert name in text, name
    assert 'http_requests_total{code="200",method="POST",route="/v1/chat/completions"}' in text


def test_streaming_passthrough_is_incremental(gw: Gw, token: Tokens) -> None:
    req = dict(CHAT, stream=True, x_chunks=4, x_delay=0.4)
    arrivals: list[float] = []
    chunks: list[bytes] = []
    with (
        gw.client() as c,
        c.stream("POST", "/v1/chat/completions", json=req, headers=token.headers()) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        t0 = time.monotonic()
        for chunk in r.iter_raw():
            arrivals.append(time.monotonic() - t0)
            chunks.append(chunk)
    data = b"".join(chunks)
    assert data.count(b"data: ") == 5 and data.endswith(b"data: [DONE]\n\n")
    # incremental: the first chunk came long before the last one (backend spaces them 0.4 s)
    assert len(arrivals) >= 3
    assert arrivals[-1] - arrivals[0] >= 0.8


def test_client_disconnect_cancels_upstream(gw: Gw, token: Tokens, backend: str) -> None:
    before = backend_state(backend)["aborted_streams"]
    req = dict(CHAT, stream=True, x_chunks=100, x_delay=0.1)
    with (
        gw.client() as c,
        c.stream("POST", "/v1/chat/completions", json=req, headers=token.headers()) as r,
    ):
        it = r.iter_raw()
        next(it)
    # the client closed the connection: the upstream stream must be aborted well before 10 s
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if backend_state(backend)["aborted_streams"] > before:
            break
        time.sleep(0.1)
    assert backend_state(backend)["aborted_streams"] > before


def test_invalid_params(gw: Gw, token: Tokens) -> None:
    h = token.headers()
    with gw.client() as c:
        bad_json = c.post("/v1/chat/completions", content=b"{not json", headers=h)
        assert _err(bad_json, 400, "INVALID_PARAMS")["details"]["field"] == "body"
        for mt in (0, 4001, "10", 1.5, True):
            r = c.post("/v1/chat/completions", json=dict(CHAT, max_tokens=mt), headers=h)
            err = _err(r, 400, "INVALID_PARAMS")
            assert err["details"] == {"field": "max_tokens", "issue": "Must be between 1 and 4000"}
            assert err["type"] == "validation_error"
        ok = c.post("/v1/chat/completions", json=dict(CHAT, max_tokens=4000), headers=h)
        assert ok.status_code == 200
        r = c.post(
            "/v1/chat/completions", json={"model": "llama-3-chat", "messages": "x"}, headers=h
        )
        assert _err(r, 400, "INVALID_PARAMS")["details"]["field"] == "messages"
        r = c.post("/v1/chat/completions", json=[1, 2], headers=h)
        _err(r, 400, "INVALID_PARAMS")
        r = c.post("/v1/completions", json={"model": "llama-3-instruct", "prompt": 3}, headers=h)
        assert _err(r, 400, "INVALID_PARAMS")["details"]["field"] == "prompt"


def test_unknown_model_and_wrong_kind(gw: Gw, token: Tokens) -> None:
    h = token.headers()
    with gw.client() as c:
        r = c.post("/v1/chat/completions", json=dict(CHAT, model="gpt-9"), headers=h)
        _err(r, 503, "MODEL_UNAVAILABLE")
        r = c.post("/v1/chat/completions", json=dict(CHAT, model="llama-3-embeddings"), headers=h)
        _err(r, 503, "MODEL_UNAVAILABLE")


def test_not_found_and_method(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        _err(c.get("/nope"), 404, "NOT_FOUND")
        _err(c.get("/v1/chat/completions"), 405, "METHOD_NOT_ALLOWED")


def test_request_id_echo_and_generate(gw: Gw, token: Tokens) -> None:
    with gw.client() as c:
        r = c.get("/v1/models", headers={"X-Request-ID": "abc-123.x", **token.headers()})
        assert r.headers["x-request-id"] == "abc-123.x"
        r = c.get("/nope", headers={"X-Request-ID": "abc-123"})
        assert r.json()["error"]["request_id"] == "abc-123"
        r = c.get("/nope", headers={"X-Request-ID": "bad id with spaces\u00e9"[:16]})
        assert r.headers["x-request-id"].startswith("req_")
        r = c.get("/nope")
        assert r.headers["x-request-id"].startswith("req_")
    # the access log is written by a background thread (logs.QueueListener): allow it a moment
    wait_until(lambda: '"request_id":"abc-123"' in gw.log(), 5, "access log line")


def test_request_id_forwarded_upstream(gw: Gw, token: Tokens, backend: str) -> None:
    rid = "trace-" + uuid.uuid4().hex
    with gw.client() as c:
        c.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": rid, **token.headers()})
    st = backend_state(backend)
    # upstream X-Request-ID is a UUID derived from ours (llama.cpp's server accepts only UUIDs);
    # the original goes along as X-Citadel-Request-ID
    assert st["last_request_id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, rid))
    assert st["last_citadel_request_id"] == rid


def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    return 0.0


def test_cache_hit_and_miss(gw: Gw, token: Tokens, backend: str) -> None:
    sub = "cache_" + uuid.uuid4().hex[:8]
    req = dict(CHAT, temperature=0, messages=[{"role": "user", "content": uuid.uuid4().hex}])
    with gw.client() as c:
        m0 = c.get("/metrics").text
        calls0 = backend_state(backend)["chat_calls"]
        r1 = c.post("/v1/chat/completions", json=req, headers=token.headers(sub))
        r2 = c.post("/v1/chat/completions", json=req, headers=token.headers(sub))
        assert r1.status_code == r2.status_code == 200
        assert r1.headers["x-cache"] == "MISS" and r2.headers["x-cache"] == "HIT"
        assert r1.json()["choices"] == r2.json()["choices"]
        assert backend_state(backend)["chat_calls"] == calls0 + 1
        # another subject does not see this subject's cache
        r3 = c.post("/v1/chat/completions", json=req, headers=token.headers())
        assert r3.headers["x-cache"] == "MISS"
        # temperature > 0: not cached unless opted in
        hot = dict(req, temperature=0.7)
        r4 = c.post("/v1/chat/completions", json=hot, headers=token.headers(sub))
        assert "x-cache" not in r4.headers
        opt = {"X-Citadel-Cache": "use", **token.headers(sub)}
        assert c.post("/v1/chat/completions", json=hot, headers=opt).headers["x-cache"] == "MISS"
        assert c.post("/v1/chat/completions", json=hot, headers=opt).headers["x-cache"] == "HIT"
        m1 = c.get("/metrics").text
    hit = 'cache_requests_total{result="hit"}'
    miss = 'cache_requests_total{result="miss"}'
    assert _metric(m1, hit) - _metric(m0, hit) == 2
    assert _metric(m1, miss) - _metric(m0, miss) == 3
    assert 0 < _metric(m1, "cache_hit_ratio") < 1


def test_no_token_in_logs(gw: Gw, token: Tokens) -> None:
    tok = token("user_logcheck")
    bad = tok[:-4] + "AAAA"
    with gw.client() as c:
        c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {tok}"})
        r = c.get("/v1/models", headers={"Authorization": f"Bearer {bad}"})
        assert tok not in r.text and bad not in r.text
        c.get("/v1/models", headers={"Authorization": f"Basic {tok}"})
    time.sleep(0.2)
    log = gw.log()
    assert "user_logcheck" in log  # the subject is logged ...
    for secret in (tok, bad, tok.split(".")[1], tok.split(".")[2]):
        assert secret not in log  # ... never the token or any part of it
    assert "Bearer" not in log and "authorization" not in log.lower()
    for line in log.splitlines():
        json.loads(line)  # every log line is JSON


def test_upstream_uuid_matches_uuid5() -> None:
    import os

    from citadel_gateway.app import upstream_uuid

    for i in range(500):
        rid = "req_" + os.urandom(12).hex() if i % 2 else "abc-" + str(i) * (i % 7)
        assert upstream_uuid(rid) == str(uuid.uuid5(uuid.NAMESPACE_URL, rid))


def test_json_helpers_exact_big_ints() -> None:
    from citadel_gateway.app import _dumps, _loads

    assert _loads(b'{"b": 123456789012345678901234567890}')["b"] == 123456789012345678901234567890
    assert (
        _dumps({"x": 10**30, "y": "\u00e9"})
        == '{"x":1000000000000000000000000000000,"y":"\u00e9"}'.encode()
    )
