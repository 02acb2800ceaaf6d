"""TLS at the edge: the nginx site in front of the gateway, checked with `nginx -t`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from citadel.components import edge_tls
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import HostView, component_files
from citadel.secrets import MaskedSecrets


def files(cluster: Cluster, cfg: edge_tls.Config | None = None) -> dict[str, str]:
    host = cluster.host("gateway")
    config = cfg or host.edge_tls
    assert config is not None
    view = HostView(cluster, host, MaskedSecrets())
    return {f.spec.dest: f.content for f in component_files("edge_tls", view, config)}


@pytest.fixture(scope="module")
def production() -> Cluster:
    return load_cluster("inventory/production.yml").cluster


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_cluster("inventory/lab.yml").cluster


def test_production_uses_the_model_certificate(production: Cluster) -> None:
    site = files(production)[edge_tls.SITE]
    assert "listen 443 ssl backlog=4096;" in site
    assert "ssl_certificate /etc/ssl/citadel/gateway.crt;" in site
    assert "ssl_certificate_key /etc/ssl/private/citadel-gateway.key;" in site
    assert f"server unix:{edge_tls.GATEWAY_SOCKET};" in site
    assert site.count("proxy_pass http://citadel_gateway;") == 2  # HTTP :8000 and HTTPS
    assert "Strict-Transport-Security" not in site  # HSTS off by default
    assert "proxy_buffering off;" in site  # streamed completions


def test_nginx_fronts_the_documents_http_port_with_the_limits(production: Cluster) -> None:
    """Slow and oversized clients meet nginx's limits, never the gateway (hardening, finding 2)."""
    site = files(production)[edge_tls.SITE]
    assert "listen 8000 backlog=4096;" in site
    for directive in (
        "client_header_timeout 5s;",
        "client_body_timeout 10s;",
        "keepalive_timeout 5s;",
        "large_client_header_buffers 4 16k;",
        "client_max_body_size 1m;",
        "limit_conn citadel_gateway_conn 200;",
        "proxy_request_buffering off;",
    ):
        assert site.count(directive) == 2, directive  # both servers
    # nginx's own refusals speak the document's error format
    assert '"code":"INVALID_PARAMS"' in site and '"code":"RATE_LIMITED"' in site


def test_the_limits_are_inventory_settings(production: Cluster) -> None:
    cfg = edge_tls.Config(
        certificate_file="/c.pem",
        key_file="/k.pem",
        front=edge_tls.Front(header_timeout_s=3, connections_per_client=50),
    )
    site = files(production, cfg)[edge_tls.SITE]
    assert "client_header_timeout 3s;" in site
    assert "limit_conn citadel_gateway_conn 50;" in site


def test_the_gateway_serves_the_front_on_its_socket(production: Cluster) -> None:
    from citadel.render import render_host

    host = production.host("gateway")
    config = next(
        f.content
        for f in render_host(production, host)
        if f.spec.dest == "/etc/citadel-gateway/config.yml"
    )
    assert f"unix_socket: {edge_tls.GATEWAY_SOCKET}" in config


def test_lab_uses_a_self_signed_pair(lab: Cluster) -> None:
    cfg = lab.host("gateway").edge_tls
    assert cfg is not None and cfg.self_signed
    site = files(lab)[edge_tls.SITE]
    assert f"ssl_certificate {edge_tls.SELF_SIGNED_CERT};" in site
    assert "proxy_pass http://citadel_gateway;" in site


def test_hsts_when_asked(production: Cluster) -> None:
    cfg = edge_tls.Config(hsts=True, certificate_file="/c.pem", key_file="/k.pem")
    assert (
        'Strict-Transport-Security "max-age=63072000" always;'
        in files(production, cfg)[edge_tls.SITE]
    )


@pytest.mark.parametrize(
    "values",
    [
        {"certificate_file": "/c.pem"},
        {"key_file": "/k.pem"},
        {"certificate_file": "c.pem", "key_file": "/k.pem"},
        {"certificate_file": "/c.pem; x", "key_file": "/k.pem"},
    ],
)
def test_bad_certificate_settings_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        edge_tls.Config(**values)


def test_gateway_http_port_stays_open(production: Cluster) -> None:
    ports = {p.number for _, p in production.host("gateway").ports()}
    assert {8000, 443} <= ports


NGINX_SKIP = (
    None if shutil.which("nginx") else "nginx is not installed (apt-get install nginx-light)"
)
OPENSSL_SKIP = None if shutil.which("openssl") else "openssl is not installed"


@pytest.mark.skipif(NGINX_SKIP is not None or OPENSSL_SKIP is not None, reason=str(NGINX_SKIP))
def test_site_passes_nginx_t_and_a_broken_one_fails(production: Cluster, tmp_path: Path) -> None:
    cert, key = tmp_path / "edge.crt", tmp_path / "edge.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=test", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=True,
    )  # fmt: skip
    cfg = edge_tls.Config(certificate_file=str(cert), key_file=str(key))
    rendered = files(production, cfg)
    check = tmp_path / "check-nginx"
    check.write_text(rendered[edge_tls.NGINX_CHECK])
    check.chmod(0o755)
    site = tmp_path / "edge.conf"
    site.write_text(rendered[edge_tls.SITE])
    proc = subprocess.run([str(check), str(site)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    # a missing key file is caught before reload, like a syntax error
    site.write_text(rendered[edge_tls.SITE].replace(str(key), str(tmp_path / "missing.key")))
    assert subprocess.run([str(check), str(site)], capture_output=True).returncode != 0
    site.write_text(rendered[edge_tls.SITE].replace("listen 443 ssl backlog=4096;", "listen 443"))
    assert subprocess.run([str(check), str(site)], capture_output=True).returncode != 0
