"""Firewall: nftables default-deny inbound; each port open only to the clients the model derives.

The ruleset lives in one table of our own (`table inet citadel`), replaced atomically by one
`nft -f` transaction; other tables (the lab machine's, other tools') are never flushed or touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from citadel.model.common import ADMINS, ComponentConfig
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.model.cluster import Cluster, Host
    from citadel.render import HostView

TABLE = "citadel"
RULESET = "/etc/nftables.d/citadel.nft"
NFTABLES_CONF = "/etc/nftables.conf"


class Config(ComponentConfig):
    # Networks allowed to reach SSH (the controller and CI runners live here).
    admin_networks: list[IPv4Network] = Field(default_factory=list)
    # Log dropped packets (rate limited) to the journal.
    log_drops: bool = True


@dataclass(frozen=True)
class Rule:
    """One accept rule: a port and who may reach it."""

    service: str
    proto: Literal["tcp", "udp"]
    port: int
    # "any": everyone; "admins": the admin networks; else exactly these addresses / blocks.
    sources: Literal["any", "admins"] | tuple[IPv4Address | IPv4Network, ...]
    note: str = ""


def rules(
    cluster: Cluster,
    host: Host,
    session_clients: tuple[IPv4Address, ...] = (),
) -> list[Rule]:
    """Every accept rule of `host`'s input chain, derived from the inventory.

    SSH comes first and always from the admin networks (a converge must never lock itself out);
    `session_clients` adds the address the running converge connects from, when it lies outside
    them. Each other port opens to exactly `cluster.port_clients(host, port)`.
    """
    ssh_port = host.base.sshd.port
    out = [Rule("ssh", "tcp", ssh_port, ADMINS, "admin networks (firewall.admin_networks)")]
    admin_nets = host.firewall.admin_networks
    extra = tuple(a for a in session_clients if not any(a in n for n in admin_nets))
    if extra:
        out.append(Rule("ssh", "tcp", ssh_port, extra, "the SSH session this converge runs on"))
    for section, port in host.ports():
        if section == "base" and port.service == "ssh":
            continue
        clients = cluster.port_clients(host, port)
        if isinstance(clients, str):  # ANY or ADMINS
            out.append(Rule(port.service, port.proto, port.number, clients, section))
        else:
            # Possibly empty: the only client is this host itself (loopback is always allowed).
            out.append(Rule(port.service, port.proto, port.number, tuple(clients), section))
    return out


def allowed_pairs(
    cluster: Cluster, host: Host
) -> dict[tuple[str, int], Literal["any", "admins"] | frozenset[IPv4Address | IPv4Network]]:
    """(proto, port) -> who may connect: the derived policy, for tests and verify."""
    out: dict[tuple[str, int], Literal["any", "admins"] | frozenset[IPv4Address | IPv4Network]] = {}
    for r in rules(cluster, host):
        out[(r.proto, r.port)] = r.sources if isinstance(r.sources, str) else frozenset(r.sources)
    return out


def files(
    view: HostView, cfg: Config, session_clients: tuple[IPv4Address, ...] = ()
) -> list[FileSpec]:
    return [
        FileSpec(
            dest=RULESET,
            template="firewall/citadel.nft.j2",
            mode="0640",
            validate="nft -c -f {path}",
            extra={"rules": rules(view.cluster, view.host, session_clients), "table": TABLE},
        ),
        FileSpec(dest=NFTABLES_CONF, template="firewall/nftables.conf.j2", mode="0750"),
    ]


COMPONENT = Component(name="firewall", config=Config, role="base", files=files)
