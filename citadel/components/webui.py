"""OpenWebUI on loopback behind nginx on port 80, pointed at the gateway."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from citadel.model.common import ComponentConfig, Port, PortNumber
from citadel.model.component import Component
from citadel.model.files import FileSpec

if TYPE_CHECKING:
    from citadel.render import HostView

NGINX_CHECK = "/usr/local/lib/citadel/check-nginx"
SITE = "/etc/nginx/conf.d/citadel-webui.conf"
UNIT = "/etc/systemd/system/open-webui.service"
ENV_FILE = "/etc/open-webui/open-webui.env"
VENV = "/opt/open-webui/venv"
STATE_DIR = "/var/lib/open-webui"
DATA_DIR = f"{STATE_DIR}/data"
USER = "open-webui"
SERVICE = "open-webui"
# open-webui supports Python >= 3.11, < 3.13.
SUPPORTED_PYTHON = ("3.11", "3.12")
_PYTHON = re.compile(r"^(/[A-Za-z0-9._/-]+/)?python(3\.1[12])$")


class Config(ComponentConfig):
    version: str = Field(default="0.6.32", pattern=r"^[0-9]+(\.[0-9]+){1,3}$")
    # The interpreter for the venv: a command name or an absolute path (python3.11 / python3.12).
    python: str = "python3.12"
    port: PortNumber = 80
    internal_port: PortNumber = 8080

    @field_validator("python")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not _PYTHON.match(value):
            raise ValueError(
                f"open-webui needs Python >= 3.11, < 3.13: give python3.11 or python3.12 "
                f"(a name or an absolute path), not {value!r}"
            )
        return value

    def ports(self) -> list[Port]:
        return [Port(service="webui", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["webui_secret_key", "webui_gateway_token"]

    def python_version(self) -> str:
        m = _PYTHON.match(self.python)
        assert m is not None
        return m.group(2)


def gateway_url(view: HostView) -> str:
    """http://<gateway address>:<port>/v1 of the inventory's gateway."""
    gateways = [h for h in view.cluster.with_role("gateway") if h.gateway is not None]
    if not gateways:
        raise ValueError("webui needs a host with role gateway in the inventory")
    gw = gateways[0]
    assert gw.gateway is not None
    return f"http://{gw.address}:{gw.gateway.port}/v1"


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    return [
        FileSpec(
            dest=ENV_FILE,
            template="webui/open-webui.env.j2",
            mode="0640",
            group=USER,
            secret=True,
            extra={"gateway_url": gateway_url(view), "data_dir": DATA_DIR, "state_dir": STATE_DIR},
        ),
        FileSpec(
            dest=UNIT,
            template="webui/open-webui.service.j2",
            extra={"venv": VENV, "state_dir": STATE_DIR, "env_file": ENV_FILE, "user": USER},
        ),
        FileSpec(dest=NGINX_CHECK, template="webui/check-nginx.sh.j2", mode="0755"),
        FileSpec(dest=SITE, template="webui/webui.conf.j2", validate=f"{NGINX_CHECK} {{path}}"),
    ]


COMPONENT = Component(name="webui", config=Config, role="webui", files=files)
