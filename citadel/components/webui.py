"""OpenWebUI on loopback behind nginx on port 80: models only through the gateway, its state
(users, chats) in a PostgreSQL database of its own, links to the cluster's monitoring."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING
from urllib.parse import quote

from pydantic import Field, field_validator

from citadel.components.edge_tls import nginx_sandbox
from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.model.cluster import Host
    from citadel.render import HostView

NGINX_CHECK = "/usr/local/lib/citadel/check-nginx"
SITE = "/etc/nginx/conf.d/citadel-webui.conf"
UNIT = "/etc/systemd/system/open-webui.service"
ETC = "/etc/open-webui"
ENV_FILE = f"{ETC}/open-webui.env"
# The first account's sign-up body (the admin): read by the deploy's curl, never a command line.
ADMIN_FILE = f"{ETC}/admin.json"
VENV = "/opt/open-webui/venv"
STATE_DIR = "/var/lib/open-webui"  # the service user's home (chromadb writes ~/.cache/chroma)
DATA_DIR = f"{STATE_DIR}/data"
STAGE = "/var/cache/citadel/wheels/open-webui"  # the uploaded wheels (installed offline)
USER = "open-webui"
SERVICE = "open-webui"
# open-webui supports Python >= 3.11, < 3.13.
SUPPORTED_PYTHON = ("3.11", "3.12")
_PYTHON = re.compile(r"^(/[A-Za-z0-9._/-]+/)?python3(\.1[12])?$")
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
SQL_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


def _pinned(values: list[str]) -> list[str]:
    for value in values:
        if not _PINNED.match(value):
            raise ValueError(f"{value!r}: pin it exactly as name==version")
    return values


class Config(ComponentConfig):
    version: str = Field(default="0.6.32", pattern=r"^[0-9]+(\.[0-9]+){1,3}$")
    # The interpreter for the venv: the host's python3 (Debian 12: 3.11), or a command name /
    # absolute path of a python3.11 / python3.12. Its version is checked on the host: open-webui
    # needs >= 3.11, < 3.13 (Debian 13's python3 is 3.13).
    python: str = "python3"
    port: PortNumber = 80
    internal_port: PortNumber = 8080
    # The controller downloads the wheels once (citadel.wheels) and hosts install them offline.
    # constraints: pins for dependencies, e.g. the CPU build of torch (torch==2.13.0+cpu), which
    # keeps the CUDA build and its nvidia-* / triton packages out; pip_extra_index_urls /
    # pip_find_links: where the controller's pip finds what PyPI lacks (PyTorch's CPU index).
    constraints: list[str] = Field(default_factory=list)
    pip_extra_index_urls: list[str] = Field(default_factory=list)
    pip_find_links: list[str] = Field(default_factory=list)
    # Dependencies PyPI ships only as source: built once on the controller into pure-Python
    # wheels (with source_build_env), so hosts install binary wheels only.
    source_builds: list[str] = Field(default_factory=list)
    source_build_env: dict[str, str] = Field(default_factory=dict)
    # The PostgreSQL database (one of postgres.databases) that holds OpenWebUI's state: users,
    # chats, settings. None: OpenWebUI's SQLite file in DATA_DIR on this host.
    database: str | None = Field(default=None, pattern=SQL_NAME)
    # The first account, made by the deploy right after the first start (before anyone can sign
    # up: OpenWebUI's first sign-up becomes its admin); its password is the secret
    # webui_admin_password. Further sign-ups are closed: the admin adds users.
    admin_email: str = Field(default="admin@citadel.local", pattern=r"^[^@\s]+@[^@\s]+$")
    admin_name: str = Field(default="citadel admin", min_length=1, pattern=r"^[^\n\"\\]+$")
    # Seconds the deploy waits for /health after a (re)start (the first one runs its migrations).
    ready_timeout_s: int = Field(default=300, ge=10)

    @field_validator("python")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not _PYTHON.match(value):
            raise ValueError(
                f"open-webui needs Python >= 3.11, < 3.13: give python3 (the host's, when it is "
                f"3.11 or 3.12), python3.11 or python3.12 (a name or an absolute path), "
                f"not {value!r}"
            )
        return value

    @field_validator("constraints", "source_builds")
    @classmethod
    def _exact_pins(cls, values: list[str]) -> list[str]:
        return _pinned(values)

    @property
    def requirement(self) -> str:
        """The pinned requirement; PostgreSQL's driver comes with the `postgres` extra."""
        extra = "[postgres]" if self.database else ""
        return f"open-webui{extra}=={self.version}"

    def ports(self) -> list[Port]:
        return [Port(service="webui", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        names = ["webui_secret_key", "webui_gateway_token", "webui_admin_password"]
        if self.database:
            names.append(database_password_secret(self.database))
        return names


def database_password_secret(database: str) -> str:
    """The secret holding the password of the login role that owns an application database
    (postgres.databases: the role is named like the database)."""
    return f"postgres_{database}_password"


def gateway(view: HostView) -> Host:
    gateways = [h for h in view.cluster.with_role("gateway") if h.gateway is not None]
    if not gateways:
        raise ValueError("webui needs a host with role gateway in the inventory")
    return gateways[0]


def gateway_url(view: HostView) -> str:
    """http://<gateway address>:<port>/v1 of the inventory's gateway."""
    gw = gateway(view)
    assert gw.gateway is not None
    return f"http://{gw.address}:{gw.gateway.port}/v1"


def database_url(view: HostView, cfg: Config) -> str:
    """DATABASE_URL: the cluster's PostgreSQL host that declares ``cfg.database`` (password
    URL-quoted), or "" for OpenWebUI's own SQLite."""
    if cfg.database is None:
        return ""
    servers = [
        h
        for h in view.cluster.with_role("postgres")
        if h.postgres is not None and cfg.database in {d.name for d in h.postgres.databases}
    ]
    if not servers:
        raise ValueError(
            f"webui.database {cfg.database!r} is not among any postgres host's "
            "postgres.databases (declare it there, with webui among its clients)"
        )
    pg = servers[0]
    assert pg.postgres is not None
    password = quote(view.secret(database_password_secret(cfg.database)), safe="")
    return f"postgresql://{cfg.database}:{password}@{pg.address}:{pg.postgres.port}/{cfg.database}"


def monitoring_links(view: HostView) -> list[tuple[str, str]]:
    """(label, URL) of what a UI user can open to see the cluster's state, only where it runs:
    Grafana's dashboards, Prometheus' alerts, the gateway's /health summary."""
    links: list[tuple[str, str]] = []
    for h in view.cluster.with_role("monitoring"):
        if h.grafana is not None and view.deployed(h, "grafana"):
            links.append(("Grafana dashboards", f"http://{h.address}:{h.grafana.port}/dashboards"))
        if h.prometheus is not None and view.deployed(h, "prometheus"):
            links.append(("Prometheus alerts", f"http://{h.address}:{h.prometheus.port}/alerts"))
    gw = gateway(view)
    if gw.gateway is not None and view.deployed(gw, "gateway"):
        links.append(("Gateway health", f"http://{gw.address}:{gw.gateway.port}/health"))
    return links


BANNER_ID = "citadel-monitoring"


def banners(view: HostView) -> str:
    """WEBUI_BANNERS: one info banner above every chat linking to the monitoring (OpenWebUI's own
    admin banners, set from the environment; markdown links). Single-quoted in the env file, so
    the JSON holds no single quote."""
    links = " · ".join(f"[{label}]({url})" for label, url in monitoring_links(view))
    banner = {
        "id": BANNER_ID,
        "type": "info",
        "title": "Cluster monitoring",
        "content": f"Cluster monitoring: {links}" if links else "No monitoring is deployed.",
        "dismissible": False,
        "timestamp": 0,
    }
    text = json.dumps([banner], ensure_ascii=False, separators=(",", ":"))
    if "'" in text:
        raise ValueError("WEBUI_BANNERS must not contain a single quote")
    return text


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(
            dest=ENV_FILE,
            template="webui/open-webui.env.j2",
            mode="0640",
            group=USER,
            secret=True,
            extra={
                "gateway_url": gateway_url(view),
                "database_url": database_url(view, cfg),
                "banners": banners(view),
                "data_dir": DATA_DIR,
                "state_dir": STATE_DIR,
            },
        ),
        FileSpec(
            dest=UNIT,
            template="webui/open-webui.service.j2",
            extra={"venv": VENV, "state_dir": STATE_DIR, "env_file": ENV_FILE, "user": USER},
        ),
        # Read by the deploy's first sign-up only (root's curl): changing it restarts nothing.
        FileSpec(
            dest=ADMIN_FILE,
            template="webui/admin.json.j2",
            mode="0600",
            secret=True,
            on_change="none",
        ),
        FileSpec(
            dest=NGINX_CHECK, template="webui/check-nginx.sh.j2", mode="0755", on_change="none"
        ),
        # "reload": nginx re-reads the site (OpenWebUI itself has nothing to reload).
        FileSpec(
            dest=SITE,
            template="webui/webui.conf.j2",
            validate=f"{NGINX_CHECK} {{path}}",
            on_change="reload",
        ),
        nginx_sandbox(),
    ]


COMPONENT = Component(name="webui", config=Config, role="webui", files=files)
