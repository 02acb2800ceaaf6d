"""bench/gateway.py never turns a missing tool or a run without a successful request into a
figure: each is a ``BenchError`` that stops the benchmark with one line (issue 19, point 7).
Nothing here runs a benchmark."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "bench" / "gateway.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load()
URL = "http://127.0.0.1:9/v1/chat/completions"

WRK_OK = """Running 12s test @ http://127.0.0.1:8000/v1/chat/completions
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.61ms  412.09us  11.60ms   83.23%
  60913 requests in 12.00s, 33.05MB read
Requests/sec:   5074.94
Transfer/sec:      2.75MB
"""
WRK_ALL_FAILED = """Running 12s test @ http://127.0.0.1:8000/v1/chat/completions
  2 threads and 32 connections
  60913 requests in 12.00s, 33.05MB read
  Non-2xx or 3xx responses: 60913
Requests/sec:   5074.94
Transfer/sec:      2.75MB
"""
WRK_NOTHING = """Running 12s test @ http://127.0.0.1:8000/v1/chat/completions
  2 threads and 32 connections
  0 requests in 12.00s, 0.00B read
  Socket errors: connect 32, read 0, write 0, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
"""


def _which_without(*absent: str) -> Any:
    return lambda cmd: None if cmd in absent else f"/usr/bin/{cmd}"


# ---------------------------------------------------------------------------------- tools


def test_a_missing_tool_is_an_error_naming_it_and_its_package() -> None:
    with pytest.raises(bench.BenchError, match=r"missing tool\(s\): wrk \(apt-get install wrk"):
        bench.require_tools(which=_which_without("wrk"), find_spec=lambda m: object())


def test_a_missing_python_module_is_an_error_naming_it() -> None:
    with pytest.raises(bench.BenchError, match=r"missing Python module.*uvloop"):
        bench.require_tools(
            which=_which_without(), find_spec=lambda m: None if m == "uvloop" else object()
        )


def test_everything_present_passes() -> None:
    bench.require_tools(which=_which_without(), find_spec=lambda m: object())


def test_run_wrk_without_wrk_raises_before_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(bench.shutil, "which", _which_without("wrk"))

    def no_run(*a: object, **kw: object) -> None:
        raise AssertionError("nothing may run")

    monkeypatch.setattr(bench.subprocess, "run", no_run)
    with pytest.raises(bench.BenchError, match="wrk not found"):
        bench.run_wrk(URL, b"{}", "t", 1, tmp_path)


def test_main_stops_with_one_line_and_exit_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.shutil, "which", _which_without("wrk", "taskset"))
    monkeypatch.setattr(sys, "argv", ["gateway.py", "--no-litellm"])

    def no_call(*a: object, **kw: object) -> None:
        raise AssertionError("the run must not start")

    monkeypatch.setattr(bench.subprocess, "call", no_call)
    with pytest.raises(SystemExit) as exc:
        bench.main()
    msg = exc.value.code
    assert isinstance(msg, str)  # sys.exit(str): printed to stderr, exit status 1
    assert msg.startswith("bench: missing tool(s): wrk, taskset")
    assert "\n" not in msg


# ---------------------------------------------------------------------------------- wrk's report


def test_wrk_report_with_successes_is_a_figure() -> None:
    r = bench.parse_wrk(URL, 0, WRK_OK)
    assert r["rps"] == pytest.approx(5074.94)
    assert r["requests"] == 60913
    assert r["non_2xx"] == 0


def test_wrk_that_failed_to_start_is_an_error_not_zero() -> None:
    err = "taskset: failed to execute wrk: No such file or directory\n"
    with pytest.raises(bench.BenchError, match="failed to execute wrk"):
        bench.parse_wrk(URL, 1, "", err)


def test_wrk_without_a_report_is_an_error() -> None:
    with pytest.raises(bench.BenchError, match="wrk against"):
        bench.parse_wrk(URL, 0, "unable to connect to 127.0.0.1:9 Connection refused\n")


@pytest.mark.parametrize("out", [WRK_ALL_FAILED, WRK_NOTHING], ids=["all-non-2xx", "no-request"])
def test_wrk_run_without_a_successful_request_is_an_error(out: str) -> None:
    with pytest.raises(bench.BenchError, match="no successful request"):
        bench.parse_wrk(URL, 0, out)


# ---------------------------------------------------------------------------------- open loop


class _Always500(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            if len(rest) < n:
                return
            self.buf = rest[n:]
            self.t.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\n{}")


def test_open_loop_without_a_successful_request_is_an_error() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Always500, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await bench.open_loop(
                f"http://127.0.0.1:{port}/v1/chat/completions", b"{}", "t", 50, 0.2
            )
        finally:
            server.close()

    with pytest.raises(bench.BenchError, match=r"no successful request \(10 of 10 failed\)"):
        asyncio.run(run())


def test_open_loop_against_nothing_is_an_error() -> None:
    with pytest.raises(bench.BenchError, match="warm-up failed"):
        asyncio.run(bench.open_loop(URL, b"{}", "t", 50, 0.2))


def test_a_failed_open_loop_client_is_an_error_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = (
        "Traceback (most recent call last):\n  ...\n"
        f"gateway.BenchError: open loop against {URL}: no successful request (10 of 10 failed)\n"
    )

    def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(bench.subprocess, "run", run)
    with pytest.raises(bench.BenchError) as exc:
        bench.open_loop_pinned(URL, b"{}", "t", 50, 0.2)
    assert str(exc.value) == f"open loop against {URL}: no successful request (10 of 10 failed)"
