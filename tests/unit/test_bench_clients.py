"""bench/clients.py gives no figure for a run that did not happen: a missing tool, a failed
operation or a wrong reply is a ``BenchError`` (one line, exit 1). Nothing here benchmarks."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_clients", ROOT / "bench" / "clients.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def test_a_failed_operation_is_an_error_not_a_figure() -> None:
    async def op(i: int) -> Any:
        raise TimeoutError("Timeout reading from 127.0.0.1")

    with pytest.raises(bench.BenchError, match="an operation failed: TimeoutError"):
        asyncio.run(bench.run_once(op, 10, 2, lambda r: True))


def test_a_wrong_reply_is_an_error_not_a_figure() -> None:
    async def op(i: int) -> Any:
        return b"not the answer"

    with pytest.raises(bench.BenchError, match="unexpected reply"):
        asyncio.run(bench.run_once(op, 10, 1, bench.CHECKS["search"]))


def test_a_run_gives_cpu_latency_and_rate() -> None:
    async def op(i: int) -> Any:
        return i

    r = asyncio.run(bench.run_once(op, 64, 4, lambda reply: isinstance(reply, int)))
    assert set(r) == {"cpu_us", "p50_us", "p99_us", "ops_s"} and r["ops_s"] > 0


def test_a_missing_tool_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.shutil, "which", lambda cmd: None)
    monkeypatch.setattr(sys, "argv", ["clients.py"])
    with pytest.raises(SystemExit) as exc:
        bench.main()
    assert exc.value.code == "bench: missing tool: redis-server (bench/install.sh installs it)"
