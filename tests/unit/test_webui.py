"""OpenWebUI: rendered env/unit/site/admin file, its PostgreSQL database, the monitoring banner,
the lab's Debian 12 host, and the deploy's commands planned by pyinfra against canned facts
(nothing connects, nothing is downloaded: the controller's wheels are stubbed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import deploy_harness as h
import pytest
from pydantic import ValidationError

from citadel.components import firewall, webui
from citadel.loader import Loaded, load_cluster
from citadel.render import HostView, component_files
from citadel.secrets import MASK, MaskedSecrets, SecretStore
from deploys import webui as deploy

SECRETS = {
    "webui_secret_key": "s3cret-key-for-tests",
    "webui_gateway_token": "tok-for-tests",
    "webui_admin_password": "admin-pw-for-tests",
    "postgres_openwebui_password": "pg/pw:for@tests",
}


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    return load_cluster("inventory/production.yml", secrets=SecretStore(SECRETS))


def rendered(loaded: Loaded, masked: bool = True, host: str = "webui") -> dict[str, Any]:
    target = loaded.cluster.host(host)
    view = HostView(loaded.cluster, target, MaskedSecrets() if masked else loaded.secrets)
    assert target.webui is not None
    return {f.spec.dest: f for f in component_files("webui", view, target.webui)}


def env_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def test_env_points_at_the_gateway_with_a_service_token(loaded: Loaded) -> None:
    env = rendered(loaded, masked=False)[webui.ENV_FILE]
    assert env.spec.secret and env.spec.mode == "0640" and env.spec.group == "open-webui"
    values = env_values(env.content)
    assert values["OPENAI_API_BASE_URL"] == "http://192.168.10.39:8000/v1"
    assert values["OPENAI_API_KEY"] == "tok-for-tests"
    assert values["RAG_OPENAI_API_BASE_URL"] == "http://192.168.10.39:8000/v1"
    assert values["RAG_EMBEDDING_ENGINE"] == "openai"
    assert values["ENABLE_OLLAMA_API"] == "False"
    assert values["ENABLE_DIRECT_CONNECTIONS"] == "False"
    assert values["ENABLE_FORWARD_USER_INFO_HEADERS"] == "True"  # the gateway's per-user limits
    assert values["WEBUI_SECRET_KEY"] == "s3cret-key-for-tests"
    assert values["ENABLE_PERSISTENT_CONFIG"] == "False"
    assert values["DATA_DIR"] == "/var/lib/open-webui/data"
    assert values["WEBUI_URL"] == "http://192.168.10.38"


def test_nothing_from_a_hub_and_no_telemetry(loaded: Loaded) -> None:
    values = env_values(rendered(loaded)[webui.ENV_FILE].content)
    assert values["OFFLINE_MODE"] == "True"
    assert values["HF_HUB_OFFLINE"] == "1" and values["TRANSFORMERS_OFFLINE"] == "1"
    assert values["ANONYMIZED_TELEMETRY"] == "false" and values["SCARF_NO_ANALYTICS"] == "true"


def test_state_in_its_own_postgres_database(loaded: Loaded) -> None:
    values = env_values(rendered(loaded, masked=False)[webui.ENV_FILE].content)
    # the password URL-quoted; the data host's address and port
    assert values["DATABASE_URL"] == (
        "postgresql://openwebui:pg%2Fpw%3Afor%40tests@192.168.10.35:5432/openwebui"
    )
    cfg = loaded.cluster.host("webui").webui
    assert cfg is not None and cfg.requirement == "open-webui[postgres]==0.6.32"
    assert "postgres_openwebui_password" in cfg.secrets()


def test_a_database_no_postgres_host_declares_is_refused(loaded: Loaded) -> None:
    host = loaded.cluster.host("webui")
    assert host.webui is not None
    cfg = host.webui.model_copy(update={"database": "nowhere"})
    view = HostView(loaded.cluster, host, MaskedSecrets())
    with pytest.raises(ValueError, match=r"not among any postgres host's postgres\.databases"):
        webui.files(view, cfg)
    sqlite = host.webui.model_copy(update={"database": None})
    assert webui.database_url(view, sqlite) == ""
    assert sqlite.requirement == "open-webui==0.6.32"


def test_signup_closed_but_for_the_first_admin(loaded: Loaded) -> None:
    files = rendered(loaded, masked=False)
    values = env_values(files[webui.ENV_FILE].content)
    assert values["ENABLE_SIGNUP"] == "False" and values["ENABLE_INITIAL_ADMIN_SIGNUP"] == "True"
    admin = files[webui.ADMIN_FILE]
    assert admin.spec.secret and admin.spec.mode == "0600" and admin.spec.on_change == "none"
    assert json.loads(admin.content) == {
        "name": "citadel admin",
        "email": "admin@citadel.local",
        "password": "admin-pw-for-tests",
    }


def test_preview_masks_the_secrets(loaded: Loaded) -> None:
    files = rendered(loaded)
    for f in files.values():
        assert not any(value in f.content for value in SECRETS.values()), f.spec.dest
    assert MASK in files[webui.ADMIN_FILE].content


def test_banner_links_to_the_monitoring_the_inventory_deploys(loaded: Loaded) -> None:
    values = env_values(rendered(loaded)[webui.ENV_FILE].content)
    raw = values["WEBUI_BANNERS"]
    assert raw.startswith("'") and raw.endswith("'")  # one word for systemd's EnvironmentFile
    [banner] = json.loads(raw[1:-1])
    assert banner["id"] == webui.BANNER_ID and not banner["dismissible"]
    assert banner["content"] == (
        "Cluster monitoring: [Grafana dashboards](http://192.168.10.37:3000/dashboards) · "
        "[Prometheus alerts](http://192.168.10.37:9090/alerts) · "
        "[Gateway health](http://192.168.10.39:8000/health)"
    )
    lab = load_cluster("inventory/lab.yml", secrets=MaskedSecrets()).cluster
    view = HostView(lab, lab.host("webui"), MaskedSecrets())
    # the lab skips Grafana (lab-no-vendor-downloads): no link to what does not run
    assert webui.monitoring_links(view) == [
        ("Prometheus alerts", "http://10.210.10.37:9090/alerts"),
        ("Gateway health", "http://10.210.10.39:8000/health"),
    ]


def test_unit_listens_on_loopback_only_under_the_sandbox(loaded: Loaded) -> None:
    unit = rendered(loaded)[webui.UNIT].content
    assert (
        "ExecStart=/opt/open-webui/venv/bin/open-webui serve --host 127.0.0.1 --port 8080" in unit
    )
    assert "User=open-webui" in unit and "EnvironmentFile=/etc/open-webui/open-webui.env" in unit
    assert "ReadWritePaths=/var/lib/open-webui" in unit and "ProtectSystem=strict" in unit
    assert "# Sandbox: templates/_shared/sandbox.j2" in unit


def test_site_proxies_port_80_with_websockets(loaded: Loaded) -> None:
    site = rendered(loaded)[webui.SITE]
    assert site.spec.validate == f"{webui.NGINX_CHECK} {{path}}"
    assert site.spec.on_change == "reload"  # nginx reloads; OpenWebUI does not restart
    text = site.content
    assert "listen 80 default_server;" in text
    assert "proxy_pass http://127.0.0.1:8080;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $citadel_webui_connection;" in text


@pytest.mark.parametrize("python", ["python3.13", "python3.10", "python", "/usr/bin/python3.13"])
def test_unsupported_python_is_refused(python: str) -> None:
    with pytest.raises(ValidationError, match=r"3\.11"):
        webui.Config(python=python)


def test_pins_must_be_exact() -> None:
    with pytest.raises(ValidationError, match="name==version"):
        webui.Config(constraints=["torch>=2"])
    with pytest.raises(ValidationError, match="name==version"):
        webui.Config(source_builds=["peewee"])


def test_lab_runs_it_on_debian_12_with_port_80_open() -> None:
    lab = load_cluster("inventory/lab.yml").cluster
    host = lab.host("webui")
    assert host.distribution == "debian-12"
    assert host.webui is not None and host.webui.skip is None
    assert host.webui.pip_extra_index_urls == []  # this machine's pip has the CPU torch
    assert host.webui.constraints == ["torch==2.13.0+cpu"]
    assert [p.number for _, p in host.ports()] == [22, 9100, 80]
    rule = next(r for r in firewall.rules(lab, host) if r.port == 80)
    assert rule.sources == "any"


def test_production_takes_the_cpu_torch_from_pytorchs_index() -> None:
    cfg = load_cluster("inventory/production.yml").cluster.host("webui").webui
    assert cfg is not None
    assert cfg.pip_extra_index_urls == ["https://download.pytorch.org/whl/cpu"]
    assert deploy.controller_wheels.__name__  # the controller, never the host, downloads


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here")
def test_site_passes_nginx_t(loaded: Loaded, tmp_path: Path) -> None:
    files = rendered(loaded)
    check = tmp_path / "check-nginx"
    check.write_text(files[webui.NGINX_CHECK].content)
    check.chmod(0o755)
    site = tmp_path / "webui.conf"
    site.write_text(files[webui.SITE].content)
    proc = subprocess.run([str(check), str(site)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    site.write_text(files[webui.SITE].content.replace("proxy_pass", "proxy_passs"))
    assert subprocess.run([str(check), str(site)], capture_output=True).returncode != 0


# -- the deploy's commands (pyinfra plans against canned facts) ---------------------------------
PYTHON_FACT = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"
MARKER_FACT = f"cat {webui.VENV}/.citadel-wheels 2>/dev/null || true"


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    wheel = tmp_path / "open_webui-0.6.32-py3-none-any.whl"
    dep = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    for path in (wheel, dep):
        path.write_bytes(path.name.encode())
    seen: dict[str, Any] = {}

    def fake(cfg: webui.Config, python_version: str) -> tuple[Path, list[Path]]:
        seen["python"] = python_version
        return wheel, [dep]

    monkeypatch.setattr(deploy, "controller_wheels", fake)
    return {"wheel": wheel, "dep": dep, "seen": seen}


def _run(inventory: str, facts: dict[Any, Any]) -> h.Run:
    ctx = h.context(inventory, "webui")
    return h.run(
        deploy.apply, {"LinuxDistribution": h.DISTROS["debian12"], **facts}, ctx, ctx.host.webui
    )


def test_command_sequence_on_a_fresh_host(artifacts: dict[str, Any]) -> None:
    run = _run("inventory/lab.yml", {("Command", PYTHON_FACT): "3.11"})
    assert artifacts["seen"]["python"] == "3.11"
    order = [
        "Install nginx, python3-venv, curl",
        "User open-webui",
        "OpenWebUI: virtualenv /opt/open-webui/venv",
        "OpenWebUI: upload torch",
        "OpenWebUI: pip install",
        "Remove nginx's default site",
        f"Write {webui.ENV_FILE}",
        f"Write {webui.UNIT}",
        f"Write {webui.ADMIN_FILE}",
        f"Check {webui.SITE}",
        f"Write {webui.SITE}",
        "Reload systemd units (open-webui unit)",
        "Restart open-webui",
        "Run open-webui",
        "Wait until OpenWebUI answers /health",
        "Create the admin account",
        "Run nginx",
        "Reload nginx",
    ]
    assert [run.index(o) for o in order] == sorted(run.index(o) for o in order)
    assert run.op("virtualenv").commands == ["python3 -m venv /opt/open-webui/venv"]
    pip = run.op("OpenWebUI: pip install").text()
    assert "/opt/open-webui/venv/bin/pip install --no-index" in pip
    assert f"--find-links {webui.STAGE} 'open-webui[postgres]==0.6.32'" in pip
    assert "open-webui: reload" not in " ".join(run.names()).lower()  # nothing to reload
    wait = run.op("Wait until OpenWebUI answers /health")
    assert wait.conditional and "http://127.0.0.1:8080/health" in wait.text()
    admin = run.op("Create the admin account")
    assert admin.conditional
    assert f"--data-binary @{webui.ADMIN_FILE} http://127.0.0.1:8080/api/v1/auths/signup" in (
        admin.text()
    )
    assert "onboarding" in admin.text()
    assert run.op("Reload nginx").conditional
    # no secret on any command line (file uploads carry them, 0600/0640)
    assert MASK not in "\n".join(run.commands())


def test_second_converge_uploads_nothing_and_runs_no_pip(artifacts: dict[str, Any]) -> None:
    from deploys._venv import fingerprint

    ctx = h.context("inventory/lab.yml", "webui")
    assert ctx.host.webui is not None
    req = ctx.host.webui.requirement
    marker = fingerprint(req, [artifacts["wheel"], artifacts["dep"]])
    run = _run(
        "inventory/lab.yml", {("Command", PYTHON_FACT): "3.11", ("Command", MARKER_FACT): marker}
    )
    assert not run.has("upload") and not run.has("pip install")


@pytest.mark.parametrize(("found", "why"), [("3.13", "is Python 3.13"), ("", "is not installed")])
def test_a_python_open_webui_cannot_run_on_stops_with_one_line(
    artifacts: dict[str, Any], found: str, why: str
) -> None:
    from citadel.artifacts import ArtifactUnavailable

    ctx = h.context("inventory/production.yml", "webui")
    assert ctx.host.webui is not None
    cfg = ctx.host.webui.model_copy(update={"python": "python3.12"})
    fact = "python3.12 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"
    with pytest.raises(ArtifactUnavailable, match=f"python3.12 on webui {why}: open-webui 0.6.32"):
        h.run(deploy.check_python, {("Command", fact): found}, ctx, cfg)


def test_production_on_debian_13_is_refused_before_any_operation() -> None:
    from citadel.artifacts import ArtifactUnavailable

    ctx = h.context("inventory/production.yml", "webui")
    with pytest.raises(ArtifactUnavailable, match=r"python3 on webui is Python 3\.13"):
        h.run(deploy.check_python, {("Command", PYTHON_FACT): "3.13"}, ctx, ctx.host.webui)
