"""Redis from the distribution: ACL users with hashed passwords, bound to the host's address."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

CONF = "/etc/redis/redis.conf"
CHECKCONF = "/usr/local/lib/citadel/redis-checkconf"
EXPORTER_USER = "citadel_exporter"
# What the exporter may run: connection handling and read-only server introspection, no keys.
EXPORTER_ACL = (
    "resetkeys resetchannels -@all +@connection +info +config|get +slowlog|get +slowlog|len "
    "+latency|latest +latency|histogram +memory|stats +client|list +cluster|info +dbsize +select"
)


class Config(ComponentConfig):
    port: PortNumber = 6379
    maxmemory: str = Field(default="2gb", pattern=r"^[0-9]+(kb|mb|gb)$")
    maxmemory_policy: Literal["allkeys-lru", "allkeys-lfu", "volatile-lru", "noeviction"] = (
        "allkeys-lru"
    )
    persistence: Literal["rdb", "aof", "none"] = "rdb"
    allowed_clients: list[str] = Field(default_factory=lambda: ["gateway"])

    def ports(self) -> list[Port]:
        return [
            Port(
                service="redis",
                number=self.port,
                clients=tuple(self.allowed_clients),
                field="allowed_clients",
            )
        ]

    def secrets(self) -> list[str]:
        return ["redis_password"]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}


def acl_hash(password: str) -> str:
    """Redis ACL `#<sha256>` form: the config never holds a plaintext password."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def acl_users(view: HostView) -> list[tuple[str, str, str]]:
    """(user, sha256 of its password, rules): `default` is the document's password-only AUTH."""
    users = [("default", acl_hash(view.secret("redis_password")), "~* &* +@all")]
    exporter = view.host.redis_exporter
    if exporter is not None and exporter.skip is None:
        users.append(
            (EXPORTER_USER, acl_hash(view.secret("redis_exporter_password")), EXPORTER_ACL)
        )
    return users


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(dest=CHECKCONF, template="redis/redis-checkconf.sh.j2", mode="0755"),
        FileSpec(
            dest=CONF,
            template="redis/redis.conf.j2",
            mode="0640",
            group="redis",
            secret=True,  # password hashes only, but kept out of diffs all the same
            validate=f"{CHECKCONF} {{path}}",
            extra={"users": acl_users(view)},
        ),
    ]


COMPONENT = Component(name="redis", config=Config, role="redis", files=files)
