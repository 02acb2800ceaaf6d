"""Base: every host, first. Admin users, sshd, time sync, journald, sysctl, upgrades."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from citadel.model.common import ADMINS, ComponentConfig, Name, Port, PortNumber, StrictModel


class AdminUser(StrictModel):
    name: Name
    ssh_keys: list[str] = Field(default_factory=list)
    sudo: bool = True


class Sshd(StrictModel):
    port: PortNumber = 22
    permit_root_login: Literal["no", "prohibit-password"] = "prohibit-password"
    max_auth_tries: int = Field(default=3, ge=1, le=10)


class Config(ComponentConfig):
    packages: list[str] = Field(
        default_factory=lambda: ["ca-certificates", "curl", "gnupg", "python3", "sudo"]
    )
    timezone: str = "UTC"
    admin_users: list[AdminUser] = Field(default_factory=list)
    sshd: Sshd = Sshd()
    time_sync: Literal["chrony", "timesyncd"] = "chrony"
    journald_max_use: str = Field(default="512M", pattern=r"^[0-9]+[KMG]$")
    sysctl: dict[str, int | str] = Field(default_factory=dict)
    unattended_upgrades: bool = True
    # Packages never upgraded unattended (NVIDIA drivers move only with a planned reboot).
    held_packages: list[str] = Field(default_factory=list)

    def ports(self) -> list[Port]:
        return [Port(service="ssh", number=self.sshd.port, clients=ADMINS, field="sshd.port")]
