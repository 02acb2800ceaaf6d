"""Prometheus: scrape config derived from the inventory, rules validated by promtool.

Targets come from the model: every component that converges (not skipped) and serves metrics,
with labels host / role / service. A component the inventory skips (its declared `skip`, e.g. the
lab's Qdrant) is left out: its target is absent, not down. Only the inventory decides
(`HostView.skipped_reason`): whether an artifact can be had changes a converge's result (it fails
closed), never the scrape config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from pydantic import Field

from citadel.model.backup import BackupSettings
from citadel.model.common import ComponentConfig, Port, PortNumber, StrictModel
from citadel.model.component import Component, Scrape
from citadel.model.files import FileSpec, sandbox_dropin

if TYPE_CHECKING:
    from citadel.model.cluster import Cluster, Host
    from citadel.render import HostView

CONFIG_FILE = "/etc/prometheus/prometheus.yml"
DEFAULTS_FILE = "/etc/default/prometheus"
RULES_DIR = "/etc/prometheus/rules"
RECORDING_FILE = f"{RULES_DIR}/citadel-recording.yml"
ALERTS_FILE = f"{RULES_DIR}/citadel-alerts.yml"
SECRETS_DIR = "/etc/prometheus/secrets"
QDRANT_KEY_FILE = f"{SECRETS_DIR}/qdrant_api_key"
CHECK_RULES = "promtool check rules {path}"
CHECK_CONFIG = "promtool check config {path}"


class Alerts(StrictModel):
    """Alert thresholds and `for:` durations (the rules themselves live in templates/prometheus/).

    The durations are settings so the lab can shorten them (its e2e alert test) by an override.
    """

    # HostDown: a host's node exporter unreachable (critical).
    host_down_for: str = Field(default="2m", pattern=r"^[0-9]+[smh]$")
    # TargetDown: any other scrape target unreachable (warning).
    target_down_for: str = Field(default="5m", pattern=r"^[0-9]+[smh]$")
    # ModelServerDown, PostgresDown, RedisDown (critical).
    service_down_for: str = Field(default="2m", pattern=r"^[0-9]+[smh]$")
    gpu_temperature_celsius: int = Field(default=85, ge=40, le=120)
    error_ratio: float = Field(default=0.05, gt=0, le=1)
    rate_limited_per_second: float = Field(default=1.0, gt=0)
    disk_free_ratio: float = Field(default=0.10, gt=0, lt=1)


class Config(ComponentConfig):
    port: PortNumber = 9090
    # Where Prometheus listens; unset: the host's own address (never 0.0.0.0 by default).
    listen_address: IPv4Address | None = None
    retention: str = Field(default="15d", pattern=r"^[0-9]+[hdwy]$")
    scrape_interval: str = Field(default="15s", pattern=r"^[0-9]+[sm]$")
    evaluation_interval: str = Field(default="15s", pattern=r"^[0-9]+[sm]$")
    alerts: Alerts = Alerts()

    def ports(self) -> list[Port]:
        return [Port(service="prometheus", number=self.port, field="port")]

    def secrets(self) -> list[str]:
        return ["qdrant_api_key"]


# -- targets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScrapeTarget:
    job: str  # = the component (service label)
    host: str
    role: str
    address: str  # host:port
    path: str = "/metrics"
    bearer_file: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def all_labels(self) -> dict[str, str]:
        return {"host": self.host, "role": self.role, "service": self.job, **self.labels}


# Absent targets: (host name, section) -> why.
Absent = Mapping[tuple[str, str], str]


def absent_components(view: HostView) -> dict[tuple[str, str], str]:
    """Components that will not run, with why: those the inventory skips (its declared `skip`;
    citadel's one rule, `HostView.skipped_reason`, pure).
    """
    out: dict[tuple[str, str], str] = {}
    for h in view.cluster.hosts:
        for section, _cfg in h.sections():
            reason = view.skipped_reason(h, section)
            if reason is not None:
                out[(h.name, section)] = reason
    return out


def static_absent(cluster: Cluster) -> dict[tuple[str, str], str]:
    """`absent_components` from the cluster alone: for tests and verify."""
    from citadel.render import HostView
    from citadel.secrets import MaskedSecrets

    return absent_components(HostView(cluster, cluster.hosts[0], MaskedSecrets()))


def _roles(h: Host) -> str:
    return ",".join(h.roles) or "base"


def scrape_targets(cluster: Cluster, absent: Absent | None = None) -> list[ScrapeTarget]:
    """Every target Prometheus scrapes, from the components that converge and declare one
    (their ``COMPONENT.scrape``), job by job in converge order."""
    from citadel.components import ORDER, REGISTRY

    absent = absent if absent is not None else {}
    out: list[ScrapeTarget] = []
    for h in cluster.hosts:
        role = _roles(h)
        for section, cfg in h.components():
            if (h.name, section) in absent:
                continue
            at = REGISTRY[section].scrape_target(cfg, h)
            if at is not None:
                out.append(
                    ScrapeTarget(
                        job=section,
                        host=h.name,
                        role=role,
                        address=at.address,
                        path=at.path,
                        bearer_file=at.bearer_file,
                        labels=dict(at.labels),
                    )
                )
    return sorted(out, key=lambda t: ORDER.index(t.job))


def jobs(targets: list[ScrapeTarget]) -> list[dict[str, object]]:
    """Targets grouped by job for the template (one static_config per target: its own labels)."""
    grouped: dict[str, dict[str, object]] = {}
    for t in targets:
        job = grouped.setdefault(
            t.job,
            {"name": t.job, "path": t.path, "bearer_file": t.bearer_file, "targets": []},
        )
        job["targets"].append({"address": t.address, "labels": t.all_labels()})  # type: ignore[attr-defined]
    return list(grouped.values())


def alertmanagers(cluster: Cluster, absent: Absent) -> list[str]:
    """host:port of the Alertmanagers Prometheus sends to: every monitoring host's that converges
    (none when the inventory skips it: then prometheus.yml has no alerting section)."""
    from citadel.components import alertmanager

    return [
        alertmanager.listen(h.address, h.alertmanager)
        for h in cluster.with_role("monitoring")
        if h.alertmanager is not None
        and h.alertmanager.skip is None
        and (h.name, "alertmanager") not in absent
    ]


# -- files ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupAlert:
    """One host's backups of one component (citadel.model.backup): its alert fires when the
    freshness metric of `kind` is older than `stale_s` or absent."""

    alert: str
    host: str
    kind: str
    what: str
    stale_s: int


def backup_alerts(cluster: Cluster, absent: Absent) -> list[BackupAlert]:
    """Every component that backs itself up, component by component in converge order."""
    from citadel.components import ORDER

    out = []
    for section in ORDER:
        for h in cluster.hosts:
            cfg = getattr(h, section, None)
            b = getattr(cfg, "backup", None)
            if (
                isinstance(b, BackupSettings)
                and cfg is not None
                and cfg.skip is None
                and b.enabled
                and (h.name, section) not in absent
            ):
                out.append(BackupAlert(b.ALERT, h.name, b.KIND, b.WHAT, b.stale_after_hours * 3600))
    return out


def files(view: HostView, cfg: Config, absent: Absent | None = None) -> list[FileSpec]:
    cluster = view.cluster
    absent = absent if absent is not None else absent_components(view)
    targets = scrape_targets(cluster, absent)
    gpu_hosts = [
        h.name
        for h in cluster.with_role("gpu")
        if h.nvidia is not None and h.nvidia.skip is None and (h.name, "nvidia") not in absent
    ]
    listen = str(cfg.listen_address or view.host.address)
    out: list[FileSpec] = []
    if any(t.bearer_file == QDRANT_KEY_FILE for t in targets):
        out.append(
            FileSpec(
                dest=QDRANT_KEY_FILE,
                template="prometheus/qdrant_api_key.j2",
                mode="0640",
                group="prometheus",
                secret=True,
                on_change="reload",
            )
        )
    out += [
        FileSpec(
            dest=RECORDING_FILE,
            template="prometheus/citadel-recording.yml.j2",
            validate=CHECK_RULES,
            on_change="reload",
        ),
        FileSpec(
            dest=ALERTS_FILE,
            template="prometheus/citadel-alerts.yml.j2",
            validate=CHECK_RULES,
            on_change="reload",
            extra={"gpu_hosts": gpu_hosts, "backups": backup_alerts(cluster, absent)},
        ),
        FileSpec(
            dest=CONFIG_FILE,
            template="prometheus/prometheus.yml.j2",
            validate=CHECK_CONFIG,
            on_change="reload",
            extra={
                "jobs": jobs(targets),
                "alertmanagers": alertmanagers(cluster, absent),
                "rule_files": [RECORDING_FILE, ALERTS_FILE],
                "absent": dict(sorted(absent.items())),
            },
        ),
        FileSpec(
            dest=DEFAULTS_FILE,
            template="prometheus/prometheus.default.j2",
            extra={"listen": f"{listen}:{cfg.port}"},
        ),
        sandbox_dropin("prometheus", "prometheus/sandbox.conf.j2"),
    ]
    return out


COMPONENT = Component(
    name="prometheus",
    config=Config,
    role="monitoring",
    files=files,
    scrape=lambda cfg, host: Scrape(f"{cfg.listen_address or host.address}:{cfg.port}"),
)
