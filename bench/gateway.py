"""Gateway benchmark: direct backend vs citadel-gateway vs LiteLLM proxy, same fake backend.

    .venv/bin/python bench/gateway.py [--duration 12] [--rate 200] [--no-litellm]

Everything runs inside a private network namespace with only loopback (``unshare -n``), so
nothing (LiteLLM included) can reach the internet. LiteLLM is installed, pinned, into
``bench/.venv-litellm`` (outside the namespace) when missing.

Pinning (2 cores): the proxy under test on CPU 1; the fake backend, Redis and the load generator
on CPU 0. "direct" is the same load on the backend with no proxy in between.

Loads, each run ``--duration`` seconds, non-streaming and streaming:
* closed loop: ``wrk`` (2 threads ... pinned to CPU 0), 32 connections -> max throughput;
* open loop: an asyncio client that schedules ``--rate`` req/s by the clock; latency is measured
  from the *scheduled* send time, so queueing in a saturated target is not hidden. The client
  also reports its own lag (actual send minus scheduled time). ``--reps`` runs per target,
  direct and gateway interleaved, samples pooled; each in two regimes: "shared" (default
  scheduling, other tenants of the VM compete) and "isolated" (servers SCHED_FIFO 2, client
  SCHED_FIFO 1, for that run only; same for direct and gateway). Per-run CPU time and run-queue
  wait of the target process come from ``/proc/PID/task/*/schedstat``.

Writes the gateway section of ``bench/RESULTS.md`` (other sections kept) and
``bench/out/gateway.json``.

A missing tool (``wrk``, ``taskset``, ``redis-server``, ...; ``make bench`` installs them), a
LiteLLM that cannot be installed (unless ``--no-litellm``) or a run in which no request
succeeded is an error (:class:`BenchError`): the benchmark stops with one line naming it and
exits 1; it never writes a figure for a run that did not happen.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GW_SRC = ROOT / "services" / "gateway"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
LITELLM_PIN = "litellm[proxy]==1.108.7"
RESULTS = ROOT / "bench" / "RESULTS.md"
OUT = ROOT / "bench" / "out"
MODEL = "bench-chat"  # no "llama-3" in the name: LiteLLM would try to fetch a tokenizer
CPU_TARGET, CPU_LOAD = "1", "0"
RT_SERVER, RT_CLIENT = 2, 1  # SCHED_FIFO priorities for the "isolated" open-loop runs

# command -> the Debian package that has it (``make bench`` installs them: bench/install.sh)
TOOLS = {
    "wrk": "wrk",
    "taskset": "util-linux",
    "chrt": "util-linux",
    "unshare": "util-linux",
    "ip": "iproute2",
    "redis-server": "redis-server",
}
# Python modules the bench itself imports (the gateway's own come with its package)
MODULES = ("uvloop", "aiohttp", "yaml", "cryptography")


class BenchError(RuntimeError):
    """The benchmark cannot give a true figure; the message (one line) says why."""


def require_tools(which: Any = None, find_spec: Any = None) -> None:
    """Every command and Python module the run needs is there, or one :class:`BenchError`."""
    which = which or shutil.which
    find_spec = find_spec or importlib.util.find_spec
    missing = [cmd for cmd in TOOLS if which(cmd) is None]
    if missing:
        pkgs = " ".join(sorted({TOOLS[c] for c in missing}))
        raise BenchError(
            f"missing tool(s): {', '.join(missing)} (apt-get install {pkgs}, or make bench)"
        )
    mods = [m for m in MODULES if find_spec(m) is None]
    if mods:
        raise BenchError(
            f"missing Python module(s) in {sys.executable}: {', '.join(mods)} "
            "(pip install -e services/gateway, or make bench)"
        )


def set_rt(pid: int, prio: int | None) -> bool:
    """SCHED_FIFO ``prio`` for every thread of ``pid``; ``None``: back to SCHED_OTHER."""
    cmd = (
        ["chrt", "-a", "-f", "-p", str(prio), str(pid)]
        if prio
        else ["chrt", "-a", "-o", "-p", "0", str(pid)]
    )
    return subprocess.run(cmd, capture_output=True).returncode == 0


def sched_wait_ns(pid: int) -> tuple[int, int]:
    """(CPU time, time runnable but waiting for a CPU) of all threads of ``pid``, in ns."""
    run = wait = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            a, b, _ = Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()
            run += int(a)
            wait += int(b)
    except OSError:
        pass
    return run, wait


def machine_state() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        psi = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()[1:3]
    except OSError:
        psi = []
    return f"load {' '.join(load)}" + (f", CPU pressure {' '.join(psi)}" if psi else "")


CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Hello, world!"}], "max_tokens": 16}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello, world!"}],
        "max_tokens": 16,
        "stream": True,
    }
).encode()

# ---------------------------------------------------------------------------------------------
# fast fake OpenAI backend (raw asyncio protocol, keep-alive, fixed answers)
# ---------------------------------------------------------------------------------------------
_RESP = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1690123456,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
).encode()
_CHUNKS = (
    b"".join(
        b"data: "
        + json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": 1690123456,
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}],
            }
        ).encode()
        + b"\n\n"
        for w in ("Hello", "!", " How", " can", " I", " help", "?")
    )
    + b"data: [DONE]\n\n"
)
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()


def _http(status: bytes, ctype: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + ctype
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _chunked(ctype: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: "
        + ctype
        + b"\r\ntransfer-encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )


R_CHAT = _http(b"200 OK", b"application/json", _RESP)
R_STREAM = _chunked(b"text/event-stream", _CHUNKS)
R_MODELS = _http(b"200 OK", b"application/json", _MODELS)
R_404 = _http(b"404 Not Found", b"application/json", b"{}")


class _Backend(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            n = int(m.group(1)) if m else 0
            if len(self.buf) < end + 4 + n:
                return
            body = self.buf[end + 4 : end + 4 + n]
            self.buf = self.buf[end + 4 + n :]
            line = head.split("\r\n", 1)[0]
            if " /v1/models" in line or line.startswith("GET"):
                self.t.write(R_MODELS if "models" in line else R_404)
            elif b'"stream": true' in body or b'"stream":true' in body:
                self.t.write(R_STREAM)
            else:
                self.t.write(R_CHAT)


def run_backend(port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Backend, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"port {port} did not open within {timeout:g} s")


def pctl(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))]


WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""


def parse_wrk(url: str, returncode: int, out: str, err: str = "") -> dict[str, Any]:
    """wrk's report as figures; a failed run or one without a successful request raises."""
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in ", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if returncode != 0 or not rps or not total:
        why = (err.strip() or out.strip() or f"exit status {returncode}").splitlines()[-1]
        raise BenchError(f"wrk against {url} failed (exit status {returncode}): {why}")
    requests, bad = int(total.group(1)), int(non2xx.group(1)) if non2xx else 0
    if requests - bad <= 0:
        raise BenchError(
            f"wrk against {url}: no successful request ({requests} sent, {bad} non-2xx"
            + (f", {errors.group(0)}" if errors else "")
            + ")"
        )
    return {
        "rps": float(rps.group(1)),
        "requests": requests,
        "non_2xx": bad,
        "socket_errors": errors.group(0) if errors else "",
    }


def run_wrk(url: str, body: bytes, token: str, duration: int, workdir: Path) -> dict[str, Any]:
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found (apt-get install {TOOLS[tool]}, or make bench)")
    lua = workdir / "wrk.lua"
    lua.write_text(WRK_LUA.format(body=json.dumps(body.decode()), token=token))
    cmd = [
        "taskset",
        "-c",
        CPU_LOAD,
        "wrk",
        "-t2",
        "-c32",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(lua),
        url,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    return parse_wrk(url, run.returncode, run.stdout, run.stderr)


async def open_loop(
    url: str, body: bytes, token: str, rate: float, duration: float
) -> dict[str, Any]:
    import aiohttp

    n = int(rate * duration)
    lat: list[float] = []
    lag: list[float] = []  # client-side lag: actual send start minus scheduled send time
    errors = 0
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        # warm the pool
        try:
            for _ in range(20):
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise BenchError(f"open loop against {url}: warm-up failed: {exc}") from exc
        clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
        start = clock() + 0.2

        async def one(i: int) -> None:
            nonlocal errors
            sched = start + i / rate
            delay = sched - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            lag.append((clock() - sched) * 1000)
            try:
                async with s.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
                ) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except Exception:
                errors += 1
                return
            lat.append((clock() - sched) * 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
    if not lat:
        raise BenchError(f"open loop against {url}: no successful request ({errors} of {n} failed)")
    return {
        "sent": n,
        "ok": len(lat),
        "errors": errors,
        "p50_ms": pctl(lat, 50),
        "p95_ms": pctl(lat, 95),
        "p99_ms": pctl(lat, 99),
        "max_ms": max(lat, default=float("nan")),
        "client_lag_p50_ms": pctl(lag, 50),
        "client_lag_p99_ms": pctl(lag, 99),
        "client_lag_max_ms": max(lag, default=float("nan")),
        "lat": lat,
        "lag": lag,
    }


def open_loop_pinned(
    url: str, body: bytes, token: str, rate: float, duration: float, rt: bool = False
) -> dict[str, Any]:
    """Run the open-loop client in its own process pinned to the load CPU (``rt``: SCHED_FIFO,
    priority RT_CLIENT, below the servers so the load generator never delays them)."""
    code = (
        f"import json,sys;sys.path.insert(0,{str(ROOT / 'bench')!r});import gateway as g;"
        f"import uvloop;print(json.dumps(uvloop.run(g.open_loop({url!r},{body!r},{token!r},"
        f"{rate!r},{duration!r}))))"
    )
    prio = ["chrt", "-f", str(RT_CLIENT)] if rt else []
    out = subprocess.run(
        ["taskset", "-c", CPU_LOAD, *prio, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=duration + 120,
    )
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        why = lines[-1] if lines else f"exit status {out.returncode}"
        if "BenchError: " in why:  # the client's own one-line reason
            raise BenchError(why.split("BenchError: ", 1)[1])
        raise BenchError(f"open-loop client against {url} failed: {why}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------------------------
# the run (inside the network namespace)
# ---------------------------------------------------------------------------------------------
def inner(args: argparse.Namespace) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    sys.path.insert(0, str(GW_SRC))
    from citadel_gateway.devtoken import mint

    work = Path(tempfile.mkdtemp(prefix="gwbench-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], cpu: str, env: dict[str, str] | None = None, log: str = "x") -> None:
        fh = open(work / f"{log}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                ["taskset", "-c", cpu, *cmd],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env or dict(os.environ),
            )
        )

    try:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (work / "pub.pem").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        token = mint(pem, "bench", "https://bench.local", ttl_s=3600)

        bport, rport, gport, lport = free_port(), free_port(), free_port(), free_port()
        spawn([sys.executable, __file__, "--backend", str(bport)], CPU_LOAD, log="backend")
        spawn(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(rport),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
            ],
            CPU_LOAD,
            log="redis",
        )
        big = {"per_minute": 1_000_000, "burst": 1_000_000}
        cfg = {
            "listen": {"host": "127.0.0.1", "port": gport, "workers": 1},
            "models": {MODEL: {"kind": "chat", "backends": [f"http://127.0.0.1:{bport}/v1"]}},
            "redis": {"url": f"redis://127.0.0.1:{rport}/0"},
            "auth": {"public_key_file": str(work / "pub.pem"), "issuers": ["https://bench.local"]},
            "rate_limits": {
                k: big
                for k in (
                    "chat_completions",
                    "completions",
                    "embeddings",
                    "collection_search",
                    "health",
                )
            },
            "cache": {"enabled": False},
            "logging": {"level": "info"},  # as deployed: one access line per request
        }
        import yaml

        (work / "gw.yml").write_text(yaml.safe_dump(cfg))
        env = dict(os.environ, PYTHONPATH=str(args.gateway_src))
        spawn(
            [sys.executable, "-m", "citadel_gateway", "--config", str(work / "gw.yml")],
            CPU_TARGET,
            env,
            log="gateway",
        )
        targets = {
            "direct": f"http://127.0.0.1:{bport}/v1/chat/completions",
            "gateway": f"http://127.0.0.1:{gport}/v1/chat/completions",
        }
        litellm_note = ""
        lbin = LITELLM_VENV / "bin" / "litellm"
        master_key = "sk-bench-" + os.urandom(16).hex()  # LiteLLM's own auth (master key)
        if not args.no_litellm and lbin.exists():
            lcfg = {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"http://127.0.0.1:{bport}/v1",
                            "api_key": "bench",
                        },
                    }
                ],
                "general_settings": {"master_key": master_key},
                "litellm_settings": {
                    "disable_hf_tokenizer_download": True,
                    "telemetry": False,
                    "set_verbose": False,
                },
            }
            (work / "litellm.yml").write_text(yaml.safe_dump(lcfg))
            lenv = dict(
                os.environ,
                LITELLM_LOCAL_MODEL_COST_MAP="True",
                HF_HUB_OFFLINE="1",
                LITELLM_LOG="ERROR",
                TRANSFORMERS_OFFLINE="1",
                NO_DOCS="True",
            )
            lenv.pop("PYTHONPATH", None)
            spawn(
                [
                    str(lbin),
                    "--config",
                    str(work / "litellm.yml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(lport),
                    "--num_workers",
                    "1",
                ],
                CPU_TARGET,
                lenv,
                log="litellm",
            )
            targets["litellm"] = f"http://127.0.0.1:{lport}/v1/chat/completions"
        elif not args.no_litellm:
            raise BenchError(f"{lbin} not found ({LITELLM_PIN}); --no-litellm runs without it")
        for url in targets.values():
            port = int(url.split(":")[2].split("/")[0])
            wait_port(port, 120)
        time.sleep(2)  # let LiteLLM finish its startup work

        pids = {"direct": procs[0].pid, "redis": procs[1].pid, "gateway": procs[2].pid}
        if "litellm" in targets:
            pids["litellm"] = procs[3].pid
        kinds = (("non_streaming", CHAT_BODY), ("streaming", STREAM_BODY))
        results: dict[str, Any] = {name: {k: {} for k, _ in kinds} for name in targets}
        # closed loops first, so that no open-loop run follows a saturating run on its target
        for name, url in targets.items():
            tok = master_key if name == "litellm" else token
            for kind, body in kinds:
                print(f"[bench] {name} {kind} closed loop", flush=True)
                results[name][kind]["closed"] = run_wrk(url, body, tok, args.duration, work)
                print(f"[bench]   {results[name][kind]['closed']}", flush=True)
        time.sleep(2)
        state = {"start": machine_state()}
        servers = [pids["direct"], pids["redis"], pids["gateway"]]
        for kind, body in kinds:
            for mode in ("shared", "isolated"):
                names = [n for n in targets if not (mode == "isolated" and n == "litellm")]
                if mode == "isolated" and not all(set_rt(p, RT_SERVER) for p in servers):
                    for p in servers:
                        set_rt(p, None)
                    state["isolated"] = "unavailable (chrt SCHED_FIFO refused)"
                    continue
                try:
                    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
                    for rep in range(args.reps):
                        for name in names:
                            if name == "litellm" and rep < args.reps - 1:
                                continue  # once, last: it is overloaded at this rate
                            tok = master_key if name == "litellm" else token
                            print(
                                f"[bench] {name} {kind} open loop {args.rate}/s {mode} #{rep + 1}",
                                flush=True,
                            )
                            w0 = sched_wait_ns(pids[name])
                            o = open_loop_pinned(
                                targets[name],
                                body,
                                tok,
                                args.rate,
                                args.duration,
                                rt=mode == "isolated",
                            )
                            w1 = sched_wait_ns(pids[name])
                            o["cpu_ns"], o["wait_ns"] = w1[0] - w0[0], w1[1] - w0[1]
                            runs[name].append(o)
                            print(f"[bench]   {_brief(o)}", flush=True)
                            if name == "litellm":
                                time.sleep(5)  # let it drain its backlog
                finally:
                    if mode == "isolated":
                        for p in servers:
                            set_rt(p, None)
                for name in names:
                    results[name][kind][mode] = pool_runs(runs[name])
        state["end"] = machine_state()
        OUT.mkdir(exist_ok=True)
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
            + _cpu_model()
            + f", Python {platform.python_version()}",
            "duration_s": args.duration,
            "rate": args.rate,
            "litellm_note": litellm_note,
            "reps": args.reps,
            "machine_state": state,
        }
        (OUT / args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        if not args.no_write:
            write_results(meta, results)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


def _brief(o: dict[str, Any]) -> str:
    if "error" in o:
        return str(o["error"])[-300:]
    return (
        f"p50 {o['p50_ms']:.2f} p95 {o['p95_ms']:.2f} p99 {o['p99_ms']:.2f} max {o['max_ms']:.1f}"
        f" ms, client lag p99 {o['client_lag_p99_ms']:.2f} ms, errors {o['errors']}/{o['sent']}"
    )


def pool_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """All samples of the repetitions together (a p99 of 200 req/s x 10 s rests on 20 samples)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error", "no run") if runs else "no run"}
    lat = [x for r in ok for x in r["lat"]]
    lag = [x for r in ok for x in r["lag"]]
    sent = sum(r["sent"] for r in ok)
    return {
        "runs": len(ok),
        "sent": sent,
        "errors": sum(r["errors"] for r in ok),
        "p50_ms": pctl(lat, 50),
        "p95_ms": pctl(lat, 95),
        "p99_ms": pctl(lat, 99),
        "max_ms": max(lat, default=float("nan")),
        "p99_per_run_ms": [round(r["p99_ms"], 2) for r in ok],
        "client_lag_p99_ms": pctl(lag, 99),
        "target_cpu_us_per_req": sum(r["cpu_ns"] for r in ok) / sent / 1e3,
        "target_runq_wait_us_per_req": sum(r["wait_ns"] for r in ok) / sent / 1e3,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _open_cells(o: dict[str, Any] | None, d: dict[str, Any] | None) -> list[str]:
    if not o:
        return ["-", "-"]
    if "error" in o:
        return ["failed", "-"]
    keys = ("p50_ms", "p95_ms", "p99_ms")
    cell = " / ".join(f"{o[k]:.2f}" for k in keys)
    added = "-" if d is None or "error" in d else " / ".join(f"{o[k] - d[k]:+.2f}" for k in keys)
    return [cell, added]


def write_results(meta: dict[str, Any], results: dict[str, Any]) -> None:
    ms = meta.get("machine_state", {})
    lines = [
        "## Gateway (bench/gateway.py)",
        "",
        f"Run {meta['date']} on {meta['machine']}. Inside `unshare -n` (loopback only). Pinning: "
        "proxy under test on CPU 1 (`taskset -c 1`); fake backend, Redis and load generators on "
        f"CPU 0. Closed loop: `wrk -t2 -c32`, {meta['duration_s']} s. Open loop: "
        f"{meta['rate']} req/s scheduled by the clock, latency from the *scheduled* send time "
        f"(gateway queueing is never hidden), {meta['reps']} x {meta['duration_s']} s per target, "
        "direct and gateway runs interleaved, all samples pooled. Gateway: 1 worker, production "
        "settings: JWT (RS256) and a Redis GCRA rate-limit decision (one EVALSHA, sent together "
        "with the upstream request once the subject has room: `overlap_upstream`) on every "
        "request, the JSON access log on (one line per request, to a file), cache off. LiteLLM: `"
        + LITELLM_PIN
        + "`, 1 worker, offline settings, one open-loop run (it is overloaded at this rate).",
        "",
        "Machine state (shared 2-core VM; other engineers' lab containers run on it): "
        f"at start {ms.get('start', '?')}; at end {ms.get('end', '?')} "
        "(load average over 1/5/15 min; PSI `some` = share of time a task waited for a CPU).",
        "",
        "Two open-loop regimes, identical for direct and gateway: **shared** = default "
        "scheduling, competing with whatever else runs on the VM; **isolated** = backend, Redis "
        f"and the proxy at SCHED_FIFO {RT_SERVER} and the load generator at SCHED_FIFO "
        f"{RT_CLIENT} for the run only (`chrt`), so other tenants' processes cannot sit between a "
        "wake-up and its CPU, and the load generator (a stand-in for remote clients) cannot delay "
        "the servers. LiteLLM runs in the shared regime only (a saturated real-time process would "
        "starve the VM).",
        "",
    ]
    if ms.get("isolated"):
        lines += [f"**Isolated regime {ms['isolated']}.**", ""]
    if meta.get("litellm_note"):
        lines += [f"**{meta['litellm_note']}** - gateway vs direct only.", ""]
    for kind in ("non_streaming", "streaming"):
        d = results.get("direct", {}).get(kind)
        if not d:
            continue
        lines += [
            f"### {kind.replace('_', '-')}",
            "",
            "| target | max throughput (req/s) | shared p50 / p95 / p99 (ms) "
            "| shared added over direct | isolated p50 / p95 / p99 (ms) "
            "| isolated added over direct | p99 per run, isolated (ms) "
            "| target CPU / runq wait per req, shared (us) | errors |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name in ("direct", "gateway", "litellm"):
            r = results.get(name, {}).get(kind)
            if not r:
                continue
            sh, iso = r.get("shared"), r.get("isolated")
            ref = None if name == "direct" else d
            sh_cells = _open_cells(sh, ref.get("shared") if ref else None)
            iso_cells = _open_cells(iso, ref.get("isolated") if ref else None)
            per_run = ", ".join(str(x) for x in (iso or {}).get("p99_per_run_ms", [])) or "-"
            cpu = (
                f"{sh['target_cpu_us_per_req']:.0f} / {sh['target_runq_wait_us_per_req']:.0f}"
                if sh and "error" not in sh
                else "-"
            )
            errs = sum(x.get("errors", 0) for x in (sh, iso) if x and "error" not in x)
            sent = sum(x.get("sent", 0) for x in (sh, iso) if x and "error" not in x)
            lines.append(
                f"| {name} | {r['closed']['rps']:.0f} | "
                + " | ".join([*sh_cells, *iso_cells, per_run, cpu])
                + f" | {errs} of {sent} |"
            )
        g = results.get("gateway", {}).get(kind)
        lt = results.get("litellm", {}).get(kind)
        lines.append("")
        if g and lt and lt["closed"]["rps"]:
            ratio = g["closed"]["rps"] / lt["closed"]["rps"]
            lines += [f"Gateway / LiteLLM max throughput: **{ratio:.1f}x** (target >= 5x).", ""]
        for mode in ("shared", "isolated"):
            go, do = (g or {}).get(mode), d.get(mode)
            if go and do and "error" not in go and "error" not in do:
                added99 = go["p99_ms"] - do["p99_ms"]
                verdict = "met" if added99 < 2 else "NOT met"
                lines.append(
                    f"- gateway added p99 at {meta['rate']:g} req/s, {mode}: "
                    f"**{added99:.2f} ms** (target < 2 ms: {verdict})"
                )
        lines.append("")
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pat = re.compile(r"^## Gateway \(bench/gateway\.py\)\n.*?(?=^## |\Z)", re.S | re.M)
    prev = pat.search(old)
    notes = (
        re.search(r"^### Notes \(hand-written\).*", prev.group(0), re.S | re.M) if prev else None
    )
    if notes:  # the hand-written analysis survives a re-run
        lines += [notes.group(0).rstrip(), ""]
    section = "\n".join(lines).rstrip() + "\n"
    new = (
        pat.sub(lambda _m: section + "\n", old)
        if pat.search(old)
        else old.rstrip() + "\n\n" + section
    )
    RESULTS.write_text(new.rstrip() + "\n")
    print(section)


def ensure_litellm() -> None:
    """LiteLLM pinned into bench/.venv-litellm, or :class:`BenchError` (``--no-litellm``)."""
    if (LITELLM_VENV / "bin" / "litellm").exists():
        return
    print(f"[bench] installing {LITELLM_PIN} into {LITELLM_VENV}", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_PIN],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise BenchError(
            f"{LITELLM_PIN} could not be installed into {LITELLM_VENV} ({exc}); "
            "--no-litellm compares gateway and direct only"
        ) from exc


def main() -> None:
    try:
        _main()
    except BenchError as exc:
        sys.exit(f"bench: {exc}")


def _main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=12)
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--reps", type=int, default=3, help="open-loop repetitions (interleaved)")
    ap.add_argument(
        "--gateway-src",
        default=str(GW_SRC),
        help="gateway source tree to run (e.g. an export of an older commit)",
    )
    ap.add_argument("--json", default="gateway.json", help="file name under bench/out/")
    ap.add_argument("--no-write", action="store_true", help="do not touch bench/RESULTS.md")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backend:
        run_backend(args.backend)
        return
    require_tools()
    if args.inner:
        inner(args)
        return
    if not args.no_litellm:
        ensure_litellm()
    passthrough = [a for a in sys.argv[1:] if a != "--inner"]
    cmd = f"ip link set lo up && exec {sys.executable} {__file__} --inner " + " ".join(passthrough)
    sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", cmd]))


if __name__ == "__main__":
    main()
