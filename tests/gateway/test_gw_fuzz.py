"""Fuzz the served OpenAPI schema with schemathesis (bounded): no 500, always our error body."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from .conftest import GatewayFactory, Gw, Tokens

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")


@pytest.fixture(scope="module")
def fuzz_gw(gateways: GatewayFactory, cfg: dict[str, Any]) -> Gw:
    c = copy.deepcopy(cfg)
    c["models"] = {k: v for k, v in c["models"].items() if k.startswith("llama-3-")}
    big = {"per_minute": 100000, "burst": 100000}
    c["rate_limits"] = {
        k: big
        for k in ("chat_completions", "completions", "embeddings", "collection_search", "health")
    }
    c["auth"] = dict(c["auth"], route_permissions={})
    return gateways(c, "fuzz")


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_openapi(fuzz_gw: Gw, token: Tokens, mode: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    headers = token.headers(ttl=3600)
    doc = httpx.get(fuzz_gw.url + "/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(doc)
    gen = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    seen: dict[int, int] = {}
    problems: list[str] = []

    for result in schema.get_all_operations():
        op = result.ok()

        @settings(
            max_examples=12,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy(generation_mode=gen))
        def run(case: Any) -> None:
            resp = case.call(base_url=fuzz_gw.url, headers=headers, timeout=10)
            seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
            if resp.status_code == 500 or "Traceback" in resp.text:
                problems.append(
                    f"{case.method} {case.formatted_path}: {resp.status_code} {resp.text[:200]}"
                )
            if resp.status_code >= 400 and case.path != "/metrics":
                err = resp.json()["error"]
                assert set(err) == {"type", "message", "code", "details", "request_id"}

        try:
            run()
        except Exception as exc:  # schema/strategy limitations are not gateway bugs
            if isinstance(exc, AssertionError):
                raise
            if type(exc).__module__.startswith(("schemathesis", "hypothesis")):
                continue
            raise
    assert not problems, problems
    assert sum(seen.values()) > 20, seen
