"""nginx terminating TLS in front of the gateway (HTTP on the gateway port stays, as documented)."""

from __future__ import annotations

from citadel.model.common import ComponentConfig, Port, PortNumber


class Config(ComponentConfig):
    port: PortNumber = 443
    # Paths on the host; when unset a self-signed certificate is generated there (lab).
    certificate_file: str | None = None
    key_file: str | None = None
    hsts: bool = False

    def ports(self) -> list[Port]:
        return [Port(service="gateway_tls", number=self.port, field="port")]
