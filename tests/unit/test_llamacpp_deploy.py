"""llama.cpp (CPU) engine: config, rendered units, and the commands its deploy generates."""

from __future__ import annotations

from pathlib import Path

import deploy_harness as h
import pytest
import yaml

from citadel.artifacts import ArtifactUnavailable
from citadel.components.model_server import LLAMACPP_UNIT, Config, Llamacpp
from citadel.render import render_host
from citadel.wheels import LLAMA_CPP_VERSION
from deploys import _venv, llamacpp
from deploys._service import ready_check

ROOT = Path(__file__).resolve().parents[2]


def _unit(host: str) -> str:
    ctx = h.context("inventory/lab.yml", host)
    files = {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}
    return files[LLAMACPP_UNIT]


def _exec(unit: str) -> str:
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


def test_version_default_and_group_data_pin_0_3_36() -> None:
    assert Llamacpp().version == LLAMA_CPP_VERSION == "0.3.36"
    data = yaml.safe_load((ROOT / "group_data/model.yml").read_text())
    assert data["model"]["llamacpp"]["version"] == "0.3.36"


def test_lab_model_hosts_run_llamacpp_under_production_names() -> None:
    ctx = h.context("inventory/lab.yml", "llm-chat")
    names = {
        x.name: (x.model.engine, x.model.served_name, x.model.port)
        for x in ctx.cluster.hosts
        if x.model
    }
    assert names == {
        "llm-chat": ("llamacpp", "llama-3-chat", 8000),
        "llm-instruct": ("llamacpp", "llama-3-instruct", 8000),
        "llm-embed": ("llamacpp", "llama-3-embeddings", 11434),
    }


def test_chat_unit_binds_the_host_address_with_gemma_chat_format() -> None:
    line = _exec(_unit("llm-chat"))
    assert line.startswith("ExecStart=/opt/llama-cpp/bin/python -m llama_cpp.server ")
    assert "--model /var/lib/llama-cpp/models/gemma-3-270m-q4_k_m.gguf" in line
    assert "--model_alias llama-3-chat --host 10.210.10.28 --port 8000" in line
    assert "--chat_format gemma" in line
    assert "--n_ctx 2048 --n_threads 1" in line
    assert "--embedding" not in line


def test_instruct_unit_serves_completions() -> None:
    line = _exec(_unit("llm-instruct"))
    assert "--model_alias llama-3-instruct --host 10.210.10.29 --port 8000" in line
    assert "--chat_format gemma" in line


def test_embeddings_unit_pools_one_vector_per_input() -> None:
    line = _exec(_unit("llm-embed"))
    assert "--model_alias llama-3-embeddings --host 10.210.10.31 --port 11434" in line
    assert "--embedding true --kv_overrides gemma3.pooling_type=int:1" in line
    assert "--chat_format" not in line


def test_pooling_none_leaves_the_model_default() -> None:
    cfg = Config(engine="llamacpp", served_name="e", api="embeddings", llamacpp={"pooling": "none"})
    assert "--kv_overrides" not in cfg.llamacpp_args("10.0.0.1")


def test_unit_runs_as_its_own_user_and_restarts() -> None:
    unit = _unit("llm-chat")
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
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    dep = tmp_path / "fastapi-0.1-py3-none-any.whl"
    gguf = tmp_path / "gemma-3-270m-q4_k_m.gguf"
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
    run = _apply("llm-chat", _facts(distro))
    assert artifacts["seen"]["python"] == h.PYTHONS[distro]
    apt = run.op("Install python3-venv, libgomp1")
    assert "install --no-install-recommends python3-venv libgomp1 curl" in apt.text()
    assert run.op("virtualenv /opt/llama-cpp").commands == ["python3 -m venv /opt/llama-cpp"]
    pip = run.op("pip install").text()
    assert "/opt/llama-cpp/bin/pip install --no-index" in pip
    assert (
        "--find-links /var/cache/citadel/wheels/llama-cpp 'llama-cpp-python[server]==0.3.36'" in pip
    )
    assert "--force-reinstall" not in pip
    assert pip.endswith("> /opt/llama-cpp/.citadel-wheels")
    assert run.index("upload llama_cpp_python") < run.index("pip install")
    assert run.index("upload fastapi") < run.index("pip install")
    model = run.op("Upload model")
    assert (
        f"<upload {artifacts['gguf']} -> /var/lib/llama-cpp/models/gemma-3-270m-q4_k_m.gguf>"
        in model.text()
    )
    restart = run.op("Restart llama-cpp")
    wait = run.op("Wait until /v1/models lists llama-3-chat")
    assert restart.conditional and wait.conditional
    assert not run.op("Run llama-cpp").conditional
    assert "seq 1 120" in wait.text()
    assert "http://10.210.10.28:8000/v1/models" in wait.text()
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
    ctx = h.context("inventory/lab.yml", "llm-chat")
    assert ctx.host.model is not None
    wanted = _venv.fingerprint(
        llamacpp.requirement(ctx.host.model), [artifacts["wheel"], artifacts["dep"]]
    )
    facts = _facts("debian13", {("Command", MARKER_FACT): wanted})
    run = _apply("llm-chat", facts)
    assert not run.has("pip install")
    assert not run.has("upload llama_cpp_python")


def test_python_version_falls_back_to_the_distribution(artifacts: dict) -> None:
    facts = {"LinuxDistribution": h.DISTROS["ubuntu2404"]}
    _apply("llm-embed", facts)
    assert artifacts["seen"]["python"] == "3.12"


def test_a_model_path_missing_on_the_host_stops_with_one_line(
    monkeypatch: pytest.MonkeyPatch, artifacts: dict
) -> None:
    monkeypatch.setattr(llamacpp, "controller_model", lambda cfg: None)
    ctx = h.context("inventory/lab.yml", "llm-chat")
    assert ctx.host.model is not None
    cfg = ctx.host.model.model_copy(update={"llamacpp": Llamacpp(model_source="/srv/m.gguf")})
    with pytest.raises(ArtifactUnavailable, match=r"/srv/m\.gguf is not on llm-chat"):
        h.run(llamacpp.apply, _facts("debian13"), ctx, cfg)


def test_ready_check_is_bounded_and_gives_up_on_a_crash_loop() -> None:
    cmd = ready_check("svc", "http://a:1/x", '"name"', 7)
    assert "seq 1 7" in cmd
    assert "NRestarts" in cmd and "n0 + 3" in cmd
    assert "grep -qF '\"name\"'" in cmd
    assert cmd.endswith("exit 1")
    assert "-o /dev/null" in ready_check("svc", "http://a:1/health", None, 5)
