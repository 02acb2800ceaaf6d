"""edge_tls: nginx answers HTTPS on the gateway host and proxies to the gateway's HTTP port."""

from __future__ import annotations

import json
import shlex

from tests.verify.declared import wait_for
from tests.verify.test_gateway import assert_sandboxed

COMPONENT = "edge_tls"
# nginx with its sandbox drop-in scores this or below
# (Debian's unit alone 9.6; nginx starts as root and keeps 5 capabilities; docs/security.md).
SANDBOX_EXPOSURE = 2.5
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


# -- the front: slow and oversized clients meet nginx's limits (hardening, finding 2) ----------
# Bounded probes (a handful of connections) from another host of the inventory.
FRONT_PROBE = r"""
import json, socket, sys, time
addr, port, timeout_s, idle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
out = {}
# 1. slowloris: a head that never ends is closed by the front within its header timeout
s = socket.create_connection((addr, port), timeout=timeout_s + 10)
s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: 1")
t0 = time.monotonic()
try:
    while s.recv(65536):
        pass
except OSError:
    pass
out["slow_closed_after_s"] = round(time.monotonic() - t0, 1)
s.close()
# 2. an oversized header line is refused in the document's error format
s = socket.create_connection((addr, port), timeout=10)
s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
reply = b""
try:
    while chunk := s.recv(65536):
        reply += chunk
except OSError:
    pass
s.close()
head, _, body = reply.partition(b"\r\n\r\n")
out["big_status"] = int(head.split()[1]) if head else None
out["big_code"] = json.loads(body)["error"]["code"] if body.startswith(b"{") else None
# 3. idle connections do not keep a legitimate client out, and are closed in time
idlers = [socket.create_connection((addr, port), timeout=30) for _ in range(idle)]
t0 = time.monotonic()
s = socket.create_connection((addr, port), timeout=10)
s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
reply = b""
while chunk := s.recv(65536):
    reply += chunk
out["legit_status"] = int(reply.split()[1])
out["legit_s"] = round(time.monotonic() - t0, 2)
time.sleep(timeout_s + 3)
closed = 0
for c in idlers:
    c.settimeout(1)
    try:
        closed += c.recv(1) == b""
    except OSError:
        closed += 1
out["idle_closed"] = closed
print(json.dumps(out))
"""


def test_the_front_closes_slow_and_idle_clients_and_refuses_oversized_heads(target):
    gw, front = target.host, target.host.edge_tls.front
    client = next(h.name for h in target.cluster.hosts if h.name != gw.name)
    idle = 50
    out = target.on(client).check_output(
        f"python3 -c {shlex.quote(FRONT_PROBE)} {gw.address} {gw.gateway.port} "
        f"{max(front.header_timeout_s, front.keepalive_timeout_s)} {idle}"
    )
    got = json.loads(out)
    assert got["slow_closed_after_s"] <= front.header_timeout_s + 2, got
    assert got["big_status"] in (400, 431) and got["big_code"] == "INVALID_PARAMS", got
    assert got["legit_status"] == 200 and got["legit_s"] < 1.0, got
    assert got["idle_closed"] == idle, got


def test_service_is_sandboxed(target):
    """Debian's unit with citadel's drop-in (templates/_shared/sandbox.j2), as systemd loaded it."""
    assert_sandboxed(target.infra, "nginx", SANDBOX_EXPOSURE)
