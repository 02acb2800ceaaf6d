"""redis_exporter: answers on the host's address and reaches Redis as its info-only ACL user."""

from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "redis_exporter"
# prometheus-redis-exporter with its sandbox drop-in scores this or below
# (Debian's unit alone 9.2; docs/security.md).
SANDBOX_EXPOSURE = 1.5


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


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, "prometheus-redis-exporter", SANDBOX_EXPOSURE)
