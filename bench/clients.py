"""One client per protocol (issue 19, point 6): the gateway's own clients against the libraries.

    .venv/bin/python bench/clients.py [--reps 7] [--ops 3000] [--only redis|http]

Redis: ``citadel_gateway.resp`` (one pipelined connection) against redis-py's asyncio client with
the hiredis parser (a pool, and ``single_connection_client``) and, for reference, redis-py's own
Python parser (the cache's client before it moved to resp.py), on the gateway's real commands:
the rate limiter's GCRA ``EVALSHA`` and the cache's ``GET`` (a hit, 2 KiB) and ``SET ... EX``.
HTTP/1.1: the gateway's ``upstream`` client against aiohttp (configured as the gateway configured
it) for the collection search relay: a 4 KiB JSON POST, a 4 KiB JSON answer read whole with the
size cap.

Everything on loopback: a fresh ``redis-server`` (no persistence) and a fake Qdrant (uvloop +
httptools, fixed answer, keep-alive) pinned to CPU 0, the clients in this process (uvloop, as
the gateway runs) pinned to CPU 1. Two loads per operation: ``seq`` (one caller, the gateway at a
low rate) and ``c32`` (32 callers at once, the closed-loop benchmark's concurrency). Each round
runs every client once, in an order rotated from round to round, so whatever else the machine
does falls on every client alike; the table gives the median over the rounds and the spread
(min-max) of the client's CPU time per operation (``time.process_time``: what the gateway
process would spend) and of the per-operation latency (p50, p99; ``seq`` only).

redis-py and hiredis are installed, pinned (``PINS``), into ``bench/.venv-clients`` (a
``pip --target`` folder put first on ``sys.path``), so the comparison does not depend on what
the gateway itself depends on. A missing ``redis-server`` or ``taskset``, a pin that cannot be
installed, or a run in which an operation failed is an error: one line, exit 1, no figure.
Writes ``bench/out/clients.json``; the table goes to stdout (bench/RESULTS.md quotes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "gateway"))
DEPS = ROOT / "bench" / ".venv-clients"
PINS = ("redis==8.1.0", "hiredis==3.5.0")
OUT = ROOT / "bench" / "out"
CPU_SERVERS, CPU_CLIENT = "0", 1
CONCURRENCY = 32
# Both clients' per-command timeout: far above any loopback answer, so that a loaded machine
# (other tenants of a shared VM) slows a run down instead of failing it.
TIMEOUT_S = 5.0

Op = Callable[[int], Awaitable[Any]]


class BenchError(RuntimeError):
    """No true figure can be given; the message (one line) says why."""


def ensure_deps() -> None:
    marker = DEPS / ".pins"
    if not (marker.is_file() and marker.read_text() == "\n".join(PINS)):
        shutil.rmtree(DEPS, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(DEPS), *PINS]
        if subprocess.run(cmd).returncode != 0:
            raise BenchError(f"cannot install {' '.join(PINS)} into {DEPS}")
        marker.write_text("\n".join(PINS))
    sys.path.insert(0, str(DEPS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine_state() -> str:
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    try:
        psi = " ".join(Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:3])
    except OSError:
        psi = "-"
    return f"load {load}, CPU pressure {psi}"


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited at start (rc {proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port} within 10 s")


# -- fake Qdrant: fixed answer to any request, keep-alive ------------------------------------------

SEARCH_BODY = json.dumps({"vector": [0.0123456] * 300, "limit": 10, "with_payload": True}).encode()
HIT = {"id": 0, "version": 3, "score": 0.87, "payload": {"text": "x" * 300, "source": "doc.md"}}
SEARCH_ANSWER = json.dumps(
    {"result": [dict(HIT, id=i) for i in range(10)], "status": "ok", "time": 0.0002}
).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    % len(SEARCH_ANSWER)
    + SEARCH_ANSWER
)


def serve_http(port: int) -> None:
    import httptools
    import uvloop

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            self.p = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            try:
                self.p.feed_data(data)
            except httptools.HttpParserError:
                self.t.close()

        def on_message_complete(self) -> None:
            self.t.write(ANSWER)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


# -- the clients -----------------------------------------------------------------------------------


async def redis_clients(port: int) -> dict[str, tuple[Any, dict[str, Op]]]:
    import redis.asyncio as aioredis
    from citadel_gateway.ratelimit import GCRA_LUA, GCRA_SHA
    from citadel_gateway.resp import RespClient
    from redis._parsers import _AsyncHiredisParser, _AsyncRESP2Parser
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    value = b"v" * 2048
    interval, burst = 1, 1_000_000  # always room: the script's SET path runs every time
    url = f"redis://127.0.0.1:{port}/0"
    fast = RespClient(url, None, TIMEOUT_S)
    await fast.call(b"SCRIPT", b"LOAD", GCRA_LUA)
    await fast.call(b"SET", b"bench:hit", value)

    def library(parser: Any, single: bool) -> aioredis.Redis:
        # as citadel_gateway.redisconn configures redis-py
        return aioredis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            decode_responses=False,
            parser_class=parser,
            single_connection_client=single,
        )

    out: dict[str, tuple[Any, dict[str, Op]]] = {
        "resp.py": (
            fast,
            {
                "EVALSHA": lambda i: fast.call(
                    b"EVALSHA", GCRA_SHA, 1, b"bench:rl:%d" % (i % 100), interval, burst
                ),
                "GET": lambda i: fast.call(b"GET", b"bench:hit"),
                "SET": lambda i: fast.call(b"SET", b"bench:c:%d" % (i % 100), value, b"EX", 300),
            },
        )
    }
    for name, parser, single in (
        ("redis-py+hiredis pool", _AsyncHiredisParser, False),
        ("redis-py+hiredis single", _AsyncHiredisParser, True),
        ("redis-py (Python parser) pool", _AsyncRESP2Parser, False),
    ):
        r = library(parser, single)
        ops: dict[str, Op] = {
            "EVALSHA": lambda i, r=r: r.evalsha(
                GCRA_SHA, 1, b"bench:rl:%d" % (i % 100), interval, burst
            ),
            "GET": lambda i, r=r: r.get(b"bench:hit"),
            "SET": lambda i, r=r: r.set(b"bench:c:%d" % (i % 100), value, ex=300),
        }
        out[name] = (r, ops)
    return out


async def http_clients(port: int) -> dict[str, tuple[Any, dict[str, Op]]]:
    import aiohttp
    from citadel_gateway.upstream import UpstreamClient

    url = f"http://127.0.0.1:{port}/collections/docs/points/search"
    limit = 8 * 1024 * 1024
    up = UpstreamClient(max_connections=256, connect_timeout_s=2, keepalive_s=4)
    up_headers = [(b"Content-Type", b"application/json"), (b"X-Request-ID", b"bench-0001")]

    async def ours(i: int) -> bytes:
        async with asyncio.timeout(TIMEOUT_S):
            resp = await up.post(url, up_headers, SEARCH_BODY)
            try:
                return await resp.read(limit)
            finally:
                resp.release()

    # as citadel_gateway.lifecycle configures the session, and proxy.search_vectors calls it
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=256, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
        ),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
        max_headers=100,
    )
    lib_headers = {"Content-Type": "application/json", "X-Request-ID": "bench-0001"}

    async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
        # the gateway's aiohttp relay read the body so (backend_errors.read_capped, before)
        if resp.content_length is not None and resp.content_length > limit:
            raise BenchError("too large")
        parts, size = [], 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise BenchError("too large")
            parts.append(chunk)
        return b"".join(parts)

    async def library(i: int) -> bytes:
        async with (
            asyncio.timeout(TIMEOUT_S),
            session.post(url, data=SEARCH_BODY, headers=lib_headers, allow_redirects=False) as r,
        ):
            return await read_capped(r, limit)

    return {"upstream.py": (up, {"search": ours}), "aiohttp": (session, {"search": library})}


# -- measuring -------------------------------------------------------------------------------------


async def run_once(op: Op, ops: int, concurrency: int, check: Callable[[Any], bool]) -> dict:
    lat: list[float] = []

    async def worker(start: int, n: int) -> None:
        for i in range(start, start + n):
            t = time.perf_counter()
            try:
                reply = await op(i)
            except Exception as exc:
                raise BenchError(f"an operation failed: {type(exc).__name__}: {exc}") from None
            lat.append(time.perf_counter() - t)
            if not check(reply):
                raise BenchError(f"unexpected reply {reply!r:.80}")

    per = ops // concurrency
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(k * per, per) for k in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = per * concurrency
    lat.sort()
    return {
        "cpu_us": cpu / n * 1e6,
        "p50_us": lat[n // 2] * 1e6,
        "p99_us": lat[min(n - 1, int(n * 0.99))] * 1e6,
        "ops_s": n / wall,
    }


CHECKS: dict[str, Callable[[Any], bool]] = {
    "EVALSHA": lambda r: isinstance(r, list) and len(r) == 4 and r[0] == 1,
    "GET": lambda r: isinstance(r, bytes) and len(r) == 2048,
    "SET": lambda r: r in (b"OK", True),
    "search": lambda r: r == SEARCH_ANSWER,
}


async def measure(
    clients: dict[str, tuple[Any, dict[str, Op]]], reps: int, ops: int
) -> dict[str, dict[str, list[dict]]]:
    names = list(clients)
    results: dict[str, dict[str, list[dict]]] = {n: {} for n in names}
    opnames = list(next(iter(clients.values()))[1])
    for name in names:  # warm: connections open, scripts loaded, code paths hot
        for opname in opnames:
            await run_once(clients[name][1][opname], 400, 8, CHECKS[opname])
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for opname in opnames:
            for load, conc in (("seq", 1), (f"c{CONCURRENCY}", CONCURRENCY)):
                for name in order:
                    op = clients[name][1][opname]
                    r = await run_once(op, ops if conc == 1 else ops * 3, conc, CHECKS[opname])
                    results[name].setdefault(f"{opname} {load}", []).append(r)
    return results


def table(results: dict[str, dict[str, list[dict]]]) -> str:
    def cell(runs: list[dict], key: str) -> str:
        vals = [r[key] for r in runs]
        return f"{statistics.median(vals):.0f} ({min(vals):.0f}-{max(vals):.0f})"

    rows = [
        "| operation | client | CPU us/op | p50 us | p99 us | ops/s |",
        "|---|---|---|---|---|---|",
    ]
    cases = list(next(iter(results.values())))
    for case in cases:
        for name, per_case in results.items():
            runs = per_case[case]
            seq = case.endswith("seq")
            rows.append(
                f"| {case} | {name} | {cell(runs, 'cpu_us')} | "
                f"{cell(runs, 'p50_us') if seq else '-'} | {cell(runs, 'p99_us') if seq else '-'} "
                f"| {cell(runs, 'ops_s')} |"
            )
    return "\n".join(rows)


async def bench(args: argparse.Namespace, redis_port: int, http_port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.only in (None, "redis"):
        clients = await redis_clients(redis_port)
        out["redis"] = await measure(clients, args.reps, args.ops)
        for conn, _ in clients.values():
            if hasattr(conn, "aclose"):
                await conn.aclose()
            else:
                conn.close()
    if args.only in (None, "http"):
        clients = await http_clients(http_port)
        out["http"] = await measure(clients, args.reps, args.ops)
        for conn, _ in clients.values():
            if hasattr(conn, "close") and asyncio.iscoroutinefunction(conn.close):
                await conn.close()
            else:
                conn.close()
    return out


def _main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7, help="rounds (every client once per round)")
    ap.add_argument("--ops", type=int, default=3000, help="operations per run (x3 at c32)")
    ap.add_argument("--only", choices=("redis", "http"))
    ap.add_argument("--serve-http", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_http:
        serve_http(args.serve_http)
        return
    for tool in ("redis-server", "taskset"):
        if shutil.which(tool) is None:
            raise BenchError(f"missing tool: {tool} (bench/install.sh installs it)")
    ensure_deps()
    import hiredis  # noqa: F401  (installed above; the comparison is meaningless without it)
    import uvloop

    redis_port, http_port = free_port(), free_port()
    pin = ["taskset", "-c", CPU_SERVERS]
    redis_args = ("--port", str(redis_port), "--bind", "127.0.0.1", "--save", "")
    procs = [
        subprocess.Popen(
            [*pin, "redis-server", *redis_args, "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen([*pin, sys.executable, __file__, "--serve-http", str(http_port)]),
    ]
    try:
        wait_port(redis_port, procs[0], "redis-server")
        wait_port(http_port, procs[1], "fake Qdrant")
        os.sched_setaffinity(0, {CPU_CLIENT})
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "state_start": machine_state(),
        }
        t0 = time.monotonic()
        results = uvloop.run(bench(args, redis_port, http_port))
        meta["state_end"] = machine_state()
        meta["seconds"] = round(time.monotonic() - t0, 1)
    finally:
        for p in procs:
            p.terminate()
            p.wait(5)
    OUT.mkdir(exist_ok=True)
    (OUT / "clients.json").write_text(json.dumps({"meta": meta, **results}, indent=1))
    print(json.dumps(meta))
    for part, res in results.items():
        print(f"\n### {part}\n\n{table(res)}")


def main() -> None:
    try:
        _main()
    except BenchError as exc:
        sys.exit(f"bench: {exc}")


if __name__ == "__main__":
    main()
