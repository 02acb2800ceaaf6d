"""nginx terminating TLS in front of the gateway (HTTP on the gateway port stays, as documented)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import model_validator

from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

NGINX_CHECK = "/usr/local/lib/citadel/check-nginx"
SITE = "/etc/nginx/conf.d/citadel-edge-tls.conf"
SELF_SIGNED_CERT = "/etc/ssl/citadel/edge-selfsigned.crt"
SELF_SIGNED_KEY = "/etc/ssl/private/citadel-edge-selfsigned.key"


class Config(ComponentConfig):
    port: PortNumber = 443
    # Paths on the host; when unset a self-signed certificate is generated there (lab).
    certificate_file: str | None = None
    key_file: str | None = None
    hsts: bool = False

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
            extra={"upstream_port": gateway.port, "timeout_s": int(gateway.backend_timeout_s) + 30},
        ),
    ]
