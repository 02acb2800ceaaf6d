"""`plan`/`apply` outside the lab check, on the controller and before any host is touched, that
the gateway's JWKS URL answers with a usable key set (within a bounded time) and that each
issuer is an https URL; otherwise exit 1 with one line naming the key, the URL and the fix.
Against a local HTTP server on 127.0.0.1: a good JWKS, a 404, garbage, a timeout, no keys."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from citadel import cli, preflight
from citadel.cli import main
from citadel.errors import CitadelError
from citadel.labsecrets import all_secret_names
from citadel.loader import load_cluster

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
ANSWERS: dict[str, tuple[int, bytes]] = {
    "/good": (200, json.dumps({"keys": [{**GOOD_KEY, "kid": "k1", "use": "sig"}]}).encode()),
    "/missing": (404, b"not found"),
    "/garbage": (200, b"<html>hello</html>"),
    "/empty": (200, b'{"keys": []}'),
    "/unusable": (200, b'{"keys": [{"kty": "RSA", "n": "x"}, {"kty": "oct", "use": "enc"}]}'),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        status, body = ANSWERS.get(self.path, (200, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def idp() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_good_jwks_passes(idp: str) -> None:
    assert preflight.jwks_problem(f"{idp}/good") is None


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/missing", "answered HTTP 404"),
        ("/garbage", "did not answer JSON"),
        ("/empty", "holds no usable signing key (0 keys)"),
        ("/unusable", "holds no usable signing key (2 keys)"),
        ("/slow", "no answer within 0.5 s"),
    ],
)
def test_an_unusable_jwks_is_named(idp: str, path: str, why: str) -> None:
    started = time.monotonic()
    problem = preflight.jwks_problem(f"{idp}{path}", timeout_s=0.5)
    assert problem is not None and problem.startswith(why)
    assert time.monotonic() - started < 1.5  # bounded


def test_nothing_listening_is_named() -> None:
    assert "no answer within" in str(preflight.jwks_problem("http://127.0.0.1:1/jwks", 0.5))


def _inventory(tmp_path: Path, jwks_url: str, issuer: str = "https://clerk.example.com") -> Path:
    inv = tmp_path / "staging.yml"
    inv.write_text(
        "cluster: {name: t, environment: staging, subnet: 10.0.0.0/24}\n"
        f"group_data_dir: {ROOT / 'group_data'}\n"
        "hosts:\n"
        "  - {name: m1, address: 10.0.0.11, roles: [model],"
        " model: {served_name: chat-a, api: chat, source: org/model}}\n"
        "  - {name: data, address: 10.0.0.12, roles: [postgres, redis]}\n"
        "  - {name: vec, address: 10.0.0.13, roles: [qdrant]}\n"
        "  - name: gw\n"
        "    address: 10.0.0.10\n"
        "    roles: [gateway]\n"
        f"    gateway: {{auth: {{jwks_url: '{jwks_url}', issuers: ['{issuer}']}}}}\n"
    )
    return inv


@pytest.fixture
def no_pyinfra(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    ran: list[bool] = []

    def run_pyinfra(*args: Any, **kwargs: Any) -> dict[str, Any]:
        ran.append(True)
        return {}

    monkeypatch.setattr(cli, "run_pyinfra", run_pyinfra)
    return ran


def _secrets(monkeypatch: pytest.MonkeyPatch, inv: Path) -> None:
    for name in all_secret_names(load_cluster(inv).cluster):
        monkeypatch.setenv(f"CITADEL_SECRET_{name.upper()}", "x")


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_plan_and_apply_stop_before_any_host_on_a_bad_jwks(
    command: str,
    idp: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_pyinfra: list[bool],
) -> None:
    inv = _inventory(tmp_path, f"{idp}/missing")
    _secrets(monkeypatch, inv)
    extra = ["--report", str(tmp_path / "r.json")] if command == "apply" else []
    assert main([command, "-i", str(inv), *extra]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("citadel: host gw: gateway.auth.jwks_url: ")
    assert f"{idp}/missing: answered HTTP 404" in line and "/.well-known/jwks.json" in line
    assert no_pyinfra == []


def test_an_issuer_that_is_not_https_stops_plan(
    idp: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_pyinfra: list[bool],
) -> None:
    inv = _inventory(tmp_path, f"{idp}/good", issuer="clerk.example.com")
    _secrets(monkeypatch, inv)
    assert main(["plan", "-i", str(inv)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "gateway.auth.issuers: 'clerk.example.com' is not an https URL" in line
    assert no_pyinfra == []


def test_a_good_identity_provider_lets_plan_run(
    idp: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_pyinfra: list[bool]
) -> None:
    inv = _inventory(tmp_path, f"{idp}/good")
    _secrets(monkeypatch, inv)
    assert main(["plan", "-i", str(inv)]) == 0
    assert no_pyinfra == [True]


def test_the_lab_is_not_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab trusts a local key file: no JWKS, no network."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the lab's preflight must not fetch anything")

    monkeypatch.setattr(preflight, "jwks_problem", refuse)
    preflight.check_identity_provider(load_cluster("inventory/lab.yml").cluster)


def test_every_problem_is_one_line(idp: str, tmp_path: Path) -> None:
    cluster = load_cluster(_inventory(tmp_path, f"{idp}/empty", issuer="http://x")).cluster
    with pytest.raises(CitadelError) as exc:
        preflight.check_identity_provider(cluster, timeout_s=1)
    assert len(str(exc.value).splitlines()) == 2
