"""Prometheus: ready, scraping every converged target of the inventory, the document's queries.

Targets of components the inventory skips must be absent, not down; every other target must be
up (a component with no deploy module fails the converge's preflight, so it cannot be here).
Skips: only what the inventory declares (no GPU driver deployed); anything else fails after a
bounded wait for what needs time to settle (scrapes, the gateway's first requests).
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

import pytest

from citadel.components import prometheus as prom
from citadel.metrics import DOCUMENT_QUERIES
from tests.verify.declared import declared_skip, deployed_host, wait_for
from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "prometheus"
# prometheus with its sandbox drop-in scores this or below
# (Debian's unit alone 3.9; docs/security.md).
SANDBOX_EXPOSURE = 1.5
SCRAPE_SETTLE_S = 60  # targets (re)started by the converge are up after a scrape or two


def _base(target: Any) -> str:
    cfg = target.host.prometheus
    return f"http://{cfg.listen_address or target.host.address}:{cfg.port}"


def _api(target: Any, path: str, **params: str) -> Any:
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    out = target.infra.check_output(f"curl -sfG --max-time 10 {args} {_base(target)}{path}")
    return json.loads(out)


def _expected(target: Any) -> list[prom.ScrapeTarget]:
    return prom.scrape_targets(target.cluster, prom.static_absent(target.cluster))


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("prometheus")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_the_configured_address_only(target):
    cfg = target.host.prometheus
    address = cfg.listen_address or target.host.address
    assert target.infra.socket(f"tcp://{address}:{cfg.port}").is_listening
    assert not target.infra.socket(f"tcp://0.0.0.0:{cfg.port}").is_listening


def test_ready(target):
    out = target.infra.check_output(f"curl -sf --max-time 5 {_base(target)}/-/ready")
    assert "Ready" in out


def test_live_config_and_rules_pass_promtool(target):
    for path in (prom.CONFIG_FILE,):
        assert target.infra.run(f"promtool check config {path}").rc == 0
    for path in (prom.RECORDING_FILE, prom.ALERTS_FILE):
        assert target.infra.run(f"promtool check rules {path}").rc == 0


def test_last_reload_succeeded_and_rules_are_healthy(target):
    got = _api(target, "/api/v1/query", query="prometheus_config_last_reload_successful")
    values = [float(r["value"][1]) for r in got["data"]["result"]]
    assert values and all(v == 1.0 for v in values), got["data"]["result"]
    groups = _api(target, "/api/v1/rules")["data"]["groups"]
    assert {g["file"] for g in groups} == {prom.RECORDING_FILE, prom.ALERTS_FILE}
    broken = [r["name"] for g in groups for r in g["rules"] if r.get("health") == "err"]
    assert not broken


def test_targets_are_exactly_the_converged_components(target):
    active = _api(target, "/api/v1/targets", state="active")["data"]["activeTargets"]
    got = {(t["labels"]["service"], t["labels"]["host"]) for t in active}
    want = {(t.job, t.host) for t in _expected(target)}
    assert got == want, f"missing: {sorted(want - got)}, unexpected: {sorted(got - want)}"
    for t in active:
        assert {"host", "role", "service"} <= set(t["labels"])
    for (h, section), _why in prom.static_absent(target.cluster).items():
        assert (section, h) not in got  # absent, not down


def test_every_target_is_up(target):
    active = wait_for(
        lambda: _api(target, "/api/v1/targets", state="active")["data"]["activeTargets"],
        lambda got: all(t["health"] == "up" for t in got),
        timeout_s=SCRAPE_SETTLE_S,
        interval_s=5,
    )
    down = [t for t in active if t["health"] != "up"]
    assert not down, "down: " + "; ".join(
        f"{t['labels']['service']}@{t['labels']['host']}: {t['lastError']}" for t in down
    )


def _gpu_expected(target: Any) -> bool:
    """The inventory deploys the NVIDIA driver on a host that should have GPUs."""
    return any(
        h.nvidia is not None and h.nvidia.skip is None and h.nvidia.expected_gpus > 0
        for h in target.cluster.hosts
    )


def _serve_one_chat(target: Any) -> None:
    """The gateway's first requests, when nothing (e.g. `-k prometheus`) sent any yet."""
    from tests.verify.conftest import Target
    from tests.verify.test_gateway import CHAT, _client, _curl, _token, _url

    gateway = Target(target.loaded, deployed_host(target.cluster, "gateway"))
    status, _, body = _curl(
        _client(gateway),
        _url(gateway, "/v1/chat/completions"),
        token=_token(gateway),
        body=CHAT,
        method="POST",
    )
    assert status == 200, f"a chat through the gateway answered {status}: {body}"


@pytest.mark.parametrize("query", DOCUMENT_QUERIES)
def test_document_query(target, query):
    got = _api(target, "/api/v1/query", query=query)
    assert got["status"] == "success"
    if got["data"]["result"]:
        return
    if query.startswith("nvidia_gpu"):
        readable = _api(target, "/api/v1/query", query="nvidia_gpu_up == 1")["data"]["result"]
        assert not readable, "a GPU is readable but no utilization is exported"
        if _gpu_expected(target):
            pytest.fail(f"{query}: no data, though the inventory deploys GPU hosts' driver")
        declared_skip("the inventory deploys no GPU driver (nvidia skipped on every GPU host)")
    deployed_host(target.cluster, "gateway")  # the gateway emits the rest
    gateway_up = wait_for(
        lambda: _api(target, "/api/v1/query", query='up{service="gateway"} == 1')["data"],
        lambda got: bool(got["result"]),
        timeout_s=SCRAPE_SETTLE_S,
        interval_s=5,
    )
    assert gateway_up["result"], f"{query}: no data and no gateway target is up"
    served = _api(target, "/api/v1/query", query="sum(http_requests_total)")["data"]["result"]
    if not served:
        _serve_one_chat(target)
    # A series born from the gateway's first requests needs two scrapes and a rule evaluation
    # before a rate (and so a recorded quantile) exists: wait for that, bounded.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(5)
        if _api(target, "/api/v1/query", query=query)["data"]["result"]:
            return
    pytest.fail(f"{query}: no data 120 s after the gateway served requests")


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, "prometheus", SANDBOX_EXPOSURE)
