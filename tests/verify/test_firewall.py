"""firewall: the nftables matrix, probed from the other hosts of the inventory.

Pairs come from the model (Cluster.port_clients): for each port of the host under test one
allowed client must get through (connection open, or refused when no service listens yet: the
packet passed the firewall) and forbidden hosts must time out (policy drop). Probes are bounded
(2 s) and run concurrently per source host.
"""

from __future__ import annotations

import json
import shlex
from ipaddress import IPv4Network

from citadel.components.firewall import TABLE, rules

COMPONENT = "firewall"
TIMEOUT_S = 2
SAMPLE = 2  # allowed / forbidden clients probed per port

PROBE = f"""
import json, socket, sys, concurrent.futures as cf
def probe(t):
    s = socket.socket(); s.settimeout({TIMEOUT_S})
    try:
        s.connect((t[0], t[1])); return "open"
    except socket.timeout: return "timeout"
    except ConnectionRefusedError: return "refused"
    except OSError as e: return "error " + str(e)
    finally: s.close()
targets = json.loads(sys.argv[1])
with cf.ThreadPoolExecutor(32) as ex: print(json.dumps(list(ex.map(probe, targets))))
"""


def probe_from(target, source: str, pairs: list[tuple[str, int]]) -> list[str]:
    conn = target.on(source)
    arg = json.dumps([[a, p] for a, p in pairs])
    out = conn.check_output(f"python3 -c {shlex.quote(PROBE)} {shlex.quote(arg)}")
    return json.loads(out)


def _covers(source, address) -> bool:
    """A rule source (an address or a CIDR block) lets `address` in."""
    return address in source if isinstance(source, IPv4Network) else address == source


def matrix(target):
    """(source host, port, expect) triples: expect 'pass' or 'drop'."""
    cluster, host = target.cluster, target.host
    others = [h for h in cluster.hosts if h.name != host.name]
    out = []
    for rule in rules(cluster, host):
        if rule.sources == "any" or rule.sources == "admins":
            nets = host.firewall.admin_networks
            allowed = [
                h for h in others if rule.sources == "any" or any(h.address in n for n in nets)
            ]
        else:
            allowed = [h for h in others if any(_covers(s, h.address) for s in rule.sources)]
        forbidden = [h for h in others if h not in allowed]
        out += [(h.name, rule.port, "pass") for h in allowed[:SAMPLE]]
        out += [(h.name, rule.port, "drop") for h in forbidden[:SAMPLE]]
    return out


def test_table_is_loaded_and_default_deny(target):
    listing = target.infra.check_output(f"nft list table inet {TABLE}")
    assert "policy drop;" in listing
    assert "ct state established,related accept" in listing
    assert target.infra.service("nftables").is_enabled


def test_matrix_from_other_hosts(target):
    by_source: dict[str, list[tuple[int, str]]] = {}
    for source, port, expect in matrix(target):
        by_source.setdefault(source, []).append((port, expect))
    failures = []
    for source, items in sorted(by_source.items()):
        results = probe_from(target, source, [(str(target.host.address), p) for p, _ in items])
        for (port, expect), got in zip(items, results, strict=True):
            ok = got in ("open", "refused") if expect == "pass" else got == "timeout"
            if not ok:
                failures.append(f"{source} -> {target.host.name}:{port}: {got}, want {expect}")
    assert not failures, "\n".join(failures)


def test_the_documented_examples_of_the_matrix(target):
    """webui cannot reach Redis on the data host; the gateway can (both directions checked)."""
    if target.host.redis is None or target.host.redis.skip:
        return
    port = target.host.redis.port
    addr = str(target.host.address)
    assert probe_from(target, "webui", [(addr, port)]) == ["timeout"]
    assert probe_from(target, "gateway", [(addr, port)])[0] in ("open", "refused")
    # and the data host cannot reach the webui host's node exporter (only monitoring can)
    webui = target.cluster.host("webui")
    assert probe_from(target, target.host.name, [(str(webui.address), 9100)]) == ["timeout"]


def test_controller_reaches_ssh_but_not_restricted_ports(target):
    """From this machine (the controller, in the admin networks): SSH yes, restricted ports no."""
    import socket

    if target.cluster.cluster.environment != "lab":
        return  # only ever probe the lab from here
    addr = str(target.host.address)

    def probe(port: int) -> str:
        with socket.socket() as s:
            s.settimeout(TIMEOUT_S)
            try:
                s.connect((addr, port))
                return "open"
            except TimeoutError:
                return "timeout"
            except ConnectionRefusedError:
                return "refused"

    assert probe(target.host.base.sshd.port) == "open"
    for rule in rules(target.cluster, target.host):
        if not isinstance(rule.sources, str):
            assert probe(rule.port) == "timeout", f"{rule.service} {rule.port}"
