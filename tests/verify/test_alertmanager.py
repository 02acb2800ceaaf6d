"""Alertmanager: runs, listens on the monitoring host's address only, its live config passes
amtool, and Prometheus sends to it (listed active under /api/v1/alertmanagers)."""

from __future__ import annotations

import json
from typing import Any

from citadel.components import alertmanager as am
from tests.verify.declared import wait_for
from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "alertmanager"
# prometheus-alertmanager with its sandbox drop-in scores this or below
# (Debian's unit alone 9.2; docs/security.md).
SANDBOX_EXPOSURE = 1.5
DISCOVERY_SETTLE_S = 60  # Prometheus (re)loaded by the same converge finds it within seconds


def _listen(target: Any) -> str:
    return am.listen(target.host.address, target.host.alertmanager)


def test_service_runs_and_is_enabled(target):
    service = target.infra.service(am.SERVICE)
    assert service.is_running
    assert service.is_enabled


def test_listens_on_the_host_address_only(target):
    cfg = target.host.alertmanager
    assert target.infra.socket(f"tcp://{_listen(target)}").is_listening
    assert not target.infra.socket(f"tcp://0.0.0.0:{cfg.port}").is_listening
    assert not target.infra.socket("tcp://0.0.0.0:9094").is_listening  # no gossip cluster


def test_ready(target):
    out = target.infra.run(f"curl -sf --max-time 5 http://{_listen(target)}/-/ready")
    assert out.rc == 0, out.stderr


def test_live_config_passes_amtool(target):
    out = target.infra.run(f"amtool check-config {am.CONFIG_FILE}")
    assert out.rc == 0, out.stdout + out.stderr


def test_receivers_are_the_inventory_s(target):
    out = target.infra.check_output(
        f"amtool config routes --alertmanager.url=http://{_listen(target)}"
    )
    for r in target.host.alertmanager.receivers:
        assert r.name in out, out


def test_prometheus_sends_to_it(target):
    prom = target.host.prometheus  # the monitoring role brings both
    base = f"http://{prom.listen_address or target.host.address}:{prom.port}"

    def active() -> list[str]:
        raw = target.infra.check_output(f"curl -sf --max-time 10 {base}/api/v1/alertmanagers")
        return [a["url"] for a in json.loads(raw)["data"]["activeAlertmanagers"]]

    got = wait_for(active, lambda urls: bool(urls), timeout_s=DISCOVERY_SETTLE_S, interval_s=5)
    assert f"http://{_listen(target)}/api/v2/alerts" in got, got


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, "prometheus-alertmanager", SANDBOX_EXPOSURE)
