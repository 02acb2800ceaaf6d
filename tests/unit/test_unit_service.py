"""The unit-service shape (deploys._service.unit_service): every such deploy adds its operations
from the same lines, so each carries its own place; two engines of one component on two hosts
(Ollama on one, llama.cpp on another) keep their operations apart in one pyinfra run."""

from __future__ import annotations

from pathlib import Path

import deploy_harness as h
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.context import ctx_host, ctx_state

from deploys import gpu_exporter, llamacpp, ollama, vllm
from deploys._service import UnitService

PYTHON_FACT = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"


def test_each_unit_service_has_its_own_place() -> None:
    places = [m.UNIT.position() for m in (gpu_exporter, llamacpp, ollama, vllm)]
    assert len(set(places)) == len(places)
    assert llamacpp.UNIT.position()[0] == ollama.UNIT.position()[0]  # one component, two engines


def test_a_deploy_name_the_component_does_not_declare_is_refused() -> None:
    with pytest.raises(ValueError):
        UnitService("model", "x", "x unit", "why", llamacpp.ready, deploy="nope").position()


def test_two_engines_on_two_hosts_keep_their_operations_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = tmp_path / "xllamacpp-2026.10.11549-cp310-abi3-manylinux2014_x86_64.whl"
    gguf, tarball = tmp_path / "m.gguf", tmp_path / "ollama.tgz"
    for path in (wheel, gguf, tarball):
        path.write_bytes(path.name.encode())
    monkeypatch.setattr(llamacpp, "controller_wheels", lambda cfg, pyver: (wheel, []))
    monkeypatch.setattr(llamacpp, "controller_model", lambda cfg: gguf)
    monkeypatch.setattr(ollama, "fetch_release", lambda ctx, cfg, arch: str(tarball))
    facts = {
        **h.BASE_FACTS,
        "LinuxDistribution": h.DISTROS["debian12"],
        ("Command", PYTHON_FACT): h.PYTHONS["debian12"],
    }
    inventory = Inventory((["a", "b"], {}))
    state = State(inventory, Config())
    state.current_op_file_number = 0
    ctx = h.context("inventory/lab.yml", "llm-embed")
    with h._fake_facts(facts), ctx_state.use(state):
        for name, module in (("a", ollama), ("b", llamacpp)):
            host = inventory.get_host(name)
            with ctx_host.use(host):
                host.init(state)
                module.apply(ctx, ctx.host.model)
    merged = [m.names for m in map(state.get_op_meta, state.get_op_order()) if len(m.names) > 1]
    assert not merged, f"operations of two services share one identity: {merged}"
    names = " ".join(n for m in map(state.get_op_meta, state.get_op_order()) for n in m.names)
    assert "ollama: activate | Restart ollama (unit, drop-in or binary changed)" in names
    assert "llamacpp: activate | Restart llama-cpp (unit, server or model changed)" in names
