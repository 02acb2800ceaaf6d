"""GPU exporter: runs on every GPU-role host (without a GPU it exports nvidia_gpu_up 0)."""

from __future__ import annotations

import json
import re

from tests.verify.declared import deployed_host, wait_for
from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "gpu_exporter"
SCRAPE_SETTLE_S = 60  # a (re)started exporter is up at Prometheus' next scrapes


def _metrics(target) -> str:
    url = f"http://{target.host.address}:{target.host.gpu_exporter.port}/metrics"
    return target.infra.check_output(f"curl -sf --max-time 10 {url}")


def _gpu_expected(target) -> bool:
    nvidia = target.host.nvidia
    return nvidia is not None and nvidia.skip is None and nvidia.expected_gpus > 0


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("citadel-gpu-exporter")
    assert service.is_running
    assert service.is_enabled


def test_service_is_sandboxed(target):
    assert_sandboxed(target.infra, "citadel-gpu-exporter")


def test_listens_on_host_address(target):
    port = target.host.gpu_exporter.port
    assert target.infra.socket(f"tcp://{target.host.address}:{port}").is_listening


def test_serves_nvidia_gpu_up(target):
    text = _metrics(target)
    match = re.search(r"^nvidia_gpu_up (\S+)$", text, re.M)
    assert match, "nvidia_gpu_up missing"
    if _gpu_expected(target):
        assert float(match.group(1)) == 1.0
        count = re.search(r"^nvidia_gpu_count (\S+)$", text, re.M)
        assert count and float(count.group(1)) == target.host.nvidia.expected_gpus
        assert "nvidia_gpu_utilization_percentage{" in text
    else:
        assert float(match.group(1)) == 0.0


def test_prometheus_scrapes_it(target):
    prom = deployed_host(target.cluster, "prometheus")
    url = f"http://{prom.address}:{prom.prometheus.port}/api/v1/query"
    query = (
        f'up{{job="gpu_exporter",instance="{target.host.address}:{target.host.gpu_exporter.port}"}}'
    )

    def scraped() -> tuple[int, list]:
        out = target.on(prom.name).run(
            f"curl -sf --max-time 10 -G {url} --data-urlencode 'query={query}'"
        )
        return out.rc, (json.loads(out.stdout)["data"]["result"] if out.rc == 0 else [])

    rc, result = wait_for(
        scraped,
        lambda got: got[0] == 0 and got[1][:1] != [] and got[1][0]["value"][1] == "1",
        timeout_s=SCRAPE_SETTLE_S,
    )
    assert rc == 0, f"Prometheus on {prom.name} does not answer (curl exit {rc})"
    assert result, f"Prometheus has no gpu_exporter target for {target.host.name}"
    assert result[0]["value"][1] == "1"
