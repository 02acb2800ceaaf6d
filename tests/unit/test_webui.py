"""OpenWebUI (production only; the lab skips it): rendered unit, env, nginx site, and the
command sequence of its deploy, planned by pyinfra against canned facts (nothing connects)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from citadel.components import webui
from citadel.loader import Loaded, load_cluster
from citadel.render import HostView, component_files
from citadel.secrets import MaskedSecrets, SecretStore

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"webui_secret_key": "s3cret-key-for-tests", "webui_gateway_token": "tok-for-tests"}


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    return load_cluster("inventory/production.yml", secrets=SecretStore(SECRETS))


def rendered(loaded: Loaded, masked: bool = True) -> dict[str, Any]:
    host = loaded.cluster.host("webui")
    view = HostView(loaded.cluster, host, MaskedSecrets() if masked else loaded.secrets)
    assert host.webui is not None
    return {f.spec.dest: f for f in component_files("webui", view, host.webui)}


def test_env_points_at_the_gateway_with_a_service_token(loaded: Loaded) -> None:
    env = rendered(loaded, masked=False)[webui.ENV_FILE]
    assert env.spec.secret and env.spec.mode == "0640" and env.spec.group == "open-webui"
    values = dict(
        line.split("=", 1) for line in env.content.splitlines() if line and line[0] != "#"
    )
    assert values["OPENAI_API_BASE_URL"] == "http://192.168.10.39:8000/v1"
    assert values["OPENAI_API_KEY"] == "tok-for-tests"
    assert values["WEBUI_SECRET_KEY"] == "s3cret-key-for-tests"
    assert values["ENABLE_PERSISTENT_CONFIG"] == "False"
    assert values["DATA_DIR"] == "/var/lib/open-webui/data"
    assert values["WEBUI_URL"] == "http://192.168.10.38"


def test_preview_masks_the_secrets(loaded: Loaded) -> None:
    env = rendered(loaded)[webui.ENV_FILE].content
    assert "s3cret-key-for-tests" not in env and "tok-for-tests" not in env


def test_unit_listens_on_loopback_only(loaded: Loaded) -> None:
    unit = rendered(loaded)[webui.UNIT].content
    assert (
        "ExecStart=/opt/open-webui/venv/bin/open-webui serve --host 127.0.0.1 --port 8080" in unit
    )
    assert "User=open-webui" in unit and "EnvironmentFile=/etc/open-webui/open-webui.env" in unit
    assert "ReadWritePaths=/var/lib/open-webui" in unit and "ProtectSystem=strict" in unit


def test_site_proxies_port_80_with_websockets(loaded: Loaded) -> None:
    site = rendered(loaded)[webui.SITE]
    assert site.spec.validate == f"{webui.NGINX_CHECK} {{path}}"
    text = site.content
    assert "listen 80 default_server;" in text
    assert "proxy_pass http://127.0.0.1:8080;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $citadel_webui_connection;" in text


@pytest.mark.parametrize("python", ["python3.13", "python3.10", "python3", "/usr/bin/python3.13"])
def test_unsupported_python_is_refused(python: str) -> None:
    with pytest.raises(ValidationError, match=r"3\.11"):
        webui.Config(python=python)


def test_supported_pythons() -> None:
    assert webui.Config(python="/opt/python/bin/python3.11").python_version() == "3.11"
    assert webui.Config().python_version() == "3.12"


def test_lab_skips_it_with_one_reason() -> None:
    lab = load_cluster("inventory/lab.yml").cluster
    cfg = lab.host("webui").webui
    assert cfg is not None and cfg.skip is not None and cfg.skip.startswith("lab: ")
    assert [p.number for _, p in lab.host("webui").ports()] == [22, 9100]  # port 80 stays shut


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


# -- command sequence (pyinfra plans against canned facts) --------------------------------------
def plan(loaded: Loaded, facts: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    monkeypatch.syspath_prepend(str(ROOT))
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api import host as host_api
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.context import ctx_host, ctx_state

    from deploys import webui as deploy
    from deploys._context import DeployContext

    def fake_fact(self: Any, cls: type, *args: Any, **kwargs: Any) -> Any:
        return facts.get(cls.__name__, cls().default())

    monkeypatch.setattr(host_api.Host, "get_fact", fake_fact)
    host = loaded.cluster.host("webui")
    state = State(Inventory((["@local"], {})), Config())
    connect_all(state)
    add_deploy(state, deploy.apply, DeployContext(loaded, host), host.webui)
    (pyinfra_host,) = list(state.inventory)

    def steps() -> Iterator[tuple[str, list[str]]]:
        for op_hash in state.get_op_order():
            name = next(iter(state.op_meta[op_hash].names))
            data = state.ops[pyinfra_host][op_hash]
            with ctx_state.use(state), ctx_host.use(pyinfra_host):
                yield name, [str(c) for c in data.command_generator()]

    return list(steps())


FRESH = {"Which": "/usr/bin/python3.12", "Os": "Linux", "Kernel": "Linux"}


def test_command_sequence_on_a_fresh_host(loaded: Loaded, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = plan(loaded, FRESH, monkeypatch)
    names = [n.split(" | ", 1)[1] for n, _ in steps]
    assert names == [
        "Install nginx",
        "Group open-webui",
        "User open-webui (no login)",
        "Directory /var/lib/open-webui",
        "Directory /var/lib/open-webui/data",
        "Directory /var/lib/open-webui/static",
        "Directory /var/lib/open-webui/cache",
        "Directory /etc/open-webui",
        "venv /opt/open-webui/venv (python3.12)",
        "open-webui==0.6.32 in /opt/open-webui/venv",
        "Remove nginx's default site (port 80 is OpenWebUI's)",
        "Write /etc/open-webui/open-webui.env",
        "Write /etc/systemd/system/open-webui.service",
        "Write /usr/local/lib/citadel/check-nginx",
        "Stage /etc/nginx/conf.d/citadel-webui.conf",
        "Check /etc/nginx/conf.d/citadel-webui.conf with /usr/local/lib/citadel/check-nginx",
        "Write /etc/nginx/conf.d/citadel-webui.conf",
        "Reload systemd units",
        "Restart open-webui (package, unit or settings changed)",
        "Run open-webui",
        "Run nginx",
        "Reload nginx (site changed, checked with nginx -t)",
    ]
    cmds = dict((n.split(" | ", 1)[1], c) for n, c in steps)
    assert cmds["venv /opt/open-webui/venv (python3.12)"] == [
        "python3.12 -m venv /opt/open-webui/venv"
    ]
    assert cmds["open-webui==0.6.32 in /opt/open-webui/venv"] == [
        "/opt/open-webui/venv/bin/pip install open-webui==0.6.32"
    ]
    assert "useradd" in cmds["User open-webui (no login)"][0]
    assert "-r" in cmds["User open-webui (no login)"][0].split()
    check = cmds[
        "Check /etc/nginx/conf.d/citadel-webui.conf with /usr/local/lib/citadel/check-nginx"
    ]
    assert check[0].startswith("/usr/local/lib/citadel/check-nginx /var/lib/citadel/staging/")
    # No secret in any command line.
    assert not any(s in " ".join(c) for _, c in steps for s in SECRETS.values())


def test_missing_python_stops_the_component_with_one_line(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    from citadel.artifacts import ArtifactUnavailable

    with pytest.raises(ArtifactUnavailable, match=r"python3\.12 is not installed on webui"):
        plan(loaded, {**FRESH, "Which": None}, monkeypatch)
