"""Alertmanager: receivers from the inventory (typed, validated), grouping and inhibition, the
rendered config accepted by amtool, Prometheus' alerting section, firewall, deploy operations."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import deploy_harness as h
import pytest
import yaml
from pydantic import ValidationError

from citadel.components import alertmanager as am
from citadel.components import firewall
from citadel.components import prometheus as prom
from citadel.errors import InventoryError
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import render_host
from citadel.secrets import MASK, MaskedSecrets, SecretStore
from deploys import alertmanager as deploy
from deploys._context import DeployContext

ROOT = Path(__file__).resolve().parents[2]
AMTOOL = shutil.which("amtool")
PROMTOOL = shutil.which("promtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool not installed (apt-get install prometheus-alertmanager)"
)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")

WEBHOOK = {"name": "oncall", "webhook": {"url": "https://oncall.example.internal/hooks/citadel"}}
FULL = [
    {
        "name": "oncall",
        "webhook": {
            "url": "https://oncall.example.internal/hooks/citadel",
            "bearer_token_secret": "alert_webhook_token",
        },
    },
    {
        "name": "ops-mail",
        "severities": ["critical"],
        "email": {
            "to": ["ops@example.org", "lead@example.org"],
            "from": "alertmanager@example.org",
            "smarthost": "smtp.example.org:587",
            "username": "alertmanager@example.org",
            "password_secret": "alert_smtp_password",
        },
    },
]


def _inventory(tmp_path: Path, overrides: list[dict[str, Any]]) -> Path:
    """An inventory extending production.yml with `overrides` (the repository's group data)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "group_data").symlink_to(ROOT / "group_data")
    inv = tmp_path / "inventory" / "test.yml"
    inv.parent.mkdir()
    doc = {"extends": str(ROOT / "inventory" / "production.yml"), "overrides": overrides}
    inv.write_text(yaml.safe_dump(doc))
    return inv


def _alerting(receivers: list[dict[str, Any]] | None, **more: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"group_data.monitoring.alertmanager.skip": None}
    if receivers is not None:
        settings["group_data.monitoring.alertmanager.receivers"] = receivers
    settings.update({f"group_data.monitoring.alertmanager.{k}": v for k, v in more.items()})
    return {"name": "alerting-on", "why": "test", "set": settings}


@pytest.fixture(scope="module")
def lab() -> Cluster:
    return load_cluster(ROOT / "inventory" / "lab.yml").cluster


@pytest.fixture(scope="module")
def production() -> Cluster:
    return load_cluster(ROOT / "inventory" / "production.yml").cluster


@pytest.fixture
def full(tmp_path: Path) -> Cluster:
    return load_cluster(_inventory(tmp_path, [_alerting(FULL)])).cluster


def _files(cluster: Cluster, component: str) -> dict[str, str]:
    host = cluster.host("monitoring")
    return {f.spec.dest: f.content for f in render_host(cluster, host) if f.component == component}


def _store(cluster: Cluster, **values: str) -> SecretStore:
    """Every secret the cluster needs as "x" but the alert webhook's URL, plus `values`."""
    names = {n for h in cluster.hosts for n in cluster.required_secrets(h)}
    return SecretStore({**{n: "x" for n in names if n != "alert_webhook_url"}, **values}, "test")


# -- the config model ------------------------------------------------------------------------
def test_production_names_its_webhook_as_a_secret(production: Cluster) -> None:
    """No placeholder URL: production's receiver is explicit, its URL a secret that
    `validate --require-secrets` names until it is supplied."""
    host = production.host("monitoring")
    cfg = host.alertmanager
    assert cfg is not None and cfg.skip is None
    [receiver] = cfg.receivers
    assert receiver.webhook is not None and receiver.webhook.url is None
    assert receiver.webhook.url_secret == "alert_webhook_url"
    assert production.required_secrets(host)["alert_webhook_url"] == "alertmanager"
    with pytest.raises(InventoryError) as exc:
        load_cluster(
            ROOT / "inventory" / "production.yml",
            require_secrets=True,
            secrets=_store(production),
        )
    [problem] = exc.value.problems
    assert problem.path == "alert_webhook_url"
    assert "CITADEL_SECRET_ALERT_WEBHOOK_URL" in problem.message
    [config] = [f for f in render_host(production, host) if f.spec.dest == am.CONFIG_FILE]
    assert config.spec.secret and config.spec.mode == "0640"
    assert f'url: "{MASK}"' in config.content  # the preview masks it
    assert am.secret_file("alert_webhook_url") not in {
        f.spec.dest for f in render_host(production, host)
    }  # in the config itself, not a file of its own


def test_deployed_without_receivers_is_a_validate_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as exc:
        load_cluster(_inventory(tmp_path, [_alerting([])]))
    problems = [p for p in exc.value.problems if "receivers" in p.path]
    assert len(problems) == 1, exc.value.problems
    assert problems[0].path.endswith("alertmanager.receivers")
    assert "required: at least one receiver" in problems[0].message


@pytest.mark.parametrize(
    ("receivers", "extra", "fragment"),
    [
        ([{"name": "x"}], {}, "set webhook or email"),
        ([{"name": "x", "webhook": {}}], {}, "exactly one of url and url_secret"),
        (
            [{"name": "x", "webhook": {"url": "https://h.example/x", "url_secret": "u"}}],
            {},
            "exactly one of url and url_secret",
        ),
        ([{"name": "x", "webhook": {"url": "ftp://h/x"}}], {}, "URL scheme should be"),
        ([{"name": "x", "webhook": {"url": "not a url"}}], {}, "valid URL"),
        (
            [{"name": "x", "webhook": {"url": "https://u:p@h.example/x"}}],
            {},
            "holds credentials",
        ),
        ([WEBHOOK, WEBHOOK], {}, "used twice"),
        ([{"name": "Bad Name", "webhook": WEBHOOK["webhook"]}], {}, "should match pattern"),
        ([{**WEBHOOK, "severities": ["page"]}], {}, "'critical', 'warning' or 'info'"),
        (
            [{"name": "m", "email": {**FULL[1]["email"], "to": ["not-an-address"]}}],
            {},
            "should match pattern",
        ),
        (
            [{"name": "m", "email": {**FULL[1]["email"], "smarthost": "smtp.example.org"}}],
            {},
            "should match pattern",
        ),
        (
            [{"name": "m", "email": {**FULL[1]["email"], "smarthost": "smtp.example.org:70000"}}],
            {},
            "outside 1-65535",
        ),
        (
            [{"name": "m", "email": {**FULL[1]["email"], "username": None}}],
            {},
            "password_secret needs username",
        ),
        ([WEBHOOK], {"group_wait": "30 seconds"}, "should match pattern"),
        ([WEBHOOK], {"group_by": ["instance"]}, "must include alertname"),
        ([WEBHOOK], {"group_by": ["alert-name"]}, "should match pattern"),
        ([WEBHOOK], {"recievers": []}, "Extra inputs are not permitted"),
    ],
)
def test_bad_input_is_one_clear_error(
    receivers: list[dict[str, Any]], extra: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        am.Config.model_validate({"receivers": receivers, **extra})
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    assert fragment in errors[0]["msg"], errors[0]["msg"]


def test_secrets_are_named_by_the_receivers(full: Cluster) -> None:
    host = full.host("monitoring")
    assert host.alertmanager is not None
    assert host.alertmanager.secrets() == ["alert_webhook_token", "alert_smtp_password"]
    assert full.required_secrets(host)["alert_webhook_token"] == "alertmanager"


# -- rendering -------------------------------------------------------------------------------
def test_lab_points_at_the_sink_with_short_durations(lab: Cluster) -> None:
    host = lab.host("monitoring")
    cfg = host.alertmanager
    assert cfg is not None and cfg.skip is None
    rendered = yaml.safe_load(_files(lab, "alertmanager")[am.CONFIG_FILE])
    [receiver] = rendered["receivers"]
    assert receiver["webhook_configs"] == [
        {"url": "http://10.210.10.1:9099/alerts", "send_resolved": True, "max_alerts": 0}
    ]
    assert rendered["route"]["group_wait"] == "5s"
    assert host.prometheus is not None
    assert host.prometheus.alerts.host_down_for == "30s"


def test_grouping_routes_and_inhibition(full: Cluster) -> None:
    rendered = yaml.safe_load(_files(full, "alertmanager")[am.CONFIG_FILE])
    route = rendered["route"]
    assert route["receiver"] == "oncall"
    assert route["group_by"] == ["alertname", "instance"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "30s",
        "5m",
        "4h",
    )
    assert route["routes"] == [
        {"receiver": "oncall", "matchers": ['severity=~"critical|warning"'], "continue": True},
        {"receiver": "ops-mail", "matchers": ['severity=~"critical"'], "continue": True},
    ]
    assert rendered["inhibit_rules"] == [
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["instance"],
        },
        {
            "source_matchers": ['alertname="HostDown"'],
            "target_matchers": ['alertname!="HostDown"'],
            "equal": ["host"],
        },
    ]
    webhook, mail = rendered["receivers"]
    assert webhook["webhook_configs"][0]["http_config"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": am.secret_file("alert_webhook_token"),
    }
    assert mail["email_configs"][0] == {
        "to": "ops@example.org, lead@example.org",
        "from": "alertmanager@example.org",
        "smarthost": "smtp.example.org:587",
        "require_tls": True,
        "send_resolved": True,
        "auth_username": "alertmanager@example.org",
        "auth_password_file": am.secret_file("alert_smtp_password"),
    }


SANDBOX = "/etc/systemd/system/prometheus-alertmanager.service.d/50-citadel-sandbox.conf"


def test_secret_files_are_masked_private_and_written_first(full: Cluster) -> None:
    rendered = [
        f for f in render_host(full, full.host("monitoring")) if f.component == "alertmanager"
    ]
    dests = [f.spec.dest for f in rendered]
    assert dests == [
        am.secret_file("alert_webhook_token"),
        am.secret_file("alert_smtp_password"),
        am.CONFIG_FILE,
        am.DEFAULTS_FILE,
        SANDBOX,
    ]
    for f in rendered[:2]:
        assert f.spec.secret and f.spec.mode == "0640" and f.spec.group == "prometheus"
        assert f.content == MaskedSecrets()["alert_webhook_token"]  # the mask, no newline
    assert rendered[2].spec.validate == am.CHECK_CONFIG


def test_listens_on_the_host_address_without_gossip(lab: Cluster) -> None:
    args = _files(lab, "alertmanager")[am.DEFAULTS_FILE]
    assert "--web.listen-address=10.210.10.37:9093" in args
    assert "--web.external-url=http://10.210.10.37:9093/" in args
    assert '--cluster.listen-address="' in args
    assert "0.0.0.0" not in args


def _amtool_check(content: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None
    path = tmp_path / "alertmanager.yml"
    path.write_text(content)
    return subprocess.run(
        [AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )


@needs_amtool
@pytest.mark.parametrize("which", ["lab", "full"])
def test_rendered_config_passes_amtool(which: str, lab: Cluster, tmp_path: Path) -> None:
    cluster = (
        lab
        if which == "lab"
        else load_cluster(_inventory(tmp_path / "inv", [_alerting(FULL)])).cluster
    )
    out = _amtool_check(_files(cluster, "alertmanager")[am.CONFIG_FILE], tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_amtool
def test_amtool_refuses_a_broken_config(lab: Cluster, tmp_path: Path) -> None:
    content = _files(lab, "alertmanager")[am.CONFIG_FILE].replace("group_wait:", "group_wiat:")
    assert _amtool_check(content, tmp_path).returncode != 0


# -- Prometheus sends to it ------------------------------------------------------------------
def test_prometheus_alerting_section_and_own_scrape_job(lab: Cluster) -> None:
    config = yaml.safe_load(_files(lab, "prometheus")[prom.CONFIG_FILE])
    assert config["alerting"] == {
        "alertmanagers": [
            {"api_version": "v2", "static_configs": [{"targets": ["10.210.10.37:9093"]}]}
        ]
    }
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "alertmanager"]
    assert job["static_configs"][0]["labels"]["host"] == "monitoring"


@needs_promtool
def test_prometheus_config_with_alerting_passes_promtool(lab: Cluster, tmp_path: Path) -> None:
    assert PROMTOOL is not None
    files = _files(lab, "prometheus")
    for dest, content in files.items():
        target = tmp_path / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if dest == prom.CONFIG_FILE:
            content = content.replace('"/etc/prometheus/', f'"{tmp_path}/etc/prometheus/')
        target.write_text(content)
    out = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / prom.CONFIG_FILE.lstrip("/"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_down_rules_carry_severity_and_instance_and_their_for_settings(lab: Cluster) -> None:
    rules = yaml.safe_load(_files(lab, "prometheus")[prom.ALERTS_FILE])
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    for name in ("HostDown", "TargetDown", "ModelServerDown", "PostgresDown", "RedisDown"):
        assert by_name[name]["for"] == "30s", name  # the lab's override
        assert by_name[name]["labels"]["severity"] in ("critical", "warning")
    # HostDown and TargetDown come from `up`, which carries instance (and host) of the target.
    assert by_name["HostDown"]["expr"].startswith("up{")
    assert by_name["TargetDown"]["expr"].startswith("up{")


def test_production_durations_are_the_defaults(production: Cluster) -> None:
    rules = yaml.safe_load(_files(production, "prometheus")[prom.ALERTS_FILE])
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert (by_name["HostDown"]["for"], by_name["TargetDown"]["for"]) == ("2m", "5m")
    assert by_name["ModelServerDown"]["for"] == "2m"


# -- firewall ----------------------------------------------------------------------------------
def test_port_opens_to_monitoring_and_allowed_clients_only(lab: Cluster, tmp_path: Path) -> None:
    host = lab.host("monitoring")
    pairs = firewall.allowed_pairs(lab, host)
    # Prometheus on the monitoring host reaches it locally; nobody else unless allowed_clients.
    assert pairs[("tcp", 9093)] == frozenset()
    more = load_cluster(
        _inventory(tmp_path, [_alerting(FULL, allowed_clients=["gateway", "10.9.0.0/16"])])
    ).cluster
    got = firewall.allowed_pairs(more, more.host("monitoring"))[("tcp", 9093)]
    assert isinstance(got, frozenset)
    assert {str(a) for a in got} == {"192.168.10.39", "10.9.0.0/16"}


def test_production_keeps_it_to_the_monitoring_host(production: Cluster) -> None:
    got = firewall.allowed_pairs(production, production.host("monitoring"))[("tcp", 9093)]
    assert got == frozenset()  # engineers' networks: alertmanager.allowed_clients


# -- the deploy --------------------------------------------------------------------------------
FACTS: dict[Any, Any] = {"LinuxDistribution": h.DISTROS["debian13"]}


def test_deploy_installs_checks_then_reloads_or_restarts_on_change(lab: Cluster) -> None:
    ctx = h.context("inventory/lab.yml", "monitoring")
    assert ctx.host.alertmanager is not None
    run = h.run(deploy.apply, FACTS, ctx, ctx.host.alertmanager)
    assert [(op.name, op.conditional) for op in run.ops] == [
        ("alertmanager: install | Install prometheus-alertmanager", False),
        (f"alertmanager: configure | Directory {am.STORAGE_DIR}", False),
        (f"alertmanager: configure | Stage {am.CONFIG_FILE}", False),
        (f"alertmanager: configure | Check {am.CONFIG_FILE} with amtool", True),
        (f"alertmanager: configure | Write {am.CONFIG_FILE}", False),
        (f"alertmanager: configure | Write {am.DEFAULTS_FILE}", False),
        (f"alertmanager: configure | Write {SANDBOX}", False),
        (f"alertmanager: configure | Reload systemd units ({SANDBOX} changed)", True),
        ("alertmanager: activate | Run prometheus-alertmanager", False),
        (
            "alertmanager: activate | Restart prometheus-alertmanager "
            "(listen address or sandbox changed)",
            True,
        ),
        (
            "alertmanager: activate | Reload prometheus-alertmanager "
            "(configuration or receiver secret changed)",
            True,
        ),
    ]
    check = run.op("Check /etc/prometheus/alertmanager.yml").text()
    assert "amtool check-config /var/lib/citadel/staging/etc__prometheus__alertmanager.yml" in check
    assert "--no-install-recommends" in run.op("Install").text()


def test_deploy_writes_secret_files_when_receivers_name_secrets(tmp_path: Path) -> None:
    loaded = load_cluster(_inventory(tmp_path, [_alerting(FULL)]), secrets=MaskedSecrets())
    ctx = DeployContext(loaded, loaded.cluster.host("monitoring"))
    assert ctx.host.alertmanager is not None
    run = h.run(deploy.apply, FACTS, ctx, ctx.host.alertmanager)
    for name in ("alert_webhook_token", "alert_smtp_password"):
        assert run.has(f"Write {am.secret_file(name)}")
    assert run.index(f"Write {am.secret_file('alert_smtp_password')}") < run.index(
        f"Stage {am.CONFIG_FILE}"
    )
