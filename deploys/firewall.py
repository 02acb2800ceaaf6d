"""Firewall: nftables, default-deny inbound, each port open to exactly the derived clients.

Never locks out the converge: SSH from the admin networks is always the first rule, the address
this SSH session comes from is added when it lies outside them, established connections stay
accepted, and the new table replaces the old one in one atomic `nft -f` transaction after
`nft -c -f` accepted it. Only `table inet citadel` is touched, never `flush ruleset`.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

from pyinfra import host, logger
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server, systemd

from citadel.components import firewall
from citadel.components.firewall import RULESET, TABLE, Config
from citadel.render import RenderedFile, render_specs
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

TABLE_PRESENT = f"nft list table inet {TABLE} >/dev/null 2>&1 && echo present || echo absent"


def session_clients() -> tuple[IPv4Address, ...]:
    """The IPv4 address this SSH session comes from (SSH_CONNECTION, read without sudo)."""
    out = host.get_fact(Command, command='echo "${SSH_CONNECTION:-}"', _sudo=False) or ""
    fields = out.split()
    if not fields:
        return ()
    try:
        addr = ip_address(fields[0])
    except ValueError:
        return ()
    if isinstance(addr, IPv4Address):
        return (addr,)
    mapped = addr.ipv4_mapped
    return (mapped,) if mapped else ()


def rendered(
    ctx: DeployContext, cfg: Config, session: tuple[IPv4Address, ...]
) -> list[RenderedFile]:
    view = ctx.view
    return render_specs("firewall", view, cfg, firewall.files(view, cfg, session))


# Installed with the base packages in one apt transaction (deploys/base.py); listed here too so
# this component stands alone (then a no-op: the package fact already has it). netbase brings
# /etc/protocols, where Debian 12's nft looks up the rules' protocol names (ipv6-icmp).
PACKAGES = ["nftables", "netbase"]


@deploy("firewall: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    apt.packages(
        name="Install nftables and netbase",
        packages=PACKAGES,
        no_recommends=True,
    )


@deploy("firewall: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    session = session_clients()
    outside = [a for a in session if not any(a in n for n in cfg.admin_networks)]
    if outside:
        logger.warning(
            f"[{ctx.host.name}] firewall: this SSH session comes from {outside[0]}, outside "
            "firewall.admin_networks; SSH from it is allowed too so the converge keeps its access"
        )
    return put_files(rendered(ctx, cfg, session))


@deploy("firewall: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    ruleset = changed[0]
    absent = (host.get_fact(Command, command=TABLE_PRESENT) or "").strip() != "present"
    server.shell(
        name=f"Load table inet {TABLE} (one atomic nft transaction, checked with nft -c)",
        commands=[f"nft -f {RULESET}"],
        _if=lambda: absent or ruleset.did_change(),
    )
    systemd.service(
        name="Enable nftables at boot (/etc/nftables.conf includes /etc/nftables.d)",
        service="nftables",
        running=True,
        enabled=True,
    )


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
