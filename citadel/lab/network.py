"""The lab's network: a bridge, an nftables table and ip_forward. Ownership is always checked."""

from __future__ import annotations

import ipaddress
import json
from enum import Enum
from pathlib import Path

from citadel.lab import render, system
from citadel.lab.config import LabConfig, LabError


class Owner(Enum):
    ABSENT = "absent"
    OURS = "ours"
    FOREIGN = "foreign"


def classify_bridge(link: dict[str, object] | None, tag: str) -> Owner:
    """`link` is one entry of `ip -j -d link show`; ours when it is a bridge carrying our alias."""
    if link is None:
        return Owner.ABSENT
    info = link.get("linkinfo")
    kind = info.get("info_kind") if isinstance(info, dict) else None
    if kind == "bridge" and link.get("ifalias") == tag:
        return Owner.OURS
    return Owner.FOREIGN


def address_conflicts(addr_json: list[dict[str, object]], config: LabConfig) -> list[str]:
    """Interfaces other than our bridge holding an address inside the lab network."""
    net = config.network
    out = []
    for item in addr_json:
        ifname = item.get("ifname")
        if ifname == config.bridge:
            continue
        infos = item.get("addr_info")
        for a in infos if isinstance(infos, list) else []:
            if not isinstance(a, dict) or a.get("family") != "inet":
                continue
            try:
                other = ipaddress.IPv4Interface(f"{a.get('local')}/{a.get('prefixlen')}")
            except ValueError:
                continue
            if other.ip in net or other.network.overlaps(net):
                out.append(f"{other} on {ifname}")
    return out


def classify_table(nft_text: str | None, tag: str) -> Owner:
    """`nft_text` is `nft list table inet T` output (None when the table does not exist).

    Ours when the table carries our comment (nft's JSON output omits table comments, so the
    text form is parsed: the comment is the first statement inside the table block).
    """
    if nft_text is None:
        return Owner.ABSENT
    lines = [ln.strip() for ln in nft_text.splitlines() if ln.strip()]
    for ln in lines[1:2]:
        if ln.startswith("comment "):
            try:
                value = json.loads(ln[len("comment ") :])
            except json.JSONDecodeError:
                return Owner.FOREIGN
            return Owner.OURS if value == tag else Owner.FOREIGN
    return Owner.FOREIGN


# ---------------------------------------------------------------- live state


def bridge_owner(config: LabConfig) -> Owner:
    return classify_bridge(system.link(config.bridge), config.owner_tag)


def table_owner(config: LabConfig) -> Owner:
    res = system.run(["nft", "list", "table", "inet", config.nft_table], check=False)
    return classify_table(res.stdout if res.returncode == 0 else None, config.owner_tag)


def check_free(config: LabConfig) -> None:
    """Refuse to run over an address, bridge or table that is not ours."""
    if bridge_owner(config) is Owner.FOREIGN:
        raise LabError(
            f"interface {config.bridge} exists but was not created by this lab "
            f"(alias is not {config.owner_tag!r}); refusing to touch it"
        )
    conflicts = address_conflicts(system.ip_json("addr", "show"), config)
    if conflicts:
        raise LabError(
            f"lab network {config.network} is already used on this machine: {', '.join(conflicts)}"
        )
    if table_owner(config) is Owner.FOREIGN:
        raise LabError(
            f"nftables table inet {config.nft_table} exists but was not created by this lab"
        )


def ensure(config: LabConfig) -> None:
    check_free(config)
    br = config.bridge
    if bridge_owner(config) is Owner.ABSENT:
        res = system.run(["ip", "link", "add", br, "type", "bridge"], check=False)
        if res.returncode != 0:
            raise LabError(
                f"cannot create bridge {br} (kernel bridge support missing?): {res.stderr.strip()}"
            )
        system.run(["ip", "link", "set", br, "alias", config.owner_tag])
    have = {
        f"{a.get('local')}/{a.get('prefixlen')}"
        for item in system.ip_json("addr", "show", "dev", br)
        for a in (item.get("addr_info") or [])  # type: ignore[attr-defined]
        if isinstance(a, dict) and a.get("family") == "inet"
    }
    if config.gateway not in have:
        system.run(["ip", "addr", "add", config.gateway, "dev", br])
    system.run(["ip", "link", "set", br, "up"])
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    system.run(["nft", "-f", "-"], input=render.nft_ruleset(config, system.default_interface()))


def teardown(config: LabConfig, log: system.Log) -> None:
    if table_owner(config) is Owner.OURS:
        system.run(["nft", "delete", "table", "inet", config.nft_table])
    owner = bridge_owner(config)
    if owner is Owner.OURS:
        system.run(["ip", "link", "delete", config.bridge])
    elif owner is Owner.FOREIGN:
        log(f"note: {config.bridge} is not ours; left alone")


def remove_stale_veth(config: LabConfig, host_name: str) -> None:
    """A vb-NAME left by a dead host (ours: on our bridge or on none) blocks its next boot."""
    name = render.veth_name(host_name)
    link = system.link(name)
    if link is None:
        return
    master = link.get("master")
    if master not in (None, config.bridge):
        raise LabError(
            f"interface {name} belongs to bridge {master}: another lab runs a host named "
            f"{host_name!r}; host names must be unique on this machine"
        )
    system.run(["ip", "link", "delete", name], check=False)


def check_veth_support() -> None:
    import os

    a, b = f"clvchk{os.getpid() % 100000}a", f"clvchk{os.getpid() % 100000}b"
    res = system.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=False)
    if res.returncode != 0:
        raise LabError(f"kernel feature missing: veth pairs ({res.stderr.strip()})")
    system.run(["ip", "link", "delete", a], check=False)
