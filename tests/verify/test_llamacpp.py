"""llama.cpp model hosts (the lab's CPU engine): the production served names answer for real."""

from __future__ import annotations

import json
import shlex

from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "llamacpp"


def _url(target, path: str) -> str:
    return f"http://{target.host.address}:{target.host.model.port}{path}"


def _post(infra, url: str, body: dict) -> dict:
    out = infra.check_output(
        f"curl -sf --max-time 120 -H 'Content-Type: application/json' "
        f"-d {shlex.quote(json.dumps(body))} {url}"
    )
    return json.loads(out)


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("llama-cpp")
    assert service.is_running
    assert service.is_enabled


def test_service_is_sandboxed(target):
    assert_sandboxed(target.infra, "llama-cpp")


def test_listens_on_host_address(target):
    assert target.infra.socket(f"tcp://{target.host.address}:{target.host.model.port}").is_listening


def test_models_lists_served_name(target):
    out = target.infra.check_output(f"curl -sf --max-time 10 {_url(target, '/v1/models')}")
    assert target.host.model.served_name in [m["id"] for m in json.loads(out)["data"]]


def test_gateway_reaches_the_model_port(target):
    gateway = target.cluster.with_role("gateway")
    if not gateway:
        return
    out = target.on(gateway[0].name).check_output(
        f"curl -sf --max-time 10 {_url(target, '/v1/models')}"
    )
    assert target.host.model.served_name in out


def test_real_answer(target):
    model = target.host.model
    if model.api == "chat":
        rsp = _post(
            target.infra,
            _url(target, "/v1/chat/completions"),
            {
                "model": model.served_name,
                "messages": [{"role": "user", "content": "Hello, world!"}],
                "max_tokens": 16,
                "temperature": 0,
            },
        )
        assert rsp["model"] == model.served_name
        assert rsp["choices"][0]["message"]["role"] == "assistant"
        assert rsp["choices"][0]["message"]["content"].strip()
        assert rsp["usage"]["completion_tokens"] > 0
    elif model.api == "completions":
        rsp = _post(
            target.infra,
            _url(target, "/v1/completions"),
            {
                "model": model.served_name,
                # temperature 0: the lab's base model is deterministic (a sampled first token
                # can be the stop string itself, which leaves the text empty)
                "prompt": "Write a Python function to calculate fibonacci numbers:\n",
                "max_tokens": 16,
                "temperature": 0,
                "stop": ["\n\n"],
            },
        )
        assert rsp["object"] == "text_completion"
        assert rsp["model"] == model.served_name
        assert rsp["choices"][0]["text"].strip()
    else:
        inputs = [
            "The quick brown fox jumps over the lazy dog",
            "Machine learning is a subset of artificial intelligence",
        ]
        rsp = _post(
            target.infra,
            _url(target, "/v1/embeddings"),
            {"model": model.served_name, "input": inputs},
        )
        assert rsp["object"] == "list"
        assert [d["index"] for d in rsp["data"]] == [0, 1]
        for item in rsp["data"]:
            vector = item["embedding"]
            # one pooled vector per input, not one per token
            assert isinstance(vector[0], float)
            assert len(vector) == model.embedding_dimension
