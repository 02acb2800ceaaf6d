"""Firewall rules come from the inventory: exactly the derived client pairs, nothing wider.

The rendered ruleset is checked by nft itself (`nft -c -f`), then loaded into a throwaway network
namespace (`unshare -n`) and read back as JSON, so the assertion is on what the kernel would run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from citadel.components import firewall, postgres
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster, Host
from citadel.model.files import FileSpec
from citadel.render import HostView, RenderedFile, component_files
from citadel.secrets import MaskedSecrets

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ["inventory/production.yml", "inventory/lab.yml"]
HOSTS = [
    "llm-chat",
    "llm-instruct",
    "vector-db",
    "llm-embed",
    "data",
    "monitoring",
    "webui",
    "gateway",
]


@pytest.fixture(scope="module", params=INVENTORIES)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return load_cluster(request.param).cluster


def ruleset(cluster: Cluster, host: Host) -> str:
    view = HostView(cluster, host, MaskedSecrets())
    files = component_files("firewall", view, host.firewall)
    (nft,) = [f for f in files if f.spec.dest == firewall.RULESET]
    return nft.content


def expected(cluster: Cluster, host: Host) -> dict[tuple[str, int], Any]:
    """What the inventory derives: SSH from the admin networks + each port's clients."""
    out: dict[tuple[str, int], Any] = {("tcp", host.base.sshd.port): "admins"}
    for _, port in host.ports():
        clients = cluster.port_clients(host, port)
        out.setdefault(
            (port.proto, port.number), clients if isinstance(clients, str) else frozenset(clients)
        )
    return out


def parse_text(text: str) -> dict[tuple[str, int], Any]:
    """(proto, port) -> sources of every accept rule with a destination port in the text."""
    out: dict[tuple[str, int], Any] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") or "dport" not in line:
            continue
        m = re.fullmatch(
            r"(tcp|udp) dport (\d+)(?: ip saddr (@admin_v4|\{ ([^}]*) \}))? accept", line
        )
        assert m, f"unexpected rule shape: {line!r}"
        proto, port, src, addrs = m.groups()
        key = (proto, int(port))
        assert key not in out, f"port opened twice: {line}"
        if src is None:
            out[key] = "any"
        elif src == "@admin_v4":
            out[key] = "admins"
        else:
            out[key] = frozenset(
                IPv4Network(a) if "/" in a else IPv4Address(a) for a in addrs.split(", ")
            )
    return out


@pytest.mark.parametrize("name", HOSTS)
def test_rules_are_exactly_the_derived_pairs(cluster: Cluster, name: str) -> None:
    host = cluster.host(name)
    derived = {k: v for k, v in expected(cluster, host).items() if v != frozenset()}
    assert {k: v for k, v in firewall.allowed_pairs(cluster, host).items() if v} == derived
    assert parse_text(ruleset(cluster, host)) == derived


def test_examples_of_the_matrix(cluster: Cluster) -> None:
    data, webui, gateway = (cluster.host(n) for n in ("data", "webui", "gateway"))
    monitoring = cluster.host("monitoring")
    redis = parse_text(ruleset(cluster, data))[("tcp", data.redis.port)]  # type: ignore[union-attr]
    assert redis == frozenset({gateway.address})
    assert webui.address not in redis  # the webui host cannot reach Redis; the gateway can
    pg = parse_text(ruleset(cluster, data))[("tcp", 5432)]
    assert pg == frozenset({gateway.address, webui.address})
    for h in cluster.hosts:
        if h.name == "monitoring":
            continue
        node = parse_text(ruleset(cluster, h))[("tcp", h.node_exporter.port)]
        assert node == frozenset({monitoring.address}), h.name
    # A model server answers the gateway and monitoring only.
    chat = cluster.host("llm-chat")
    assert parse_text(ruleset(cluster, chat))[("tcp", chat.model.port)] == frozenset(  # type: ignore[union-attr]
        {gateway.address, monitoring.address}
    )


def test_admin_networks_and_only_our_table(cluster: Cluster) -> None:
    for h in cluster.hosts:
        text = ruleset(cluster, h)
        nets = ", ".join(str(n) for n in h.firewall.admin_networks)
        assert f"elements = {{ {nets} }}" in text
        assert "flush ruleset" not in text
        assert set(re.findall(r"^table (\S+ \S+)", text, re.M)) == {"inet citadel"}
        assert "policy drop;" in text
        assert "ct state established,related accept" in text


def test_lab_admin_network_is_the_lab_subnet() -> None:
    lab = load_cluster("inventory/lab.yml").cluster
    assert all(h.firewall.admin_networks == [IPv4Network("10.210.10.0/24")] for h in lab.hosts)


def test_session_client_outside_admin_networks_is_added() -> None:
    prod = load_cluster("inventory/production.yml").cluster
    host = prod.host("data")
    inside = firewall.rules(prod, host, (IPv4Address("192.168.10.5"),))
    assert inside == firewall.rules(prod, host)
    outside = firewall.rules(prod, host, (IPv4Address("10.9.8.7"),))
    extra = [r for r in outside if r not in inside]
    assert [(r.port, r.sources) for r in extra] == [(22, (IPv4Address("10.9.8.7"),))]


# -- the real tool ------------------------------------------------------------------------------
def _nft_usable() -> str | None:
    if shutil.which("nft") is None:
        return "nft is not installed (apt-get install nftables)"
    if os.geteuid() != 0:
        return "nft -c needs root (CAP_NET_ADMIN) and the netlink socket"
    probe = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input="table inet citadel_probe {}\n",
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"nft -c cannot run here: {probe.stderr.strip()}"
    return None


NFT_SKIP = _nft_usable()


@pytest.mark.skipif(NFT_SKIP is not None, reason=NFT_SKIP or "")
@pytest.mark.parametrize("name", HOSTS)
def test_rendered_ruleset_passes_nft_check(cluster: Cluster, name: str, tmp_path: Path) -> None:
    path = tmp_path / "citadel.nft"
    path.write_text(ruleset(cluster, cluster.host(name)))
    proc = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def with_workstations(cluster: Cluster) -> Cluster:
    """The data host's PostgreSQL also open to an engineers' subnet and one CI runner."""
    data = cluster.host("data")
    assert data.postgres is not None
    pg = data.postgres.model_copy(
        update={"allowed_clients": [*data.postgres.allowed_clients, "10.20.0.0/16", "10.9.8.7"]}
    )
    hosts = [
        h.model_copy(update={"postgres": pg}) if h.name == "data" else h for h in cluster.hosts
    ]
    return cluster.model_copy(update={"hosts": hosts})


def test_cidr_and_address_clients_open_the_port_to_them(cluster: Cluster) -> None:
    wider = with_workstations(cluster)
    data = wider.host("data")
    assert data.postgres is not None
    rules = parse_text(ruleset(wider, data))[("tcp", data.postgres.port)]
    assert IPv4Network("10.20.0.0/16") in rules and IPv4Address("10.9.8.7") in rules
    assert wider.host("gateway").address in rules
    hba = {cidr: who for cidr, who in postgres.client_networks(wider, data, data.postgres)}
    assert hba["10.20.0.0/16"] == "network" and hba["10.9.8.7/32"] == ""


@pytest.mark.skipif(NFT_SKIP is not None, reason=NFT_SKIP or "")
def test_a_ruleset_with_client_networks_passes_nft_check(cluster: Cluster, tmp_path: Path) -> None:
    wider = with_workstations(cluster)
    path = tmp_path / "citadel.nft"
    path.write_text(ruleset(wider, wider.host("data")))
    proc = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _netns_usable() -> str | None:
    if NFT_SKIP:
        return NFT_SKIP
    proc = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"unshare -n is not permitted here: {proc.stderr}"


NETNS_SKIP = _netns_usable()


def _source(item: Any) -> IPv4Address | IPv4Network:
    """An address, or a CIDR block (nft JSON: {"prefix": {"addr": ..., "len": ...}})."""
    if isinstance(item, dict) and "prefix" in item:
        return IPv4Network(f"{item['prefix']['addr']}/{item['prefix']['len']}")
    return IPv4Address(item)


def loaded_accepts(text: str, tmp_path: Path) -> dict[tuple[str, int], Any]:
    """Load the ruleset in a throwaway network namespace and read back its accept rules."""
    path = tmp_path / "citadel.nft"
    path.write_text(text)
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"nft -f {path} && nft -j list table inet citadel"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc = json.loads(proc.stdout)["nftables"]
    chain = next(i["chain"] for i in doc if "chain" in i)
    assert (chain["hook"], chain["policy"]) == ("input", "drop")
    out: dict[tuple[str, int], Any] = {}
    for item in doc:
        rule = item.get("rule")
        if not rule or not any("accept" in e for e in rule["expr"]):
            continue
        port: int | None = None
        proto = ""
        sources: Any = "any"
        for e in rule["expr"]:
            m = e.get("match", {})
            left = m.get("left", {})
            payload = left.get("payload", {})
            if payload.get("field") == "dport":
                proto, port = payload["protocol"], m["right"]
            elif payload.get("field") == "saddr":
                right = m["right"]
                if right == "@admin_v4":
                    sources = "admins"
                else:
                    items = right["set"] if isinstance(right, dict) and "set" in right else [right]
                    sources = frozenset(_source(a) for a in items)
        if port is None:
            # Only the baseline accepts carry no port: conntrack, loopback, ICMP.
            kinds = json.dumps(rule["expr"])
            assert any(k in kinds for k in ('"ct"', '"iif"', '"l4proto"')), kinds
            assert "saddr" not in kinds
            continue
        assert (proto, port) not in out
        out[(proto, port)] = sources
    return out


@pytest.mark.skipif(NETNS_SKIP is not None, reason=NETNS_SKIP or "")
@pytest.mark.parametrize("name", HOSTS)
def test_loaded_ruleset_accepts_exactly_the_derived_pairs(
    cluster: Cluster, name: str, tmp_path: Path
) -> None:
    host = cluster.host(name)
    derived = {k: v for k, v in expected(cluster, host).items() if v != frozenset()}
    assert loaded_accepts(ruleset(cluster, host), tmp_path) == derived


@pytest.mark.skipif(NETNS_SKIP is not None, reason=NETNS_SKIP or "")
def test_reload_replaces_only_our_table(tmp_path: Path) -> None:
    prod = load_cluster("inventory/production.yml").cluster
    path = tmp_path / "citadel.nft"
    path.write_text(ruleset(prod, prod.host("data")))
    script = (
        "nft add table inet other && nft add chain inet other keep && "
        f"nft -f {path} && nft -f {path} && nft list tables"
    )
    proc = subprocess.run(["unshare", "-n", "sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["table inet other", "table inet citadel"]


# -- stage -> validate -> install (deploys/_files.put_file) -------------------------------------
def run_local(fn: Any, *args: Any) -> None:
    """Run a deploy function on @local (this machine) with pyinfra's API."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.operations import run_ops

    state = State(Inventory((["@local"], {})), Config())
    connect_all(state)
    add_deploy(state, fn, *args)
    run_ops(state)


@pytest.mark.skipif(NFT_SKIP is not None, reason=NFT_SKIP or "")
def test_broken_ruleset_is_refused_and_live_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))  # deploys/ lives at the repository root
    from pyinfra.api import deploy
    from pyinfra.api.exceptions import PyinfraError

    from deploys._files import STAGING, put_file

    live = tmp_path / "citadel.nft"
    live.write_text("# the live ruleset\n")
    prod = load_cluster("inventory/production.yml").cluster
    good = ruleset(prod, prod.host("data"))
    broken = good.replace("policy drop;", "policy dorp;")
    spec = FileSpec(dest=str(live), template="firewall/citadel.nft.j2", validate="nft -c -f {path}")

    @deploy("test: put")
    def put(content: str) -> None:
        put_file(RenderedFile("firewall", spec, content))

    staged = Path(STAGING) / str(live).lstrip("/").replace("/", "__")
    try:
        with pytest.raises(PyinfraError):
            run_local(put, broken)
        assert live.read_text() == "# the live ruleset\n"
        assert not staged.exists(), "a refused candidate is removed from staging"
        run_local(put, good)
        assert live.read_text() == good
    finally:
        staged.unlink(missing_ok=True)
