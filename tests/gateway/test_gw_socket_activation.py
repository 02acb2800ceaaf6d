"""An upgrade restarts the gateway without refusing a request (issue #20, upgrades): systemd
holds the listening socket (``citadel-gateway.socket``) and hands it to each process; the one
that stops lets its requests in flight finish, and a client that connects meanwhile waits in
the socket's backlog for the next one. Here the test plays systemd: it owns a unix socket and
starts the gateway on it twice while clients keep calling."""

from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from citadel_gateway import sdlisten

from .conftest import GW_SRC, Tokens, wait_until

pytestmark = pytest.mark.gateway

# fd 3 <- the listening socket, LISTEN_PID <- this very process: what systemd does before exec
EXEC_ACTIVATED = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); "
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
    "os.execv(sys.executable, [sys.executable, '-m', 'citadel_gateway', '--config', sys.argv[2]])"
)


def _activated(listener: socket.socket, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(GW_SRC))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", EXEC_ACTIVATED, str(listener.fileno()), str(config)],
            pass_fds=(listener.fileno(),),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


CHAT = {  # not cacheable: every request reaches the backend
    "model": "llama-3-chat",
    "temperature": 0.7,
    "messages": [{"role": "user", "content": "hi"}],
}


def _config(cfg: dict[str, Any], workdir: Path, sock: Path, workers: int) -> Path:
    import yaml

    c = copy.deepcopy(cfg)
    c["listen"] = {"unix_socket": str(sock), "workers": workers, "drain_s": 10}
    c["health"] = {"interval_s": 5, "timeout_s": 1, "services": {}}
    c["rate_limits"] = {"enabled": False}  # the clients call as fast as they can
    path = workdir / f"activated-{workers}.yml"
    path.write_text(yaml.safe_dump(c, sort_keys=False))
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_a_restart_on_a_held_socket_refuses_no_request(
    cfg: dict[str, Any], token: Tokens, workdir: Path, workers: int
) -> None:
    sock = workdir / f"activated-{workers}" / "gateway.sock"
    sock.parent.mkdir(exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen(512)
    config = _config(cfg, workdir, sock, workers)
    log = workdir / f"activated-{workers}.log"
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://gw", timeout=30
    )
    first = _activated(listener, config, log)
    second: subprocess.Popen[bytes] | None = None
    statuses: list[tuple[float, int]] = []  # when each request started, its status
    pids: set[str] = set()
    done = threading.Event()

    def calls() -> None:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://gw", timeout=30
        ) as c:
            while not done.is_set():
                started = time.monotonic()
                try:
                    r = c.post(
                        "/v1/chat/completions",
                        json=CHAT,
                        headers=token.headers(),
                    )
                    statuses.append((started, r.status_code))
                except httpx.HTTPError:
                    statuses.append((started, 599))
                time.sleep(0.02)

    try:
        wait_until(lambda: client.get("/health").status_code == 200, 30, "the first gateway")
        pids.add(client.get("/api/v1/status", headers=token.headers()).json()["pid"])
        threads = [threading.Thread(target=calls) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        stopped = time.monotonic()
        first.send_signal(signal.SIGTERM)  # systemctl restart: stop ...
        # uvicorn drains, then dies of the signal it was sent (systemd counts that as clean)
        assert first.wait(20) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        time.sleep(0.5)  # nobody serves the socket now: clients wait in its backlog
        restarted = time.monotonic()
        second = _activated(listener, config, log)  # ... then start, on the same socket
        time.sleep(3)
        done.set()
        for t in threads:
            t.join(30)
        pids.add(client.get("/api/v1/status", headers=token.headers()).json()["pid"])
    finally:
        done.set()
        client.close()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        listener.close()
    assert len(pids) == 2, "the second process did not serve"
    assert len(statuses) > 20, statuses
    assert any(stopped < t < restarted for t, _ in statuses), "no request met the restart"
    failed = [s for _, s in statuses if s != 200]
    assert not failed, f"{len(failed)} of {len(statuses)} requests failed: {failed[:10]}"
    assert "serving the sockets systemd passed: unix:" in log.read_text()


def test_sockets_meant_for_another_process_are_not_taken() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert sdlisten.inherited_sockets(env) == []
    assert env == {}  # read once: processes started from here never see them
    assert sdlisten.inherited_sockets({}) == []
    assert sdlisten.inherited_sockets({"LISTEN_PID": "x", "LISTEN_FDS": "1"}) == []
