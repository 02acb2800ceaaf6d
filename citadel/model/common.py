"""Building blocks shared by every config model: strict models, ports, secrets."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
SecretName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
PortNumber = Annotated[int, Field(ge=1, le=65535)]

# Who may connect to a port: everyone, the admin networks, or named hosts/roles.
ANY: Literal["any"] = "any"
ADMINS: Literal["admins"] = "admins"


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in the inventory must never be ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Port(StrictModel):
    """A listening port a component opens, and who may reach it (the firewall derives from this)."""

    service: str
    number: PortNumber
    proto: Literal["tcp", "udp"] = "tcp"
    # "any", "admins", or a list of host names / role names that may connect.
    clients: Literal["any", "admins"] | tuple[str, ...] = ANY
    # Where in the config the port (or its client list) is declared, for error messages.
    field: str = ""


class ComponentConfig(StrictModel):
    """Every component's config: set `skip` to a reason to leave the component out on a host."""

    skip: str | None = None

    def ports(self) -> list[Port]:
        """Ports this component listens on."""
        return []

    def secrets(self) -> list[str]:
        """Names of the secrets this component needs on its host."""
        return []

    def references(self) -> dict[str, list[str]]:
        """Host or role names this config refers to, by dotted field path."""
        return {}


def secret_env_name(name: str) -> str:
    """`postgres_app_password` -> `CITADEL_SECRET_POSTGRES_APP_PASSWORD`."""
    return "CITADEL_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
