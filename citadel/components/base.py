"""Base: every host, first. Admin users, sshd, time sync, journald, sysctl, upgrades."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from citadel.model.common import ADMINS, ComponentConfig, Name, Port, PortNumber, StrictModel
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

# Where citadel keeps its helper scripts on a host (validators used before a file goes live).
HELPERS = "/usr/local/lib/citadel"
SSHD_CHECK = f"{HELPERS}/check-sshd"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-citadel.conf"
SYSCTL_FILE = "/etc/sysctl.d/90-citadel.conf"
JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/10-citadel.conf"
CHRONY_DROPIN = "/etc/systemd/system/chrony.service.d/10-citadel.conf"
CHRONY_SOURCES = "/etc/chrony/sources.d/citadel.sources"
TIMESYNCD_DROPIN = "/etc/systemd/timesyncd.conf.d/10-citadel.conf"
SUDOERS_FILE = "/etc/sudoers.d/citadel-admins"
AUTO_UPGRADES = "/etc/apt/apt.conf.d/20auto-upgrades"
UNATTENDED_FILE = "/etc/apt/apt.conf.d/51citadel-unattended-upgrades"

_SSH_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?$"
)
_TIMEZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")
_SYSCTL_KEY = re.compile(r"^[a-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")
_NTP_SOURCE = re.compile(r"^(pool )?[A-Za-z0-9][A-Za-z0-9.:-]*$")
_PACKAGE_GLOB = re.compile(r"^[a-z0-9][a-z0-9.+*?-]*$")


class AdminUser(StrictModel):
    name: Name
    ssh_keys: list[str] = Field(default_factory=list)
    sudo: bool = True

    @field_validator("ssh_keys")
    @classmethod
    def _public_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if "PRIVATE KEY" in key:
                raise ValueError("a private key was given: only public keys belong here")
            if not _SSH_KEY.match(key.strip()):
                raise ValueError(f"not an OpenSSH public key line: {key[:30]!r}...")
        return [k.strip() for k in keys]


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
    # NTP sources ("pool NAME" for a pool, else a server); Debian 13's chrony ships none.
    ntp_servers: list[str] = Field(default_factory=lambda: ["pool 2.debian.pool.ntp.org"])
    journald_max_use: str = Field(default="512M", pattern=r"^[0-9]+[KMG]$")
    sysctl: dict[str, int | str] = Field(default_factory=dict)
    unattended_upgrades: bool = True
    # Packages never upgraded unattended (NVIDIA drivers move only with a planned reboot).
    # Shell-style globs ("nvidia-*"); rendered as unattended-upgrades' anchored regexes.
    held_packages: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if not _TIMEZONE.match(value) or ".." in value:
            raise ValueError(f"not a zoneinfo name (e.g. UTC, Europe/Berlin): {value!r}")
        return value

    @field_validator("ntp_servers")
    @classmethod
    def _ntp(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _NTP_SOURCE.match(value):
                raise ValueError(f"an NTP source is 'HOST' or 'pool HOST': {value!r}")
        return values

    @field_validator("sysctl")
    @classmethod
    def _sysctl(cls, values: dict[str, int | str]) -> dict[str, int | str]:
        for key, value in values.items():
            if not _SYSCTL_KEY.match(key):
                raise ValueError(f"not a sysctl key: {key!r}")
            if "\n" in str(value):
                raise ValueError(f"sysctl {key}: a value is one line")
        return values

    @field_validator("held_packages")
    @classmethod
    def _globs(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _PACKAGE_GLOB.match(value):
                raise ValueError(f"not a package name or glob: {value!r}")
        return values

    def ports(self) -> list[Port]:
        return [Port(service="ssh", number=self.sshd.port, clients=ADMINS, field="sshd.port")]

    # -- derived ------------------------------------------------------------------------------
    def time_sync_service(self) -> str:
        """The time-sync service; its Debian package has the same name."""
        return "chrony" if self.time_sync == "chrony" else "systemd-timesyncd"

    def system_packages(self) -> list[str]:
        """Everything base installs: the model's list plus what its own files need."""
        wanted = [
            *self.packages,
            "openssh-server",
            "sudo",
            "tzdata",
            self.time_sync_service(),
        ]
        if self.unattended_upgrades:
            wanted.append("unattended-upgrades")
        return list(dict.fromkeys(wanted))

    def held_package_patterns(self) -> list[str]:
        """held_packages as unattended-upgrades patterns (Python regexes matched from the start)."""
        return [glob_to_regex(g) for g in self.held_packages]

    def sudo_users(self) -> list[str]:
        return [u.name for u in self.admin_users if u.sudo]


def glob_to_regex(glob: str) -> str:
    """`nvidia-*` -> `nvidia-.*$`; no backslashes (apt.conf strings), specials in classes."""
    out = []
    for ch in glob:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch in ".+":
            out.append(f"[{ch}]")
        else:
            out.append(ch)
    return "".join(out) + "$"


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    out = [
        FileSpec(dest=SSHD_CHECK, template="base/check-sshd.sh.j2", mode="0755"),
        FileSpec(
            dest=SSHD_DROPIN,
            template="base/sshd_citadel.conf.j2",
            validate=f"{SSHD_CHECK} {{path}}",
        ),
        FileSpec(
            dest=SUDOERS_FILE,
            template="base/sudoers.j2",
            mode="0440",
            validate="visudo -c -q -f {path}",
        ),
        FileSpec(dest=JOURNALD_DROPIN, template="base/journald.conf.j2"),
        FileSpec(dest=SYSCTL_FILE, template="base/sysctl.conf.j2"),
        FileSpec(
            dest=AUTO_UPGRADES,
            template="base/20auto-upgrades.j2",
            validate="apt-config -c {path} dump >/dev/null",
        ),
    ]
    if cfg.unattended_upgrades:
        out.append(
            FileSpec(
                dest=UNATTENDED_FILE,
                template="base/unattended-upgrades.conf.j2",
                validate="apt-config -c {path} dump >/dev/null",
            )
        )
    if cfg.time_sync == "chrony":
        out.append(FileSpec(dest=CHRONY_DROPIN, template="base/chrony.service.conf.j2"))
        out.append(FileSpec(dest=CHRONY_SOURCES, template="base/chrony.sources.j2"))
    else:
        out.append(FileSpec(dest=TIMESYNCD_DROPIN, template="base/timesyncd.conf.j2"))
    return out


COMPONENT = Component(name="base", config=Config, role="base", files=files)
