"""Config validation, bad config -> exit 2 with one line, SIGHUP reload, multi-worker metrics."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import GW_SRC, GatewayFactory, Tokens, wait_until


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(GW_SRC))
    return subprocess.run(
        [sys.executable, "-m", "citadel_gateway", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_defaults_match_the_document() -> None:
    from citadel_gateway.config import Listen, RateLimits

    rl = RateLimits()
    assert (rl.chat_completions.per_minute, rl.chat_completions.burst) == (60, 10)
    assert (rl.completions.per_minute, rl.completions.burst) == (60, 10)
    assert (rl.embeddings.per_minute, rl.embeddings.burst) == (120, 20)
    assert (rl.collection_search.per_minute, rl.collection_search.burst) == (300, 50)
    assert (rl.health.per_minute, rl.health.burst) == (600, 100)
    assert (Listen().host, Listen().port) == ("0.0.0.0", 8000)


def test_example_config_is_valid() -> None:
    from citadel_gateway.config import GatewayConfig

    raw = yaml.safe_load((GW_SRC / "example-config.yml").read_text())
    cfg = GatewayConfig.model_validate(raw)  # secrets files are not read here
    assert set(cfg.health.services) == {
        "llama_chat",
        "llama_instruct",
        "embeddings",
        "vector_db",
        "database",
    }


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda c: c.update(bogus=1), "bogus: unknown field"),
        (lambda c: c["listen"].update(port="http"), "listen.port:"),
        (lambda c: c["models"]["m"].update(kind="video"), "models.m.kind:"),
        (lambda c: c["models"]["m"].update(backends=["ftp://x"]), "models.m.backends[0].url:"),
        (
            lambda c: c["auth"].update(public_key_file="/nonexistent/key.pem"),
            "auth.public_key_file: cannot read",
        ),
        (
            lambda c: c["auth"].update(jwks_url="http://127.0.0.1:1/jwks"),
            "auth: set exactly one of",
        ),
        (lambda c: c["health"]["services"]["x"].update(model="nope"), "unknown model 'nope'"),
        (
            lambda c: c["rate_limits"].update(chat_completions={"per_minute": 0, "burst": 1}),
            "rate_limits.chat_completions.per_minute:",
        ),
        (lambda c: c["metrics"].update(allow=["not-a-cidr"]), "metrics.allow:"),
    ],
)
def test_bad_config_exit_2_one_line(tmp_path: Path, keys: Any, mutate: Any, expect: str) -> None:
    good: dict[str, Any] = {
        "listen": {"port": 8000},
        "models": {"m": {"kind": "chat", "backends": ["http://127.0.0.1:9/v1"]}},
        "auth": {"public_key_file": str(keys.rsa1_pub), "issuers": ["https://i"]},
        "rate_limits": {},
        "metrics": {},
        "health": {"services": {"x": {"probe": "model", "model": "m"}}},
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(good))
    assert _run(path).returncode == 0
    bad = copy.deepcopy(good)
    mutate(bad)
    path.write_text(yaml.safe_dump(bad))
    r = _run(path)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"{path}: ")
    assert expect in err, err


def test_unparsable_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("models: [unclosed\n")
    r = _run(path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = _run(tmp_path / "missing.yml")
    assert r.returncode == 2 and "cannot read" in r.stderr and r.stderr.count("\n") == 1


def _models(g: Any, token: Tokens) -> set[str]:
    with g.client() as c:
        return {m["id"] for m in c.get("/v1/models", headers=token.headers()).json()["data"]}


def test_sighup_reload_good_and_bad(
    gateways: GatewayFactory, cfg: dict[str, Any], token: Tokens
) -> None:
    c = copy.deepcopy(cfg)
    c["metrics"] = {"allow": ["10.0.0.0/8"]}
    g = gateways(c, "reload")
    with g.client() as cl:
        r = cl.get("/metrics")
        assert r.status_code == 403 and r.json()["error"]["code"] == "INSUFFICIENT_PERMS"
    assert "added-model" not in _models(g, token)
    # good reload
    c2 = copy.deepcopy(g.cfg)
    c2["models"]["added-model"] = {
        "kind": "chat",
        "backends": c2["models"]["llama-3-chat"]["backends"],
    }
    c2["metrics"] = {"allow": ["127.0.0.0/8"]}
    g.config_path.write_text(yaml.safe_dump(c2))
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "added-model" in _models(g, token), 10, "reload")
    with g.client() as cl:
        assert cl.get("/metrics").status_code == 200
        r = cl.post(
            "/v1/chat/completions",
            json={"model": "added-model", "messages": [{"role": "user", "content": "x"}]},
            headers=token.headers(),
        )
        assert r.status_code == 200
    # bad reload: old config stays, error logged, process alive
    g.config_path.write_text("models: {}\nbogus: 1\n")
    g.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reload failed" in g.log(), 10, "reload failure log")
    assert g.proc.poll() is None
    assert "added-model" in _models(g, token)
    line = next(x for x in g.log().splitlines() if "config reload failed" in x)
    assert "bogus: unknown field" in line


def test_two_workers_metrics_aggregate(
    gateways: GatewayFactory, cfg: dict[str, Any], token: Tokens
) -> None:
    c = copy.deepcopy(cfg)
    c["listen"] = {"workers": 2}
    g = gateways(c, "workers2")
    n = 12
    with g.client() as cl:
        for _ in range(n):
            assert cl.get("/v1/models", headers=token.headers()).status_code == 200
        # whichever worker answers, the count covers both
        for _ in range(3):
            text = cl.get("/metrics").text
            line = next(
                x
                for x in text.splitlines()
                if x.startswith("http_requests_total{") and 'route="/v1/models"' in x
            )
            assert float(line.split()[-1]) == n
    # SIGHUP to the parent is validated there and forwarded to the workers
    c2 = copy.deepcopy(g.cfg)
    c2["models"]["w2-model"] = {
        "kind": "chat",
        "backends": c2["models"]["llama-3-chat"]["backends"],
    }
    g.config_path.write_text(yaml.safe_dump(c2))
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    seen = 0
    while time.monotonic() < deadline and seen < 6:
        seen = seen + 1 if "w2-model" in _models(g, token) else 0
        time.sleep(0.05)
    assert seen >= 6  # consistently, from both workers
