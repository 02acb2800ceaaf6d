"""Lab configuration: hosts, paths and the network the lab owns.

Everything here is pure (no side effects) so it can be unit tested without root.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from citadel import paths

DEFAULT_STATE_DIR = paths.DEFAULT_LAB_DIR
DEFAULT_CACHE_DIR = paths.DEFAULT_CACHE_DIR
DEFAULT_BRIDGE = "citadel-lab0"
DEFAULT_GATEWAY = "10.210.10.1/24"
DEFAULT_NFT_TABLE = "citadel_lab"
DEFAULT_SUITE = "trixie"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Production network: the lab must never assign, route to or connect to it.
FORBIDDEN_NETWORKS = (ipaddress.IPv4Network("192.168.10.0/24"),)

# nspawn names the host side of a bridged veth "vb-" + machine name; interface names are at
# most 15 characters, so longer machine names get shortened/hashed and become hard to track.
MAX_HOST_NAME = 12
_HOST_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NFT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class LabError(Exception):
    """A lab failure with one clear line of explanation."""


@dataclass(frozen=True)
class LabHost:
    name: str  # inventory host name, e.g. "llm-chat"
    address: str  # e.g. "10.210.10.28"
    suite: str = DEFAULT_SUITE  # the Debian suite its base tree is made from (its distribution)


@dataclass(frozen=True)
class LabPaths:
    state_dir: Path
    cache_dir: Path
    ssh_dir: Path
    ssh_key: Path  # private key, root login to every lab host
    known_hosts: Path
    secrets_dir: Path
    hosts_dir: Path
    base_tree: Path

    def host_dir(self, name: str) -> Path:
        return self.hosts_dir / name

    def base_tree_for(self, suite: str) -> Path:
        """One cached base tree per Debian suite, side by side (``base-<suite>``)."""
        return self.base_tree.with_name(f"base-{suite}")

    def base_trees(self) -> list[Path]:
        """Every suite's cached base tree there is."""
        return sorted(self.base_tree.parent.glob("base-*"))


@dataclass(frozen=True)
class LabConfig:
    state_dir: Path = field(default_factory=lambda: Path(DEFAULT_STATE_DIR))
    cache_dir: Path = field(default_factory=lambda: Path(DEFAULT_CACHE_DIR))
    bridge: str = DEFAULT_BRIDGE
    gateway: str = DEFAULT_GATEWAY  # bridge address with prefix; the hosts' default route
    nft_table: str = DEFAULT_NFT_TABLE
    suite: str = DEFAULT_SUITE
    mirror: str = DEFAULT_MIRROR
    boot_timeout: float = 90.0
    stop_timeout: float = 30.0
    dns: tuple[str, ...] = ()  # empty: take the machine's resolver from /etc/resolv.conf

    @classmethod
    def from_env(cls, **overrides: object) -> LabConfig:
        kw: dict[str, object] = {
            "state_dir": paths.lab_dir(),
            "cache_dir": paths.cache_dir(),
        }
        kw.update(overrides)
        return cls(**kw)  # type: ignore[arg-type]

    @property
    def interface(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(self.gateway)

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.interface.network

    @property
    def gateway_ip(self) -> str:
        return str(self.interface.ip)

    @property
    def owner_tag(self) -> str:
        """Marks what this lab created (bridge alias, nft table comment)."""
        return f"citadel-lab {self.state_dir}"

    def for_suite(self, suite: str) -> LabConfig:
        """The same lab with another base tree's suite (for a host of another distribution)."""
        return replace(self, suite=suite)

    def paths(self) -> LabPaths:
        state = self.state_dir
        cache = self.cache_dir
        return LabPaths(
            state_dir=state,
            cache_dir=cache,
            ssh_dir=state / "ssh",
            ssh_key=state / "ssh" / "id_ed25519",
            known_hosts=state / "known_hosts",
            secrets_dir=state / "secrets",
            hosts_dir=state / "hosts",
            # resolved: a cache that links its lab/ to another cache's shares its base tree
            base_tree=(cache / "lab").resolve() / f"base-{self.suite}",
        )

    def validate(self) -> None:
        if not _IFNAME_RE.match(self.bridge):
            raise LabError(f"invalid bridge name {self.bridge!r} (1-15 chars)")
        if not _NFT_NAME_RE.match(self.nft_table):
            raise LabError(f"invalid nftables table name {self.nft_table!r}")
        try:
            iface = self.interface
        except ValueError as exc:
            raise LabError(f"invalid lab gateway {self.gateway!r}: {exc}") from None
        if iface.network.prefixlen > 30 or iface.ip in (
            iface.network.network_address,
            iface.network.broadcast_address,
        ):
            raise LabError(f"invalid lab gateway {self.gateway!r}")
        for bad in FORBIDDEN_NETWORKS:
            if iface.network.overlaps(bad):
                raise LabError(f"lab network {iface.network} overlaps production {bad}: refused")


def validate_hosts(config: LabConfig, hosts: list[LabHost]) -> None:
    """Unique, well-formed names; unique addresses inside the lab network (never production)."""
    config.validate()
    net = config.network
    names: set[str] = set()
    addrs: set[str] = set()
    for h in hosts:
        if not _HOST_NAME_RE.match(h.name) or len(h.name) > MAX_HOST_NAME:
            raise LabError(
                f"invalid lab host name {h.name!r}: lowercase letters, digits and '-', "
                f"at most {MAX_HOST_NAME} characters"
            )
        try:
            ip = ipaddress.IPv4Address(h.address)
        except ValueError:
            raise LabError(f"host {h.name}: invalid address {h.address!r}") from None
        for bad in FORBIDDEN_NETWORKS:
            if ip in bad:
                raise LabError(f"host {h.name}: address {ip} is in production {bad}: refused")
        if ip not in net or ip in (net.network_address, net.broadcast_address):
            raise LabError(f"host {h.name}: address {ip} is not a host address of {net}")
        if str(ip) == config.gateway_ip:
            raise LabError(f"host {h.name}: address {ip} is the lab gateway")
        if h.name in names:
            raise LabError(f"duplicate lab host name {h.name!r}")
        if str(ip) in addrs:
            raise LabError(f"duplicate lab address {ip}")
        names.add(h.name)
        addrs.add(str(ip))


def find_host(hosts: list[LabHost], ref: str) -> LabHost:
    """A host by inventory name or lab address."""
    for h in hosts:
        if ref in (h.name, h.address):
            return h
    known = ", ".join(h.name for h in hosts) or "none"
    raise LabError(f"unknown lab host {ref!r} (known: {known})")
