"""The gateway's client-facing edge: nginx on the gateway host, HTTP on the gateway's port (as the
API document has it) and HTTPS, in front of the gateway's unix socket.

nginx, not our code, holds the security boundary for every client: header and body timeouts,
header size limits, idle keep-alive, connections per client address (hardening: slow and
oversized clients; measured in bench/RESULTS.md, "Client-facing front").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel
from citadel.model.component import Component
from citadel.model.files import FileSpec, sandbox_dropin

if TYPE_CHECKING:
    from citadel.render import HostView

NGINX_CHECK = "/usr/local/lib/citadel/check-nginx"
SITE = "/etc/nginx/conf.d/citadel-edge-tls.conf"
SELF_SIGNED_CERT = "/etc/ssl/citadel/edge-selfsigned.crt"
SELF_SIGNED_KEY = "/etc/ssl/private/citadel-edge-selfsigned.key"
# The gateway's socket when nginx fronts it: systemd makes it, 0666 (citadel-gateway.socket).
GATEWAY_SOCKET = "/run/citadel-gateway/gateway.sock"


class Front(StrictModel):
    """What nginx enforces before the gateway sees a byte; the defaults were measured."""

    header_timeout_s: int = Field(default=5, ge=1, le=300)  # the whole request head (slowloris)
    body_timeout_s: int = Field(default=10, ge=1, le=600)  # between two reads of a body
    keepalive_timeout_s: int = Field(default=5, ge=0, le=300)  # an idle keep-alive connection
    send_timeout_s: int = Field(default=10, ge=1, le=600)  # between two writes to the client
    header_line_kib: int = Field(default=16, ge=1, le=64)  # a header line; the head <= 4 of them
    max_body_mib: int = Field(default=1, ge=1, le=1024)  # = the gateway's listen.max_body_bytes
    connections_per_client: int = Field(default=200, ge=1)  # per client address


class Config(ComponentConfig):
    port: PortNumber = 443
    # Paths on the host; when unset a self-signed certificate is generated there (lab).
    certificate_file: str | None = None
    key_file: str | None = None
    hsts: bool = False
    front: Front = Front()

    @model_validator(mode="after")
    def _both_or_neither(self) -> Config:
        if (self.certificate_file is None) != (self.key_file is None):
            raise ValueError("set both certificate_file and key_file, or neither (self-signed)")
        for path in (self.certificate_file, self.key_file):
            if path is not None and (not path.startswith("/") or any(c in path for c in " ;'\"")):
                raise ValueError(f"an absolute path without spaces or quotes: {path!r}")
        return self

    def ports(self) -> list[Port]:
        return [Port(service="gateway_tls", number=self.port, field="port")]

    @property
    def self_signed(self) -> bool:
        return self.certificate_file is None

    def cert_path(self) -> str:
        return self.certificate_file or SELF_SIGNED_CERT

    def key_path(self) -> str:
        return self.key_file or SELF_SIGNED_KEY


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    gateway = view.host.gateway
    if gateway is None:  # edge_tls comes with the gateway role; the model guarantees it
        raise ValueError(f"{view.host.name}: edge_tls needs the gateway on the same host")
    return [
        FileSpec(dest=NGINX_CHECK, template="edge_tls/check-nginx.sh.j2", mode="0755"),
        FileSpec(
            dest=SITE,
            template="edge_tls/edge-tls.conf.j2",
            validate=f"{NGINX_CHECK} {{path}}",
            extra={
                "gateway_port": gateway.port,
                "socket": GATEWAY_SOCKET,
                "timeout_s": int(gateway.backend_timeout_s) + 30,
            },
        ),
        nginx_sandbox(),
    ]


def nginx_sandbox() -> FileSpec:
    """nginx's sandbox drop-in (edge_tls and webui both run Debian's nginx)."""
    return sandbox_dropin("nginx", "_shared/nginx-sandbox.conf.j2")


COMPONENT = Component(name="edge_tls", config=Config, role="gateway", files=files)
