"""Runs the real exporter on this machine (no GPU) and scrapes it over loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .fake_nvml import EXPORTER_SRC


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def exporter() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(EXPORTER_SRC)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citadel_gpu_exporter",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"exporter exited early: {proc.communicate()[0]}")
            try:
                get(base + "/")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("exporter did not answer within 30 s")
                time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_real_exporter_without_gpu(exporter: tuple[str, subprocess.Popen[str]]) -> None:
    base, proc = exporter
    have_gpu = os.path.exists("/dev/nvidiactl")
    for _ in range(3):
        status, body = get(base + "/metrics")
        assert status == 200
        if have_gpu:  # pragma: no cover - only on a GPU machine
            assert "nvidia_gpu_up 1.0" in body
        else:
            assert "nvidia_gpu_up 0.0" in body
            assert "nvidia_gpu_utilization_percentage{" not in body
        assert "process_resident_memory_bytes" in body
    status, body = get(base + "/")
    assert status == 200
    assert 'href="/metrics"' in body
    assert get(base + "/nope")[0] == 404

    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    if not have_gpu:
        # the reason is logged once at start-up, not once per scrape
        assert out.count("NVML unavailable") == 1, out
