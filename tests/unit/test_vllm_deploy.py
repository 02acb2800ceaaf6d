"""vLLM deploy: rendered unit + secret env file, and its commands on each distribution."""

from __future__ import annotations

import deploy_harness as h
import pytest
from pydantic import ValidationError

from citadel.components.model_server import VLLM_ENV_FILE, VLLM_UNIT, Config
from citadel.render import render_host
from citadel.secrets import MASK
from deploys import vllm

SOURCE = "meta-llama/Meta-Llama-3-8B-Instruct"


def _files(host: str) -> dict:
    ctx = h.context("inventory/production.yml", host)
    return {f.spec.dest: f for f in render_host(ctx.cluster, ctx.host)}


def test_unit_serves_the_production_name_on_its_address() -> None:
    unit = _files("llm-chat")[VLLM_UNIT].content
    line = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    assert line == (
        f"ExecStart=/opt/vllm/bin/vllm serve {SOURCE} --host 192.168.10.28 --port 8000 "
        "--served-model-name llama-3-chat --gpu-memory-utilization 0.9 --max-model-len 8192 "
        "--dtype auto"
    )
    assert f"EnvironmentFile={VLLM_ENV_FILE}" in unit
    assert "User=vllm" in unit
    assert "TimeoutStartSec=900" in unit
    instruct = _files("llm-instruct")[VLLM_UNIT].content
    assert "--host 192.168.10.29 --port 8000 --served-model-name llama-3-instruct" in instruct


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


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_cold_converge_commands(distro: str) -> None:
    ctx = h.context("inventory/production.yml", "llm-chat")
    run = h.run(vllm.apply, {"LinuxDistribution": h.DISTROS[distro]}, ctx, ctx.host.model)
    assert run.op("virtualenv /opt/vllm").commands == ["python3 -m venv /opt/vllm"]
    assert "/opt/vllm/bin/pip install vllm==0.11.0" in run.op("vllm==0.11.0").text()
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
        "vllm==0.11.0",
        f"Write {VLLM_ENV_FILE}",
        f"Download {SOURCE}",
        "Restart vllm",
        "Run vllm",
        "Wait until /health",
    ]
    assert [run.index(o) for o in order] == sorted(run.index(o) for o in order)
    wait = run.op("Wait until /health")
    assert wait.conditional and run.op("Restart vllm").conditional
    assert "seq 1 900" in wait.text()
    assert "http://192.168.10.28:8000/health -o /dev/null" in wait.text()


def test_model_already_cached_is_not_downloaded_again() -> None:
    ctx = h.context("inventory/production.yml", "llm-instruct")
    facts = {
        "LinuxDistribution": h.DISTROS["ubuntu2204"],
        ("Command", PRESENT): f"{vllm.hf_cache_dir(SOURCE)}/snapshots/abc/config.json",
    }
    run = h.run(vllm.apply, facts, ctx, ctx.host.model)
    assert not run.has("Download")


def test_installed_vllm_is_not_reinstalled() -> None:
    ctx = h.context("inventory/production.yml", "llm-chat")
    facts = {
        "LinuxDistribution": h.DISTROS["ubuntu2404"],
        ("File", "/opt/vllm/bin/activate"): {"mode": 644},
        "PipPackages": {"vllm": ["0.11.0"]},
    }
    run = h.run(vllm.apply, facts, ctx, ctx.host.model)
    assert run.op("virtualenv /opt/vllm").commands == []
    assert run.op("vllm==0.11.0").commands == []


def test_hf_cache_layout() -> None:
    assert (
        vllm.hf_cache_dir(SOURCE)
        == "/var/lib/vllm/hf/hub/models--meta-llama--Meta-Llama-3-8B-Instruct"
    )
