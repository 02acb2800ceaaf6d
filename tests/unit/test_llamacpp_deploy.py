"""llama.cpp (CPU) engine: config, rendered units, and the commands its deploy generates."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import deploy_harness as h
import pytest
import yaml

from citadel.artifacts import ArtifactUnavailable
from citadel.components.model_server import (
    LLAMACPP_CONFIG,
    LLAMACPP_LAUNCHER,
    LLAMACPP_UNIT,
    POOLING,
    Config,
    Llamacpp,
)
from citadel.render import render_host
from citadel.wheels import LLAMA_CPP_VERSION
from deploys import _venv, llamacpp
from deploys._service import ready_check

ROOT = Path(__file__).resolve().parents[2]


def _unit(host: str) -> str:
    ctx = h.context("inventory/lab.yml", host)
    files = {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}
    return files[LLAMACPP_UNIT]


def _server(host: str) -> dict:
    ctx = h.context("inventory/lab.yml", host)
    files = {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}
    return json.loads(files[LLAMACPP_CONFIG])


def test_version_default_and_group_data_pin_the_prebuilt_engine() -> None:
    assert Llamacpp().version == LLAMA_CPP_VERSION == "2026.10.11549"
    data = yaml.safe_load((ROOT / "group_data/model.yml").read_text())
    assert data["model"]["llamacpp"]["version"] == "2026.10.11549"


def test_lab_embeddings_host_runs_llamacpp_under_the_production_name() -> None:
    ctx = h.context("inventory/lab.yml", "llm-embed")
    names = {
        x.name: (x.model.served_name, x.model.port)
        for x in ctx.cluster.hosts
        if x.model and x.model.engine == "llamacpp"
    }
    assert names == {"llm-embed": ("llama-3-embeddings", 11434)}


def test_unit_starts_the_launcher_with_its_parameters() -> None:
    line = next(x for x in _unit("llm-embed").splitlines() if x.startswith("ExecStart="))
    assert line == f"ExecStart=/opt/llama-cpp/bin/python {LLAMACPP_LAUNCHER} {LLAMACPP_CONFIG}"


def _cpu_config(api: str, name: str) -> Config:
    return Config(engine="llamacpp", served_name=name, api=api)  # type: ignore[arg-type]


def test_chat_server_binds_the_host_address_under_the_served_name() -> None:
    assert _cpu_config("chat", "llama-3-chat").llamacpp_server("10.210.10.28") == {
        "model": "/var/lib/llama-cpp/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        "alias": "llama-3-chat",
        "host": "10.210.10.28",
        "port": 8000,
        "n_ctx": 2048,
        "threads": 1,
        "embedding": False,
    }


def test_instruct_server_serves_completions() -> None:
    server = _cpu_config("completions", "llama-3-instruct").llamacpp_server("10.210.10.29")
    assert (server["alias"], server["host"], server["port"]) == (
        "llama-3-instruct",
        "10.210.10.29",
        8000,
    )
    assert server["embedding"] is False


def test_embeddings_server_pools_one_vector_per_input() -> None:
    server = _server("llm-embed")
    assert (server["alias"], server["port"]) == ("llama-3-embeddings", 11434)
    assert server["embedding"] is True
    assert server["pooling"] == POOLING["mean"]


def test_launcher_and_parameters_are_checked_before_they_go_live() -> None:
    ctx = h.context("inventory/lab.yml", "llm-embed")
    specs = {f.spec.dest: f.spec for f in render_host(ctx.cluster, ctx.host)}
    assert specs[LLAMACPP_LAUNCHER].validate == "python3 -m py_compile {path}"
    assert specs[LLAMACPP_CONFIG].validate is not None
    launcher = next(
        f.content for f in render_host(ctx.cluster, ctx.host) if f.spec.dest == LLAMACPP_LAUNCHER
    )
    compile(launcher, LLAMACPP_LAUNCHER, "exec")  # valid Python as rendered


def test_unit_runs_as_its_own_user_and_restarts() -> None:
    unit = _unit("llm-embed")
    assert "User=llama-cpp" in unit
    assert "Restart=on-failure" in unit
    assert "WantedBy=multi-user.target" in unit


def test_model_source_is_a_pinned_package_or_an_absolute_path() -> None:
    with pytest.raises(ValueError):
        Llamacpp(model_source="gemma.gguf")
    cfg = Config(
        engine="llamacpp", served_name="c", api="chat", llamacpp={"model_source": "/m/x.gguf"}
    )
    assert cfg.llamacpp_model_path() == "/m/x.gguf"


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    wheel = tmp_path / "xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_x86_64.whl"
    dep = tmp_path / "orjson-0.1-py3-none-any.whl"
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    for path in (wheel, dep, gguf):
        path.write_bytes(path.name.encode())
    seen: dict[str, str] = {}

    def fake_wheels(cfg: Config, python_version: str) -> tuple[Path, list[Path]]:
        seen["python"] = python_version
        return wheel, [dep]

    monkeypatch.setattr(llamacpp, "controller_wheels", fake_wheels)
    monkeypatch.setattr(llamacpp, "controller_model", lambda cfg: gguf)
    return {"wheel": wheel, "dep": dep, "gguf": gguf, "seen": seen}  # type: ignore[dict-item]


PYTHON_FACT = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"
MARKER_FACT = "cat /opt/llama-cpp/.citadel-wheels 2>/dev/null || true"


def _facts(distro: str, extra: dict | None = None) -> dict:
    return {
        "LinuxDistribution": h.DISTROS[distro],
        ("Command", PYTHON_FACT): h.PYTHONS[distro],
        **(extra or {}),
    }


def _apply(host: str, facts: dict) -> h.Run:
    ctx = h.context("inventory/lab.yml", host)
    return h.run(llamacpp.apply, facts, ctx, ctx.host.model)


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_cold_converge_commands(distro: str, artifacts: dict) -> None:
    run = _apply("llm-embed", _facts(distro))
    assert artifacts["seen"]["python"] == h.PYTHONS[distro]
    apt = run.op("Install python3-venv, libgomp1")
    assert "install --no-install-recommends python3-venv libgomp1 curl" in apt.text()
    assert run.op("virtualenv /opt/llama-cpp").commands == ["python3 -m venv /opt/llama-cpp"]
    pip = run.op("pip install").text()
    assert "/opt/llama-cpp/bin/pip install --no-index" in pip
    assert "--find-links /var/cache/citadel/wheels/llama-cpp xllamacpp==2026.10.11549" in pip
    assert "--force-reinstall" not in pip
    assert pip.endswith("> /opt/llama-cpp/.citadel-wheels")
    assert run.index("upload xllamacpp") < run.index("pip install")
    assert run.index("upload orjson") < run.index("pip install")
    model = run.op("Upload model")
    assert (
        f"<upload {artifacts['gguf']} -> /var/lib/llama-cpp/models/SmolLM2-135M-Instruct.Q4_1.gguf>"
        in model.text()
    )
    restart = run.op("Restart llama-cpp")
    wait = run.op("Wait until /v1/models lists llama-3-embeddings")
    assert restart.conditional and wait.conditional
    assert not run.op("Run llama-cpp").conditional
    assert "-lt 120 ]" in wait.text()
    assert "http://10.210.10.31:11434/v1/models" in wait.text()
    order = [
        "pip install",
        "Upload model",
        "Write /etc/systemd/system/llama-cpp.service",
        "Reload systemd units",
        "Restart llama-cpp",
        "Run llama-cpp",
        "Wait until",
    ]
    assert [run.index(o) for o in order] == sorted(run.index(o) for o in order)


def test_rerun_with_current_install_uploads_no_wheel_and_runs_no_pip(artifacts: dict) -> None:
    ctx = h.context("inventory/lab.yml", "llm-embed")
    assert ctx.host.model is not None
    wanted = _venv.fingerprint(
        llamacpp.requirement(ctx.host.model), [artifacts["wheel"], artifacts["dep"]]
    )
    facts = _facts("debian13", {("Command", MARKER_FACT): wanted})
    run = _apply("llm-embed", facts)
    assert not run.has("pip install")
    assert not run.has("upload xllamacpp")


def test_python_version_falls_back_to_the_distribution(artifacts: dict) -> None:
    facts = {"LinuxDistribution": h.DISTROS["ubuntu2404"]}
    _apply("llm-embed", facts)
    assert artifacts["seen"]["python"] == "3.12"


def test_a_model_path_missing_on_the_host_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, artifacts: dict
) -> None:
    monkeypatch.setattr(llamacpp, "controller_model", lambda cfg: None)
    ctx = h.context("inventory/lab.yml", "llm-embed")
    assert ctx.host.model is not None
    cfg = ctx.host.model.model_copy(update={"llamacpp": Llamacpp(model_source="/srv/m.gguf")})
    with pytest.raises(ArtifactUnavailable, match=r"/srv/m\.gguf is not on llm-embed"):
        h.run(llamacpp.apply, _facts("debian13"), ctx, cfg)


def test_ready_check_is_bounded_and_gives_up_on_a_crash_loop() -> None:
    cmd = ready_check("svc", "http://a:1/x", '"name"', 7)
    assert "-lt 7 ]" in cmd  # seconds of wall clock, not loop turns
    assert "NRestarts" in cmd and "n0 + 3" in cmd
    assert "grep -qF '\"name\"'" in cmd
    assert cmd.endswith("exit 1")
    assert "-o /dev/null" in ready_check("svc", "http://a:1/health", None, 5)


def _run_ready_check(tmp_path: Path, curl: str, restarts: str, timeout_s: int) -> tuple[int, str]:
    """Run the real shell command with systemctl, curl and journalctl stood in on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        "systemctl": restarts,
        "curl": curl,
        "journalctl": 'echo "last log line"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "N": str(tmp_path / "n")}
    cmd = ready_check("svc", "http://a:1/health", None, timeout_s)
    proc = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stderr


def test_ready_check_answers_at_once_when_the_service_does(tmp_path: Path) -> None:
    assert _run_ready_check(tmp_path, "exit 0", "echo 0", 5) == (0, "")


def test_ready_check_times_out_in_wall_clock_seconds_and_says_so(tmp_path: Path) -> None:
    t0 = time.monotonic()
    rc, err = _run_ready_check(tmp_path, "sleep 1; exit 7", "echo 0", 2)
    assert rc == 1
    assert time.monotonic() - t0 < 6  # each turn costs a probe and a sleep: still 2 s in all
    assert "svc: http://a:1/health not ready within 2s" in err
    assert "last log line" in err


def test_ready_check_names_a_crash_loop(tmp_path: Path) -> None:
    counter = 'n=$(cat "$N" 2>/dev/null || echo 0); echo $((n + 1)) > "$N"; echo $n'
    rc, err = _run_ready_check(tmp_path, "exit 7", counter, 60)
    assert rc == 1
    assert "svc: crashed and restarted 3 times while starting" in err
    assert "not ready within" not in err
