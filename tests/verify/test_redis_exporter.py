"""redis_exporter: answers on the host's address and reaches Redis as its info-only ACL user."""

COMPONENT = "redis_exporter"


def test_service_runs_and_is_enabled(target):
    service = target.infra.service("prometheus-redis-exporter")
    assert service.is_running
    assert service.is_enabled


def test_listens_on_host_address(target):
    port = target.host.redis_exporter.port
    assert target.infra.socket(f"tcp://{target.host.address}:{port}").is_listening


def test_metrics_say_redis_up(target):
    url = f"http://{target.host.address}:{target.host.redis_exporter.port}/metrics"
    out = target.infra.check_output(f"curl -sf --max-time 10 {url}")
    assert "redis_up 1" in out
    assert "redis_memory_max_bytes" in out
