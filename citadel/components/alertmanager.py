"""Alertmanager on the monitoring host: Prometheus' alerts routed to the inventory's receivers.

Receivers come from the inventory only (a webhook at least; e-mail as an option), each with the
severities it takes. Alerts are grouped by alertname + instance; a critical alert inhibits the
warnings of the same instance, and a host that is down (HostDown) inhibits every other alert of
that host. The rendered alertmanager.yml is checked by `amtool check-config` before it goes live.
Listens on the host's own address (9093), open to the monitoring hosts (Prometheus) and the
admin networks only: its API can silence alerts and has no authentication.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from citadel.model.common import (
    ComponentConfig,
    Name,
    Port,
    PortNumber,
    SecretName,
    StrictModel,
)
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec, sandbox_dropin

if TYPE_CHECKING:
    from citadel.render import HostView

SERVICE = "prometheus-alertmanager"
CONFIG_FILE = "/etc/prometheus/alertmanager.yml"
DEFAULTS_FILE = "/etc/default/prometheus-alertmanager"
STORAGE_DIR = "/var/lib/prometheus/alertmanager"
SECRETS_DIR = "/etc/prometheus/alertmanager-secrets"
CHECK_CONFIG = "amtool check-config {path}"

Duration = Annotated[str, StringConstraints(pattern=r"^[0-9]+(s|m|h|d)$")]
Severity = Literal["critical", "warning", "info"]
DEFAULT_SEVERITIES: tuple[Severity, ...] = ("critical", "warning")
# user@domain.tld; a display name ("Ops <ops@x>") is not accepted: one address, plainly.
EmailAddress = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"),
]
# host:port of an SMTP server (name or IPv4 address).
Smarthost = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?:[0-9]{1,5}$")
]
LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]


class Webhook(StrictModel):
    """Alertmanager's webhook (JSON POST of each group, firing and resolved).

    Exactly one of `url` (a plain URL, in git) and `url_secret` (a secret name: for URLs that
    are credentials themselves, such as chat or paging integrations; alertmanager.yml then holds
    a secret and is written 0640 root:prometheus, masked in previews)."""

    url: AnyHttpUrl | None = None
    url_secret: SecretName | None = None
    # A secret name (secrets file / CITADEL_SECRET_*): sent as `Authorization: Bearer <token>`.
    bearer_token_secret: SecretName | None = None
    # Alerts per message (0: all of the group).
    max_alerts: int = Field(default=0, ge=0)

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, url: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if url is not None and (url.username or url.password):
            raise ValueError(
                "holds credentials: the inventory is in git; name a secret in url_secret or "
                "bearer_token_secret instead"
            )
        return url

    @model_validator(mode="after")
    def _one_url(self) -> Webhook:
        if (self.url is None) == (self.url_secret is None):
            raise ValueError("set exactly one of url and url_secret")
        return self


class Email(StrictModel):
    """Mail through an SMTP smarthost (STARTTLS required unless require_tls: false)."""

    to: list[EmailAddress] = Field(min_length=1)
    sender: EmailAddress = Field(alias="from")
    smarthost: Smarthost
    username: str | None = None
    # A secret name: the SMTP password (only with username).
    password_secret: SecretName | None = None
    require_tls: bool = True

    @field_validator("smarthost")
    @classmethod
    def _port_in_range(cls, value: str) -> str:
        port = int(value.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1-65535")
        return value

    @model_validator(mode="after")
    def _password_needs_user(self) -> Email:
        if self.password_secret is not None and self.username is None:
            raise ValueError("password_secret needs username (the SMTP login)")
        return self


class Receiver(StrictModel):
    name: Name
    # The severities this receiver is sent (an alert with none of them goes to the first receiver).
    severities: list[Severity] = Field(
        default_factory=lambda: list(DEFAULT_SEVERITIES), min_length=1
    )
    webhook: Webhook | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _has_a_target(self) -> Receiver:
        if self.webhook is None and self.email is None:
            raise ValueError("set webhook or email (a receiver that sends nowhere hides alerts)")
        return self

    def secret_names(self) -> list[str]:
        names = []
        if self.webhook is not None:
            for name in (self.webhook.url_secret, self.webhook.bearer_token_secret):
                if name:
                    names.append(name)
        if self.email is not None and self.email.password_secret:
            names.append(self.email.password_secret)
        return names


class Config(ComponentConfig):
    port: PortNumber = 9093
    # Where it listens; unset: the host's own address (never 0.0.0.0).
    listen_address: IPv4Address | None = None
    # Required while the component is deployed (not skipped): where alerts go is the
    # inventory's decision, never a default.
    receivers: list[Receiver] = Field(default_factory=list, validate_default=True)
    group_by: list[LabelName] = Field(default_factory=lambda: ["alertname", "instance"])
    group_wait: Duration = "30s"
    group_interval: Duration = "5m"
    repeat_interval: Duration = "4h"
    resolve_timeout: Duration = "5m"
    # Who else may reach the UI/API (hosts, roles, addresses, CIDR blocks); always: the monitoring
    # hosts (Prometheus) and the admin networks.
    allowed_clients: list[str] = Field(default_factory=list)

    @field_validator("receivers")
    @classmethod
    def _named_and_unique(cls, receivers: list[Receiver], info: ValidationInfo) -> list[Receiver]:
        if not receivers and info.data.get("skip") is None:
            raise ValueError(
                "required: at least one receiver (webhook or email) while alertmanager is "
                "deployed; or declare alertmanager.skip with its reason"
            )
        seen: set[str] = set()
        for r in receivers:
            if r.name in seen:
                raise ValueError(f"receiver name {r.name!r} is used twice")
            seen.add(r.name)
        return receivers

    @field_validator("group_by")
    @classmethod
    def _groups_by_alertname(cls, labels: list[str]) -> list[str]:
        if "alertname" not in labels:
            raise ValueError("must include alertname (different alerts in one message hide both)")
        return labels

    def ports(self) -> list[Port]:
        return [
            Port(
                service="alertmanager",
                number=self.port,
                clients=("monitoring", *self.allowed_clients),
                field="allowed_clients" if self.allowed_clients else "port",
            )
        ]

    def secrets(self) -> list[str]:
        return [n for r in self.receivers for n in r.secret_names()]

    def url_secrets(self) -> list[str]:
        return [r.webhook.url_secret for r in self.receivers if r.webhook and r.webhook.url_secret]

    def references(self) -> dict[str, list[str]]:
        return {"allowed_clients": self.allowed_clients}


def secret_file(name: str) -> str:
    return f"{SECRETS_DIR}/{name}"


def listen(view_host_address: IPv4Address, cfg: Config) -> str:
    return f"{cfg.listen_address or view_host_address}:{cfg.port}"


def routes(cfg: Config) -> list[dict[str, str]]:
    """One child route per receiver (continue: true, so each gets every alert it subscribes to)."""
    return [{"receiver": r.name, "severity": "|".join(r.severities)} for r in cfg.receivers]


def files(view: HostView, cfg: Config) -> list[FileSpec]:
    address = listen(view.host.address, cfg)
    in_config = cfg.url_secrets()
    out = [
        FileSpec(
            dest=secret_file(name),
            template="alertmanager/secret.j2",
            mode="0640",
            group="prometheus",
            secret=True,
            extra={"name": name},
            on_change="reload",
        )
        for name in cfg.secrets()
        if name not in in_config
    ]
    out += [
        FileSpec(
            dest=CONFIG_FILE,
            template="alertmanager/alertmanager.yml.j2",
            mode="0640",
            group="prometheus",
            validate=CHECK_CONFIG,
            secret=bool(in_config),
            extra={"routes": routes(cfg), "secret_file": secret_file},
            on_change="reload",
        ),
        FileSpec(
            dest=DEFAULTS_FILE,
            template="alertmanager/prometheus-alertmanager.default.j2",
            extra={
                "listen": address,
                "external_url": f"http://{address}/",
                "config_file": CONFIG_FILE,
                "storage_dir": STORAGE_DIR,
            },
        ),
        sandbox_dropin(
            "prometheus-alertmanager", "alertmanager/sandbox.conf.j2", storage_dir=STORAGE_DIR
        ),
    ]
    return out


COMPONENT = Component(
    name="alertmanager",
    config=Config,
    role="monitoring",
    files=files,
    scrape=lambda cfg, host: Scrape(listen(host.address, cfg)),
)
