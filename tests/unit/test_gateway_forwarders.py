"""Issue 15, point 3, citadel's part: the gateway trusts OpenWebUI's forwarded user only with
the webui's service token (secret `webui_gateway_token`) from the webui hosts' addresses."""

from __future__ import annotations

from typing import Any

import yaml

from citadel.loader import load_cluster
from citadel.render import render_host

CONFIG = "/etc/citadel-gateway/config.yml"
TOKEN = "/etc/citadel-gateway/secrets/webui.token"


def _rendered(inventory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cluster = load_cluster(inventory).cluster
    files = {f.spec.dest: f for f in render_host(cluster, cluster.host("gateway"))}
    return yaml.safe_load(files[CONFIG].content), files


def test_production_trusts_the_webui_host_with_its_service_token() -> None:
    cfg, files = _rendered("inventory/production.yml")
    assert cfg["auth"]["forwarders"] == {
        "webui": {"token_file": TOKEN, "addresses": ["192.168.10.38/32"]}
    }
    token = files[TOKEN]
    assert token.spec.secret and token.spec.mode == "0640"
    assert token.spec.group == "citadel-gateway"
    cluster = load_cluster("inventory/production.yml").cluster
    assert cluster.required_secrets(cluster.host("gateway"))["webui_gateway_token"] == "gateway"


def test_a_skipped_webui_is_no_forwarder_and_needs_no_token_on_the_gateway() -> None:
    cluster = load_cluster("inventory/lab.yml").cluster
    webui = cluster.host("webui")
    cfg, files = _rendered("inventory/lab.yml")
    needed = cluster.required_secrets(cluster.host("gateway"))
    if webui.webui is not None and webui.webui.skip is None:  # the lab runs OpenWebUI
        assert cfg["auth"]["forwarders"]["webui"]["addresses"] == [f"{webui.address}/32"]
        assert TOKEN in files and "webui_gateway_token" in needed
    else:
        assert "forwarders" not in cfg["auth"]
        assert TOKEN not in files and "webui_gateway_token" not in needed


def test_the_rendered_forwarder_is_what_the_gateway_reads() -> None:
    from citadel_gateway.config import GatewayConfig

    cfg, _ = _rendered("inventory/production.yml")
    fwd = GatewayConfig.model_validate(cfg).auth.forwarders["webui"]
    assert fwd.user_header == "x-openwebui-user-id" and fwd.permissions == []
    assert fwd.allows("192.168.10.38") and not fwd.allows("192.168.10.39")
