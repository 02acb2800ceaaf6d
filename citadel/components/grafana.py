"""Grafana from its apt repository (version pinned), provisioned with the document's dashboards.

The five dashboards of the API document are Python data (citadel.dashboards); this module writes
each as JSON through templates/grafana/dashboard.json.j2, beside Grafana's config, its Prometheus
datasource and the provisioning that loads them.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from pydantic import Field

from citadel.dashboards import DASHBOARDS, DATASOURCE_UID, dashboard_json
from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.model.cluster import Cluster, Host
    from citadel.render import HostView

DASHBOARDS_DIR = "/etc/grafana/dashboards/citadel"
PASSWORD_FILE = "/etc/grafana/citadel-admin-password"
JSON_CHECK = "python3 -m json.tool {path} > /dev/null"


class Config(ComponentConfig):
    version: str = Field(
        default="12.2.0", pattern=r"^[0-9]+\.[0-9]+\.[0-9]+([-+~.][A-Za-z0-9.+~-]+)?$"
    )
    port: PortNumber = 3000
    # Where Grafana listens; unset: the host's own address.
    listen_address: IPv4Address | None = None
    repository: str = "https://apt.grafana.com"
    suite: str = "stable"
    key_url: str = "https://apt.grafana.com/gpg.key"
    admin_user: str = Field(default="admin", pattern=r"^[a-z][a-z0-9_-]{0,31}$")

    def ports(self) -> list[Port]:
        return [Port(service="grafana", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["grafana_admin_password"]

    @property
    def release_url(self) -> str:
        return f"{self.repository.rstrip('/')}/dists/{self.suite}/Release"


# -- files ---------------------------------------------------------------------------------------
def prometheus_url(cluster: Cluster, host: Host) -> str:
    """The Prometheus the datasource points at: this host's own when it runs one, else the first."""
    candidates = [
        h for h in cluster.hosts if h.prometheus is not None and h.prometheus.skip is None
    ]
    if not candidates:
        raise ValueError("grafana needs a host running prometheus in the inventory")
    chosen = next((h for h in candidates if h.name == host.name), candidates[0])
    assert chosen.prometheus is not None
    address = chosen.prometheus.listen_address or chosen.address
    return f"http://{address}:{chosen.prometheus.port}"


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    listen = str(cfg.listen_address or view.host.address)
    out = [
        FileSpec(
            dest=PASSWORD_FILE,
            template="grafana/admin-password.j2",
            mode="0640",
            group="grafana",
            secret=True,
        ),
        FileSpec(
            dest="/etc/grafana/grafana.ini",
            template="grafana/grafana.ini.j2",
            mode="0640",
            group="grafana",
            extra={"listen": listen, "password_file": PASSWORD_FILE},
        ),
        FileSpec(
            dest="/etc/grafana/provisioning/datasources/citadel.yaml",
            template="grafana/datasource.yaml.j2",
            mode="0640",
            group="grafana",
            extra={
                "prometheus_url": prometheus_url(view.cluster, view.host),
                "uid": DATASOURCE_UID,
            },
        ),
        FileSpec(
            dest="/etc/grafana/provisioning/dashboards/citadel.yaml",
            template="grafana/dashboards.yaml.j2",
            mode="0640",
            group="grafana",
            extra={"path": DASHBOARDS_DIR},
        ),
    ]
    for d in DASHBOARDS:
        out.append(
            FileSpec(
                dest=f"{DASHBOARDS_DIR}/{d.uid}.json",
                template="grafana/dashboard.json.j2",
                validate=JSON_CHECK,
                extra={"dashboard_json": json.dumps(dashboard_json(d), indent=2, sort_keys=True)},
            )
        )
    return out


COMPONENT = Component(name="grafana", config=Config, role="monitoring", files=files)
