"""webui: OpenWebUI on loopback behind nginx on port 80, models only through the gateway, its
state in its own PostgreSQL database; a chat through its own API with the admin's session, and
the whole thing once more in a real browser (tests/verify/webui_browser.py, screenshots in
reports/)."""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request
from typing import Any

from citadel.components import webui
from tests.verify.test_edge_tls import SANDBOX_EXPOSURE as NGINX_SANDBOX_EXPOSURE
from tests.verify.test_gateway import assert_sandboxed
from tests.verify.webui_browser import chat_in_browser

COMPONENT = "webui"
PROMPT = "What is the capital of France? Answer in one sentence."


def _url(target: Any, path: str = "") -> str:
    cfg = target.host.webui
    port = "" if cfg.port == 80 else f":{cfg.port}"
    return f"http://{target.host.address}{port}{path}"


def _api(target: Any, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """OpenWebUI's own API through nginx on port 80, from this machine."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(_url(target, path), data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=300) as rsp:
            return json.loads(rsp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from None


def _admin_token(target: Any) -> str:
    """Sign in as the admin the deploy created (secret webui_admin_password)."""
    cfg = target.host.webui
    rsp = _api(
        target,
        "POST",
        "/api/v1/auths/signin",
        {"email": cfg.admin_email, "password": target.secret("webui_admin_password")},
    )
    assert rsp["role"] == "admin", rsp.get("role")
    return str(rsp["token"])


def _chat_model(target: Any) -> str:
    return next(h.model.served_name for h in target.cluster.model_hosts("chat") if h.model)


def test_service_runs_on_loopback_only(target):
    cfg = target.host.webui
    assert target.infra.service("open-webui").is_running
    assert target.infra.service("open-webui").is_enabled
    assert target.infra.socket(f"tcp://127.0.0.1:{cfg.internal_port}").is_listening
    assert not target.infra.socket(f"tcp://0.0.0.0:{cfg.internal_port}").is_listening


def test_service_is_sandboxed(target):
    assert_sandboxed(target.infra, "open-webui")


def test_installed_offline_with_the_cpu_torch_and_no_cuda(target):
    pip = f"{webui.VENV}/bin/pip"
    frozen = target.infra.check_output(f"{pip} list --format=freeze --disable-pip-version-check")
    names = {line.split("==")[0].lower(): line.split("==")[1] for line in frozen.split()}
    assert names["open-webui"] == target.host.webui.version
    for pin in target.host.webui.constraints:
        name, version = pin.split("==")
        assert names.get(name.lower()) == version, f"{name}: {names.get(name.lower())}"
    cuda = sorted(n for n in names if n.startswith(("nvidia-", "triton", "cuda")))
    assert not cuda, f"CUDA packages in the venv: {cuda}"


def test_settings_file_is_private_and_offline(target):
    env = target.infra.file(webui.ENV_FILE)
    assert env.mode == 0o640 and env.user == "root" and env.group == "open-webui"
    text = env.content_string
    for line in (
        "ENABLE_PERSISTENT_CONFIG=False",
        "OFFLINE_MODE=True",
        "HF_HUB_OFFLINE=1",
        "RAG_EMBEDDING_ENGINE=openai",
        "ENABLE_OLLAMA_API=False",
        "ENABLE_SIGNUP=False",
    ):
        assert line in text.splitlines(), line
    admin = target.infra.file(webui.ADMIN_FILE)
    assert admin.mode == 0o600 and admin.user == "root"


def test_port_80_answers_through_nginx_from_another_host(target):
    client = next(h.name for h in target.cluster.hosts if h.name != target.host.name)
    url = _url(target)
    code = target.on(client).check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --max-time 10 {url}/health"
    )
    assert code == "200"
    page = target.on(client).check_output(f"curl -s --max-time 10 {url}/")
    assert "<html" in page.lower()


def test_signup_is_closed_after_the_admin(target):
    config = _api(target, "GET", "/api/config")
    assert not config.get("onboarding"), "no account yet: the deploy did not create the admin"
    request = urllib.request.Request(
        _url(target, "/api/v1/auths/signup"),
        data=json.dumps({"name": "x", "email": "intruder@example.org", "password": "x"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
    else:
        raise AssertionError("a second sign-up was accepted")


def test_models_come_from_the_gateway(target):
    token = _admin_token(target)
    models = {m["id"]: m for m in _api(target, "GET", "/api/models", token=token)["data"]}
    served = {h.model.served_name for h in target.cluster.model_hosts() if h.model}
    assert served <= set(models), f"OpenWebUI lists {sorted(models)}"
    assert all(m.get("owned_by") == "openai" for m in models.values()), "a non-gateway source"


def test_chat_through_the_ui_api_with_the_admin_session(target):
    token = _admin_token(target)
    model = _chat_model(target)
    rsp = _api(
        target,
        "POST",
        "/api/chat/completions",
        {"model": model, "stream": False, "messages": [{"role": "user", "content": PROMPT}]},
        token=token,
    )
    assert rsp["model"] == model
    assert rsp["choices"][0]["message"]["content"].strip(), rsp


def test_state_lives_in_its_own_postgres_database(target):
    cfg = target.host.webui
    assert cfg.database, "webui.database is not set: OpenWebUI keeps SQLite on the host"
    data = next(
        h
        for h in target.cluster.with_role("postgres")
        if h.postgres and cfg.database in {d.name for d in h.postgres.databases}
    )
    assert data.postgres is not None
    sql = "SELECT email || ':' || role FROM \"user\" ORDER BY created_at"
    out = target.on(data.name).check_output(
        f"runuser -u postgres -- psql -X -A -t -p {data.postgres.port} -d {cfg.database} "
        f"-c {shlex.quote(sql)}"
    )
    assert f"{cfg.admin_email}:admin" in out.split()
    sqlite = target.infra.file(f"{webui.DATA_DIR}/webui.db")
    assert not sqlite.exists or sqlite.size == 0, "OpenWebUI wrote its SQLite file too"


def test_a_chat_in_the_browser_answers_and_stays_in_the_history(target):
    """Headless Chromium: sign in as the admin, pick the chat model, send a message, read the
    model's answer (reports/webui-chat.png), reload, open the conversation from the history
    (reports/webui-history.png); the start page's banner links to the monitoring."""
    from citadel.render import HostView

    cfg = target.host.webui
    model = _chat_model(target)
    result = chat_in_browser(
        _url(target), cfg.admin_email, target.secret("webui_admin_password"), model, PROMPT
    )
    assert result.answer, f"no answer shown ({result.screenshot})"
    assert result.stored.get("model") == model
    assert not result.stored.get("error"), result.stored.get("error")
    assert str(result.stored.get("content", "")).strip(), result.stored
    assert result.screenshot.is_file() and result.reopened.is_file()
    view = HostView(target.cluster, target.host, target.loaded.secrets)
    for label, url in webui.monitoring_links(view):
        assert result.links.get(url) == label, f"no {label} link on the start page"


def test_the_monitoring_links_answer(target):
    """Each page the banner (WEBUI_BANNERS) links to answers from this machine, the way a UI
    user's browser reaches it."""
    from citadel.render import HostView

    view = HostView(target.cluster, target.host, target.loaded.secrets)
    links = webui.monitoring_links(view)
    assert links, "no monitoring link at all"
    banners = _api(target, "GET", "/api/v1/configs/banners", token=_admin_token(target))
    text = " ".join(b["content"] for b in banners)
    for label, url in links:
        assert f"[{label}]({url})" in text, f"{label} is not in the banner"
        with urllib.request.urlopen(url, timeout=10) as rsp:
            assert rsp.status == 200, f"{url}: {rsp.status}"


def test_nginx_is_sandboxed(target):
    """The site's nginx: Debian's unit with the same drop-in as edge_tls's (its bound)."""
    assert_sandboxed(target.infra, "nginx", NGINX_SANDBOX_EXPOSURE)
