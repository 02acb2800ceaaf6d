"""PostgreSQL's pg_hba.conf rules for the document's database: only what the inventory allows
(local administration by peer, the owner on loopback, the application and read-only roles from
the allowed clients, each application database's own role from its clients); scram only."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Literal

from citadel.model.common import Port

if TYPE_CHECKING:
    from citadel.components.postgres import Config
    from citadel.model.cluster import Cluster, Host


@dataclass(frozen=True)
class HbaRule:
    type: Literal["local", "host"]
    database: str
    users: tuple[str, ...]
    address: str  # "" for local
    method: str
    comment: str = ""

    def line(self) -> str:
        users = ",".join(self.users)
        if self.type == "local":
            return f"local   {self.database:<12} {users:<40} {'':<18} {self.method}"
        return f"host    {self.database:<12} {users:<40} {self.address:<18} {self.method}"


def client_networks(
    cluster: Cluster, host: Host, cfg: Config, clients: list[str] | None = None
) -> list[tuple[str, str]]:
    """(CIDR, who) for every client the inventory allows to reach the document's database on
    `host` (allowed_clients), or the given `clients` (an application database's)."""
    refs = cfg.allowed_clients if clients is None else clients
    port = Port(service="postgres", number=cfg.port, clients=tuple(refs))
    allowed = cluster.port_clients(host, port)
    if allowed == "any":
        return [("0.0.0.0/0", "any")]
    if allowed == "admins":
        return [(str(n), "admin network") for n in host.firewall.admin_networks]
    by_addr: dict[IPv4Address, str] = {h.address: h.name for h in cluster.hosts}
    return [
        (str(a), "network")
        if isinstance(a, IPv4Network)
        else (str(IPv4Network(f"{a}/32")), by_addr.get(a, ""))
        for a in allowed
    ]


def hba_rules(cluster: Cluster, host: Host, cfg: Config) -> list[HbaRule]:
    """Only what is needed: local admin by peer, the owner on loopback, the app and read-only
    roles from the inventory's allowed clients, the exporter's login on loopback; scram only."""
    db = cfg.database
    rules = [
        HbaRule("local", "all", ("postgres",), "", "peer", "administration as the postgres user"),
    ]
    if cfg.backup.enabled:
        rules.append(
            HbaRule(
                "local",
                "replication",
                ("postgres",),
                "",
                "peer",
                "base backups (pg_basebackup as the postgres user)",
            )
        )
    local_users: tuple[str, ...] = (cfg.owner_role, cfg.app_role, cfg.readonly_role)
    if host.postgres_exporter is not None and host.postgres_exporter.skip is None:
        local_users += (host.postgres_exporter.role,)
    for loopback in ("127.0.0.1/32", "::1/128"):
        rules.append(HbaRule("host", db, local_users, loopback, "scram-sha-256", "this host"))
    for cidr, who in client_networks(cluster, host, cfg):
        rules.append(
            HbaRule("host", db, (cfg.app_role, cfg.readonly_role), cidr, "scram-sha-256", who)
        )
    for app in cfg.databases:
        for cidr, who in client_networks(cluster, host, cfg, app.clients):
            comment = f"{app.name}: its own role, from {who or cidr}"
            rules.append(HbaRule("host", app.name, (app.role,), cidr, "scram-sha-256", comment))
    return rules
