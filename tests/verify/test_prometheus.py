"""Prometheus: ready, scraping every converged target of the inventory, the document's queries.

Targets of skipped components (or whose artifact cannot be had) must be absent, not down. A
target whose component has no deploy module yet is reported, not failed: it cannot be up.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from citadel.components import deploy_name
from citadel.components import prometheus as prom
from citadel.metrics import DOCUMENT_QUERIES

COMPONENT = "prometheus"
DEPLOYS = Path(__file__).resolve().parents[2] / "deploys"


def _base(target: Any) -> str:
    cfg = target.host.prometheus
    return f"http://{cfg.listen_address or target.host.address}:{cfg.port}"


def _api(target: Any, path: str, **params: str) -> Any:
    args = " ".join(f"--data-urlencode {shlex.quote(f'{k}={v}')}" for k, v in params.items())
    out = target.infra.check_output(f"curl -sfG --max-time 10 {args} {_base(target)}{path}")
    return json.loads(out)


def _expected(target: Any) -> list[prom.ScrapeTarget]:
    return prom.scrape_targets(target.cluster, prom.static_absent(target.cluster))


def _deployable(job: str, host_name: str, target: Any) -> bool:
    host = target.cluster.host(host_name)
    cfg = getattr(host, job)
    return (DEPLOYS / f"{deploy_name(job, cfg)}.py").exists()


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
    active = _api(target, "/api/v1/targets", state="active")["data"]["activeTargets"]
    down = [t for t in active if t["health"] != "up"]
    not_yet = [
        t for t in down if not _deployable(t["labels"]["service"], t["labels"]["host"], target)
    ]
    failing = [t for t in down if t not in not_yet]
    assert not failing, "down: " + "; ".join(
        f"{t['labels']['service']}@{t['labels']['host']}: {t['lastError']}" for t in failing
    )
    if not_yet:
        pytest.skip(
            "down because their component has no deploy module yet: "
            + ", ".join(f"{t['labels']['service']}@{t['labels']['host']}" for t in not_yet)
        )


@pytest.mark.parametrize("query", DOCUMENT_QUERIES)
def test_document_query(target, query):
    got = _api(target, "/api/v1/query", query=query)
    assert got["status"] == "success"
    if got["data"]["result"]:
        return
    if query.startswith("nvidia_gpu"):
        readable = _api(target, "/api/v1/query", query="nvidia_gpu_up == 1")["data"]["result"]
        assert not readable, "a GPU is readable but no utilization is exported"
        pytest.skip(
            "success, no data: no GPU exporter reads a GPU here (nvidia_gpu_up 0 or absent)"
        )
    gateway_up = _api(target, "/api/v1/query", query='up{service="gateway"} == 1')["data"]
    if not gateway_up["result"]:
        pytest.skip("success, no data: no gateway target is up yet (the gateway emits this)")
    served = _api(target, "/api/v1/query", query="sum(http_requests_total)")["data"]["result"]
    if not served:
        pytest.skip("success, no data: the gateway has not served a request yet")
    # A series born from the gateway's first requests needs two scrapes and a rule evaluation
    # before a rate (and so a recorded quantile) exists: wait for that, bounded.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(5)
        if _api(target, "/api/v1/query", query=query)["data"]["result"]:
            return
    pytest.fail(f"{query}: no data 120 s after the gateway served requests")
