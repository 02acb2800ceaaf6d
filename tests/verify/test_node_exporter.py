"""node_exporter: running on every host, answering on its address, scraped from monitoring."""

from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "node_exporter"
# prometheus-node-exporter with its sandbox drop-in scores this or below
# (Debian's unit alone 9.2; the drop-in: /proc and /sys host-wide, netlink; docs/security.md).
SANDBOX_EXPOSURE = 2.0


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("prometheus-node-exporter")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_host_address(target):
    port = target.host.node_exporter.port
    assert target.infra.socket(f"tcp://{target.host.address}:{port}").is_listening


def test_metrics_answer(target):
    url = f"http://{target.host.address}:{target.host.node_exporter.port}/metrics"
    out = target.infra.check_output(f"curl -sf --max-time 5 {url}")
    assert "node_cpu_seconds_total" in out


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, "prometheus-node-exporter", SANDBOX_EXPOSURE)
