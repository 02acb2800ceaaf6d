"""webui: OpenWebUI on loopback behind nginx on port 80 (the lab skips it by an override)."""

from __future__ import annotations

COMPONENT = "webui"


def test_service_runs_on_loopback_only(target):
    cfg = target.host.webui
    assert target.infra.service("open-webui").is_running
    assert target.infra.service("open-webui").is_enabled
    assert target.infra.socket(f"tcp://127.0.0.1:{cfg.internal_port}").is_listening
    assert not target.infra.socket(f"tcp://0.0.0.0:{cfg.internal_port}").is_listening


def test_settings_file_is_private(target):
    env = target.infra.file("/etc/open-webui/open-webui.env")
    assert env.mode == 0o640 and env.user == "root" and env.group == "open-webui"
    assert "ENABLE_PERSISTENT_CONFIG=False" in env.content_string


def test_port_80_answers_through_nginx_from_another_host(target):
    client = next(h.name for h in target.cluster.hosts if h.name != target.host.name)
    url = f"http://{target.host.address}:{target.host.webui.port}"
    code = target.on(client).check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {url}/health"
    )
    assert code == "200"
    page = target.on(client).check_output(f"curl -s --max-time 10 {url}/")
    assert "<html" in page.lower()
