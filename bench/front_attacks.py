"""The gateway's client-facing HTTP layer under the hardening issue's attacks, per candidate
front: uvicorn as deployed, nginx in front of uvicorn on a unix socket, granian, hypercorn.

    .venv/bin/python bench/front_attacks.py [--only NAME] [--out bench/out/front.json]

Small and bounded on purpose (a shared 2-core VM, loopback only): per candidate

* oversized heads: a 1 MiB header, 100,000 headers, and a 16 MiB header never terminated
  while another client measures its latency (the stall);
* 5 slowloris connections (one header byte per second) and 500 idle connections: a legitimate
  request's latency while they are open, and how many are still open after 10 s and 20 s;
* a closed-loop load: 8 keep-alive clients for 5 s (throughput, p50 / p99), and the same
  against the fake backend directly (what the gateway adds).

granian and hypercorn are imported from ``--extra-path`` (``pip install --target DIR granian
hypercorn``): they are candidates, not dependencies. Writes JSON; bench/RESULTS.md is by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GW_SRC = ROOT / "services" / "gateway"
sys.path.insert(0, str(GW_SRC))

from citadel_gateway.devtoken import mint  # noqa: E402
from citadel_gateway.upstream import UpstreamClient  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

ISS = "https://bench.local"
MODEL = "bench-chat"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
MiB = 1024 * 1024

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx.err warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    upstream gateway {{ server unix:{sock}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_tokens off;
        client_header_timeout 5s;       # the whole head within 5 s (slowloris)
        client_body_timeout 10s;        # between two reads of the body
        keepalive_timeout 5s;           # idle keep-alive connections
        send_timeout 10s;
        client_header_buffer_size 4k;
        large_client_header_buffers 4 16k;  # a header line at most 16 KiB, the head 64 KiB
        client_max_body_size 1m;
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_buffering off;
            proxy_read_timeout 130s;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


class Lab:
    """Redis, the fake backend (tests/gateway/fakebackend.py), keys, a gateway config."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen[bytes]] = []
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pub = work / "pub.pem"
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (work / "jwks.json").write_text('{"keys": []}')
        self.redis_port = free_port()
        self.spawn(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
        )
        self.backend_port = free_port()
        fake = ROOT / "tests" / "gateway" / "fakebackend.py"
        self.spawn([sys.executable, str(fake), str(self.backend_port), str(work / "jwks.json")])
        wait_port(self.redis_port)
        wait_port(self.backend_port)
        big = {"per_minute": 1_000_000, "burst": 1_000_000}
        cfg = {
            "models": {
                MODEL: {"kind": "chat", "backends": [f"http://127.0.0.1:{self.backend_port}/v1"]}
            },
            "redis": {"url": f"redis://127.0.0.1:{self.redis_port}/0"},
            "auth": {"public_key_file": str(pub), "issuers": [ISS]},
            "rate_limits": {"chat_completions": big, "health": big},
            "cache": {"enabled": False},
            "health": {"interval_s": 5, "services": {}},
            "logging": {"level": "warning"},
        }
        self.config = work / "gateway.json"  # YAML is a superset of JSON
        self.config.write_text(json.dumps(cfg))
        self.token = mint(self.private, "bench-user", ISS, ttl_s=7200)

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{Path(argv[0]).name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def start_front(lab: Lab, name: str, extra_path: str) -> tuple[int, list[subprocess.Popen[bytes]]]:
    port = free_port()
    env = dict(os.environ, CITADEL_GATEWAY_CONFIG=str(lab.config))
    env["PYTHONPATH"] = os.pathsep.join([str(GW_SRC), extra_path])
    py = sys.executable
    app = "citadel_gateway.app:create_app"
    if name == "uvicorn":
        cfg = lab.work / f"gw-{port}.json"
        cfg.write_text(
            json.dumps(
                {
                    **json.loads(lab.config.read_text()),
                    "listen": {"host": "127.0.0.1", "port": port},
                }
            )
        )
        procs = [lab.spawn([py, "-m", "citadel_gateway", "--config", str(cfg)], env)]
    elif name == "nginx+uvicorn":
        d = Path(tempfile.mkdtemp(prefix="front-nginx-", dir=lab.work))
        sock = d / "gw.sock"
        gw = lab.spawn(
            [py, "-m", "uvicorn", app, "--factory", "--uds", str(sock), "--loop", "uvloop",
             "--http", "httptools", "--no-access-log", "--log-level", "warning"],
            env,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.chmod(sock, 0o666)
        conf = d / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=d, sock=sock, port=port))
        nginx = lab.spawn(["/usr/sbin/nginx", "-c", str(conf), "-p", str(d)])
        procs = [gw, nginx]
    elif name == "granian":
        procs = [
            lab.spawn(
                [py, "-m", "granian", "--interface", "asgi", "--factory", app,
                 "--host", "127.0.0.1", "--port", str(port), "--http", "1", "--loop", "uvloop",
                 "--workers", "1", "--http1-header-read-timeout", "5000",
                 "--http1-buffer-size", "65536", "--backpressure", "512",
                 "--log-level", "warning", "--no-ws"],
                env,
            )
        ]  # fmt: skip
    elif name == "hypercorn":
        procs = [
            lab.spawn(
                [py, "-m", "hypercorn", f"{app}()", "-b", f"127.0.0.1:{port}",
                 "-k", "uvloop", "--keep-alive", "5", "--read-timeout", "5",
                 "--log-level", "warning"],
                env,
            )
        ]  # fmt: skip
    else:
        raise SystemExit(f"unknown front {name}")
    wait_port(port)
    time.sleep(1.0)  # the app's startup (first health probe)
    return port, procs


# -- measurements -----------------------------------------------------------------------------
def request_bytes(token: str, body: bytes = BODY) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
        % (token.encode(), len(body), body)
    )


def one_request(port: int, token: str, timeout: float = 5) -> tuple[int, float]:
    """Status (0: no answer) and seconds, on a fresh connection."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(request_bytes(token))
            data = s.recv(65536)
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    except OSError:
        status = 0
    return status, time.perf_counter() - t0


def oversized(port: int, head_extra: bytes) -> str:
    """What the front answers to a request with ``head_extra`` in its head."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n" + head_extra + b"\r\n")
            data = s.recv(65536)
    except OSError as exc:
        return f"closed ({type(exc).__name__})"
    if not data:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def stall_under_unterminated_head(port: int, token: str, size: int) -> dict[str, Any]:
    """Send ``size`` header bytes never terminated while another client asks every 50 ms."""
    done = False
    worst = 0.0
    statuses: list[int] = []

    def prober() -> None:
        nonlocal worst
        while not done:
            status, dt = one_request(port, token)
            statuses.append(status)
            worst = max(worst, dt)
            time.sleep(0.05)

    import threading

    t = threading.Thread(target=prober)
    t.start()
    outcome = "sent"
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: ")
            chunk = b"a" * MiB
            for _ in range(size // MiB):
                s.sendall(chunk)
    except OSError as exc:
        outcome = f"closed by the front ({type(exc).__name__})"
    sent_s = time.monotonic() - t0
    time.sleep(0.5)
    done = True
    t.join()
    return {
        "outcome": outcome,
        "seconds": round(sent_s, 2),
        "worst_other_client_s": round(worst, 3),
        "other_client_non_200": sum(1 for x in statuses if x != 200),
    }


def slow_and_idle(port: int, token: str, idle: int = 500, slow: int = 5) -> dict[str, Any]:
    conns: list[socket.socket] = []
    slows: list[socket.socket] = []
    for _ in range(idle):
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    for _ in range(slow):
        slows.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    line = b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    lat: list[float] = []
    codes: list[int] = []
    open_at: dict[str, dict[str, int]] = {}
    i = 0

    def still_open(group: list[socket.socket]) -> int:
        n = 0
        for s in group:
            s.setblocking(False)
            try:
                s.recv(65536)  # an answer (408) or the close: the front dealt with it
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    while time.monotonic() - t0 < 20.5:
        for s in slows:
            with contextlib.suppress(OSError):
                s.send(line[i : i + 1] or b"a")
        i += 1
        if 2 <= time.monotonic() - t0 < 6:
            status, dt = one_request(port, token)
            codes.append(status)
            lat.append(dt)
        for mark in (10, 20):
            if f"{mark}s" not in open_at and time.monotonic() - t0 >= mark:
                open_at[f"{mark}s"] = {"idle": still_open(conns), "slowloris": still_open(slows)}
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
    for s in conns + slows:
        s.close()
    return {
        "legit_max_s": round(max(lat), 3) if lat else None,
        "legit_statuses": sorted(set(codes)),
        "still_open": open_at,
    }


async def load(port: int, token: str, seconds: float = 5, clients: int = 8) -> dict[str, Any]:
    up = UpstreamClient(max_connections=clients, connect_timeout_s=2, keepalive_s=30)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    hdrs = [(b"Content-Type", b"application/json"), (b"Authorization", b"Bearer " + token.encode())]
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                resp = await up.post(url, hdrs, BODY)
                await resp.read()
                resp.release()
                if resp.status != 200:
                    errors += 1
            except Exception:
                errors += 1
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(clients)))
    up.close()
    lat.sort()
    return {
        "req_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(statistics.median(lat) * 1000, 2),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2),
        "errors": errors,
    }


def measure(port: int, token: str) -> dict[str, Any]:
    out: dict[str, Any] = {"sanity": one_request(port, token)[0]}
    out["header_1mib"] = oversized(port, b"X-Big: " + b"a" * MiB + b"\r\n")
    out["headers_100k"] = oversized(port, b"".join(b"X-%d: a\r\n" % i for i in range(100_000)))
    out["unterminated_16mib"] = stall_under_unterminated_head(port, token, 16 * MiB)
    out["slowloris_and_idle"] = slow_and_idle(port, token)
    out["load"] = asyncio.run(load(port, token))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append")
    ap.add_argument("--extra-path", default="/tmp/frontpkgs")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "front.json"))
    ap.add_argument(
        "--load-reps",
        type=int,
        default=0,
        help="only the load: every front started at once, N interleaved runs each",
    )
    ap.add_argument("--clients", type=int, default=8, help="keep-alive clients of the load")
    args = ap.parse_args()
    names = args.only or ["uvicorn", "nginx+uvicorn", "granian", "hypercorn"]
    work = Path(tempfile.mkdtemp(prefix="front-attacks-"))
    lab = Lab(work)
    results: dict[str, Any] = {}
    if args.load_reps:
        try:
            ports = {"direct backend": lab.backend_port}
            for name in names:
                ports[name] = start_front(lab, name, args.extra_path)[0]
            runs: dict[str, list[dict[str, Any]]] = {n: [] for n in ports}
            for _ in range(args.load_reps):
                for name, port in ports.items():
                    runs[name].append(asyncio.run(load(port, lab.token, clients=args.clients)))
            for name, rs in runs.items():
                results[name] = {
                    "req_per_s": [r["req_per_s"] for r in rs],
                    "p50_ms": [r["p50_ms"] for r in rs],
                    "p99_ms": [r["p99_ms"] for r in rs],
                    "errors": sum(r["errors"] for r in rs),
                }
        finally:
            lab.close()
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(json.dumps(results, indent=2))
        return
    try:
        results["direct backend"] = {"load": asyncio.run(load(lab.backend_port, lab.token))}
        for name in names:
            port, procs = start_front(lab, name, args.extra_path)
            try:
                results[name] = measure(port, lab.token)
            finally:
                for p in reversed(procs):
                    lab.stop(p)
            print(name, json.dumps(results[name]), flush=True)
    finally:
        lab.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
