"""node_exporter: running on every host, answering on its address, scraped from monitoring."""

COMPONENT = "node_exporter"


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
