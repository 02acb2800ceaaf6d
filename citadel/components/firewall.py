"""Firewall: nftables default-deny inbound; each port open only to the clients the model derives."""

from __future__ import annotations

from ipaddress import IPv4Network

from pydantic import Field

from citadel.model.common import ComponentConfig


class Config(ComponentConfig):
    # Networks allowed to reach SSH (the controller and CI runners live here).
    admin_networks: list[IPv4Network] = Field(default_factory=list)
    # Log dropped packets (rate limited) to the journal.
    log_drops: bool = True
