"""Issue 15, point 3: OpenWebUI's users as subjects of their own (``auth.forwarders``).

The gateway serves on a unix socket behind its front, as in production: the front's X-Real-IP
names the client. OpenWebUI calls with its service token and names the signed-in user in
``X-OpenWebUI-User-Id``; that header counts only with that token from the webui's address.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import GatewayFactory, Gw, Tokens, documented_error, wait_until

pytestmark = pytest.mark.gateway

WEBUI = "198.51.100.38"  # the webui host's address, as the front reports it
ELSEWHERE = "203.0.113.9"
USER = "x-openwebui-user-id"
CHAT = {"model": "llama-3-chat", "messages": [{"role": "user", "content": "hi"}]}
BURST = 2  # chat: 2 at once, then one a minute: the third request of a user is refused


@dataclass
class Front:
    """The gateway on its socket, reached as the front would: X-Real-IP set per request."""

    gw: Gw
    sock: Path
    token: str
    client: httpx.Client
    redis_url: str

    def chat(self, user: str | bytes | None = None, *, real_ip: str | None = WEBUI, **kw: Any):
        headers = dict(kw.pop("headers", {}))
        headers.setdefault("Authorization", f"Bearer {self.token}")
        if real_ip is not None:
            headers["X-Real-IP"] = real_ip
        if user is not None:
            headers[USER] = user
        return self.client.post("/v1/chat/completions", json=CHAT, headers=headers, **kw)

    def access(self, request_id: str) -> dict[str, Any]:
        """The access line of one request (waits for the batched writer)."""

        def line() -> dict[str, Any] | None:
            for raw in self.gw.log().splitlines():
                if request_id in raw and '"msg":"access"' in raw:
                    return dict(json.loads(raw))
            return None

        found: dict[str, Any] = wait_until(line, 5, f"the access line of {request_id}")
        return found

    def raw(self, head: bytes) -> bytes:
        """One request written by hand on the socket (what no HTTP client would send)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.sock))
            s.sendall(head)
            out = b""
            while b"\r\n\r\n" not in out:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            return out


@pytest.fixture(scope="module")
def front(gateways: GatewayFactory, cfg: dict[str, Any], workdir: Path) -> Iterator[Front]:
    token = "webui-" + uuid.uuid4().hex  # as the lab's secrets are made: URL-safe, 16+
    token_file = workdir / "webui.token"
    token_file.write_text(token + "\n")
    sock = workdir / "gw-fwd" / "gateway.sock"
    sock.parent.mkdir(exist_ok=True)
    c = copy.deepcopy(cfg)
    c["listen"] = {"unix_socket": str(sock)}
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    c["auth"]["forwarders"] = {
        "webui": {"token_file": str(token_file), "addresses": [f"{WEBUI}/32"]}
    }
    c["rate_limits"] = {"chat_completions": {"per_minute": 1, "burst": BURST}}
    # its own Redis database: the tiny chat limit must not spend other gateways' buckets
    c["redis"] = dict(c["redis"], url=c["redis"]["url"].rsplit("/", 1)[0] + "/7")
    c["metrics"] = {"allow": ["127.0.0.1/32"]}
    gw = gateways(c, "forwarded", wait=False)
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://gw", timeout=15
    )
    try:
        wait_until(lambda: client.get("/health").status_code == 200, 60, "the gateway's socket")
        yield Front(gw, sock, token, client, c["redis"]["url"])
    finally:
        client.close()
        gw.stop()


def _user() -> str:
    return str(uuid.uuid4())  # OpenWebUI's user ids are UUIDs


def test_two_ui_users_each_get_their_own_limit(front: Front) -> None:
    alice, bob = _user(), _user()
    codes = [front.chat(alice).status_code for _ in range(BURST + 1)]
    assert codes == [200] * BURST + [429]
    refused = front.chat(alice)
    err = documented_error(refused, 429, "RATE_LIMITED")
    assert refused.headers["retry-after"]
    # bob, through the same service token, is untouched by alice's exhausted bucket
    r = front.chat(bob)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining"] == str(BURST - 1)
    # and so is the service's own subject (a request naming no user)
    assert front.chat(None).status_code == 200
    # the access log tells them apart
    line = front.access(err["request_id"])
    assert line["subject"] == f"webui:{alice}" and line["forwarder"] == "webui"
    assert line["status"] == 429 and line["client"] == WEBUI
    assert front.access(r.headers["x-request-id"])["subject"] == f"webui:{bob}"


def test_a_request_for_a_model_nobody_serves_spends_the_users_bucket(front: Front) -> None:
    # what tests/verify/test_gateway.py relies on to exhaust a user's limit without inference
    alice = _user()
    headers = {"Authorization": f"Bearer {front.token}", "X-Real-IP": WEBUI, USER: alice}
    body = dict(CHAT, model="verify-no-such-model")
    codes = [
        front.client.post("/v1/chat/completions", json=body, headers=headers).status_code
        for _ in range(BURST + 1)
    ]
    assert codes == [503] * BURST + [429]
    assert front.chat(_user()).status_code == 200


def test_no_user_header_is_the_service_subject(front: Front) -> None:
    r = front.chat(None)
    assert r.status_code in (200, 429), r.text  # the service's bucket is shared by tests
    line = front.access(r.headers["x-request-id"])
    assert line["subject"] == "webui" and line["forwarder"] == "webui"


def test_the_header_with_another_token_does_not_change_the_subject(
    front: Front, token: Tokens
) -> None:
    alice = _user()
    while front.chat(alice).status_code != 429:
        pass
    # a JWT holder (from the webui host or anywhere) naming alice: its own subject, its own
    # bucket: neither alice's exhausted one nor a new one of alice's
    for where in (WEBUI, ELSEWHERE):
        sub = "user_" + uuid.uuid4().hex[:10]
        r = front.chat(alice, real_ip=where, headers=token.headers(sub))
        assert r.status_code == 200, r.text
        line = front.access(r.headers["x-request-id"])
        assert line["subject"] == sub and "forwarder" not in line
    # and it never spends alice's bucket
    assert front.chat(alice).status_code == 429


def test_the_service_token_from_another_address_is_refused(front: Front) -> None:
    alice = _user()
    for where in (ELSEWHERE, "198.51.100.39", None):  # None: the front sent no X-Real-IP
        r = front.chat(alice, real_ip=where)
        err = documented_error(r, 401, "INVALID_AUTH")
        assert "address" in err["message"]
        assert r.headers["www-authenticate"].startswith('Bearer realm="citadel"')
        line = front.access(err["request_id"])
        assert line["subject"] is None and "forwarder" not in line
    assert front.chat(alice).status_code == 200  # nothing of alice's was spent


def test_a_service_token_close_to_the_real_one_is_a_jwt_and_refused(front: Front) -> None:
    r = front.chat(_user(), headers={"Authorization": f"Bearer {front.token}x"})
    documented_error(r, 401, "INVALID_AUTH")


def test_the_service_token_grants_no_permission_it_was_not_given(front: Front) -> None:
    r = front.client.post(
        "/collections/docs/points/search",
        json={"vector": [0.1, 0.2], "limit": 1},
        headers={"Authorization": f"Bearer {front.token}", "X-Real-IP": WEBUI},
    )
    documented_error(r, 403, "INSUFFICIENT_PERMS")


@pytest.mark.parametrize(
    "value",
    [
        b"a" * 10_240,  # 10 KB
        b"a" * 129,
        "jos\u00e9".encode(),  # UTF-8
        b"\xff\xfe",
        b"*",
        b"alice*",
        b"alice:bob",  # would split the Redis key / fake a nested subject
        b"../../etc",
        b"-leading-dash",
        b"",
        b'a"b',
        b"a b",
        b"a\tb",
        b"${jndi:x}",
    ],
)
def test_hostile_user_ids_are_refused_never_used(front: Front, value: bytes) -> None:
    r = front.chat(value)
    err = documented_error(r, 400, "INVALID_PARAMS")
    assert err["details"]["field"] == USER
    line = front.access(err["request_id"])
    assert line["subject"] == "webui"  # the service that sent it, not what it named
    if len(value) >= 4:  # never echoed, never logged
        assert value.decode("latin-1") not in r.text
        assert value.decode("latin-1") not in front.gw.log()


def test_crlf_in_a_user_id_never_reaches_a_log_line(front: Front) -> None:
    marker = uuid.uuid4().hex
    auth = f"Authorization: Bearer {front.token}\r\nX-Real-IP: {WEBUI}\r\n".encode()
    body = json.dumps(CHAT).encode()
    for value in (b"a\rinjected-" + marker.encode(), b"a\ninjected-" + marker.encode()):
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            + auth
            + b"X-OpenWebUI-User-Id: "
            + value
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        status = front.raw(head).split(b" ", 2)[1]
        assert status == b"400", status
    # obs-fold / a second header line is a second header, never part of the id
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        + auth
        + b"X-OpenWebUI-User-Id: alice\r\n injected-"
        + marker.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    assert front.raw(head).split(b" ", 2)[1] in (b"400", b"200")
    later = front.client.get("/health")  # one more line: the batch above is surely written
    front.access(later.headers["x-request-id"])
    log = front.gw.log()
    assert f"injected-{marker}" not in log
    for raw in log.splitlines():
        json.loads(raw)  # every line is still one JSON document


def test_the_header_twice_is_refused(front: Front) -> None:
    head = [
        ("Authorization", f"Bearer {front.token}"),
        ("X-Real-IP", WEBUI),
        (USER, _user()),
        (USER, _user()),
    ]
    r = front.client.post("/v1/chat/completions", json=CHAT, headers=head)
    err = documented_error(r, 400, "INVALID_PARAMS")
    assert "more than once" in err["details"]["issue"]


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _redis_keys_in_db(url: str, pattern: bytes) -> list[bytes]:
    """KEYS in the URL's database over a plain socket (RESP), apart from the gateway's clients."""
    where, _, db = url.removeprefix("redis://").partition("/")
    host, port = where.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(_command(b"SELECT", db.encode() or b"0") + _command(b"KEYS", pattern))
        reader = s.makefile("rb")
        assert reader.readline() == b"+OK\r\n"
        count = int(reader.readline()[1:])
        keys = []
        for _ in range(count):
            size = int(reader.readline()[1:])
            keys.append(reader.read(size + 2)[:-2])
        return keys


def test_redis_keys_hold_only_validated_ids(front: Front) -> None:
    user = _user()
    assert front.chat(user).status_code == 200
    keys = _redis_keys_in_db(front.redis_url, b"citadel:rl:*")
    assert f"citadel:rl:chat_completions:fwd:webui:{user}".encode() in keys
    for key in keys:
        if b":fwd:" in key:
            rest = key.partition(b":fwd:")[2]
            assert rest == b"webui" or re.fullmatch(rb"webui:[A-Za-z0-9][A-Za-z0-9._@-]*", rest)


def test_metrics_count_what_the_forwarder_sent(front: Front, token: Tokens) -> None:
    assert front.chat(_user()).status_code == 200
    assert front.chat(_user(), headers=token.headers()).status_code == 200  # header ignored
    assert front.chat(_user(), real_ip=ELSEWHERE).status_code == 401  # refused
    assert front.chat(b"a:b").status_code == 400  # invalid
    r = front.client.get("/metrics", headers={"X-Real-IP": "127.0.0.1"})
    assert r.status_code == 200
    text = r.text
    for result in ("user", "ignored", "refused", "invalid"):
        assert f'gateway_forwarded_user_total{{forwarder="webui",result="{result}"}}' in text
    # never a per-user label
    assert "webui:" not in text


# ----------------------------------------------------------------------------- config, in-process
def _config(tmp_path: Path, keys: Any, forwarders: dict[str, Any]) -> Path:
    import yaml

    cfg = {
        "models": {"m": {"kind": "chat", "backends": ["http://127.0.0.1:9/v1"]}},
        "auth": {
            "public_key_file": str(keys.rsa1_pub),
            "issuers": ["https://i"],
            "forwarders": forwarders,
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _token_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_reads_the_forwarders_token(tmp_path: Path, keys: Any) -> None:
    from citadel_gateway.config import load_config

    good = _token_file(tmp_path, "t", "A" * 16 + "\n")
    cfg = load_config(
        _config(tmp_path, keys, {"webui": {"token_file": good, "addresses": ["10.0.0.38"]}})
    )
    fwd = cfg.auth.forwarders["webui"]
    assert fwd.token == "A" * 16 and fwd.user_header == USER and fwd.permissions == []
    assert fwd.allows("10.0.0.38") and not fwd.allows("10.0.0.39") and not fwd.allows(None)


@pytest.mark.parametrize(
    ("forwarders", "expect"),
    [
        ({"Web UI": {"addresses": ["10.0.0.1"]}}, "auth.forwarders.Web UI: String should match"),
        ({"webui": {"addresses": []}}, "auth.forwarders.webui.addresses:"),
        ({"webui": {"addresses": ["not-a-cidr"]}}, "auth.forwarders.webui.addresses:"),
        (
            {"webui": {"addresses": ["10.0.0.1"], "user_header": "Authorization"}},
            "auth.forwarders.webui.user_header:",
        ),
        (
            {"webui": {"addresses": ["10.0.0.1"], "user_header": "x bad"}},
            "auth.forwarders.webui.user_header:",
        ),
        ({"webui": {"addresses": ["10.0.0.1"], "token": "x"}}, "token: unknown field"),
        ({"webui": {"addresses": ["10.0.0.1"], "token_file": "short"}}, "16+ characters"),
        ({"webui": {"addresses": ["10.0.0.1"], "token_file": "spaces"}}, "16+ characters"),
        ({"webui": {"addresses": ["10.0.0.1"], "token_file": "/nonexistent"}}, "cannot read"),
        (
            {
                "webui": {"addresses": ["10.0.0.1"], "token_file": "good"},
                "other": {"addresses": ["10.0.0.2"], "token_file": "good"},
            },
            "auth.forwarders.other.token_file: the same token as auth.forwarders.webui",
        ),
    ],
)
def test_config_refuses_a_bad_forwarder(
    tmp_path: Path, keys: Any, forwarders: dict[str, Any], expect: str
) -> None:
    from citadel_gateway.config import ConfigError, load_config

    files = {
        "short": "x" * 15,
        "spaces": "a token with spaces in it",
        "good": "g" * 32,
    }
    for fwd in forwarders.values():
        name = fwd.get("token_file", "good")
        fwd["token_file"] = _token_file(tmp_path, name, files[name]) if name in files else name
    with pytest.raises(ConfigError) as exc:
        load_config(_config(tmp_path, keys, forwarders))
    assert len(exc.value.lines) == 1, exc.value.lines
    assert expect in exc.value.lines[0], exc.value.lines


@pytest.mark.parametrize(
    "value",
    [b"a\r\nx-real-ip: 1.2.3.4", b"a\rb", b"a\nb", b"a\x00b", b"a\x1b[31m", b"a" * 129],
)
def test_a_user_id_is_checked_whatever_the_http_parser_lets_through(value: bytes) -> None:
    from citadel_gateway.auth import ServiceClient
    from citadel_gateway.config import Forwarder
    from citadel_gateway.errors import GatewayError

    client = ServiceClient.of("webui", Forwarder(token_file="-", addresses=["10.0.0.1"]))
    with pytest.raises(GatewayError) as exc:
        client.user([(USER.encode(), value)])
    assert exc.value.status == 400 and value.decode("latin-1") not in str(exc.value.details)
    good = _user()
    assert client.user([(b"authorization", b"x"), (USER.encode(), good.encode())]) == good
    assert client.user([(b"x-openwebui-user-name", b"Alice")]) is None
    assert client.user([(USER.encode(), b"a" * 128)]) == "a" * 128


def test_a_token_whose_subject_reads_like_a_ui_user_never_gets_that_users_cached_answer(
    front: Front, token: Tokens
) -> None:
    """A JWT with ``sub: webui:<alice's id>`` is a subject of its own: not alice's cache."""
    alice = _user()
    body = dict(CHAT, temperature=0, messages=[{"role": "user", "content": uuid.uuid4().hex}])

    def ask(**kw: Any) -> httpx.Response:
        return front.client.post("/v1/chat/completions", json=body, **kw)

    ui = {"Authorization": f"Bearer {front.token}", "X-Real-IP": WEBUI, USER: alice}
    first, second = ask(headers=ui), ask(headers=ui)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    lookalike = ask(headers={**token.headers(f"webui:{alice}"), "X-Real-IP": ELSEWHERE})
    assert lookalike.status_code == 200, lookalike.text
    assert lookalike.headers["x-cache"] == "MISS"
