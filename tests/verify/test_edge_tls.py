"""edge_tls: nginx answers HTTPS on the gateway host and proxies to the gateway's HTTP port."""

from __future__ import annotations

import json

from tests.verify.declared import wait_for

COMPONENT = "edge_tls"
GATEWAY_SETTLE_S = 30  # the gateway (re)started by the converge just before


def test_nginx_runs_and_config_is_valid(target):
    assert target.infra.service("nginx").is_running
    assert target.infra.service("nginx").is_enabled
    assert target.infra.run("nginx -t -q").rc == 0
    assert target.infra.socket(f"tcp://0.0.0.0:{target.host.edge_tls.port}").is_listening


def test_certificate_is_the_configured_one(target):
    cfg = target.host.edge_tls
    served = target.infra.check_output(
        f"openssl s_client -connect {target.host.address}:{cfg.port} </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256"
    )
    on_disk = target.infra.check_output(
        f"openssl x509 -noout -fingerprint -sha256 -in {cfg.cert_path()}"
    )
    assert served == on_disk
    assert target.infra.file(cfg.key_path()).mode == 0o600


def test_health_through_tls_from_another_host(target):
    gw = target.host
    client = next(h.name for h in target.cluster.hosts if h.name != gw.name)
    http = wait_for(
        lambda: target.on(client).run(
            f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 "
            f"http://{gw.address}:{gw.gateway.port}/health"
        ),
        lambda got: got.stdout.strip() == "200",
        timeout_s=GATEWAY_SETTLE_S,
    )
    assert http.stdout.strip() == "200", (
        f"the gateway does not answer on :{gw.gateway.port}/health ({http.stdout}{http.stderr})"
    )
    out = target.on(client).check_output(
        f"curl -sk -i --max-time 10 https://{gw.address}:{gw.edge_tls.port}/health"
    )
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    status_line, *headers = head.splitlines()
    assert " 200" in status_line
    names = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip() for h in headers if ":" in h}
    assert names.get("server", "").startswith("nginx")  # answered via nginx
    assert ("strict-transport-security" in names) == gw.edge_tls.hsts
    assert "status" in json.loads(body)
