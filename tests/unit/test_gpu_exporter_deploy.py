"""GPU exporter deploy: unit, offline install commands, the project wheel cache, the GPU facts."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import deploy_harness as h
import pytest

from citadel import wheels
from citadel.components.gpu_exporter import UNIT
from citadel.render import render_host
from citadel.wheels import project as wheel_project
from deploys import _venv, gpu_exporter
from deploys.facts.gpu import GpuInventory

PY = "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null || true"
MARKER = "cat /opt/citadel-gpu-exporter/.citadel-wheels 2>/dev/null || true"


@pytest.mark.parametrize(
    ("inventory", "host", "address"),
    [
        ("inventory/lab.yml", "llm-embed", "10.210.10.31"),
        ("inventory/production.yml", "llm-chat", "192.168.10.28"),
    ],
)
def test_unit_listens_on_the_host_address(inventory: str, host: str, address: str) -> None:
    ctx = h.context(inventory, host)
    unit = {f.spec.dest: f.content for f in render_host(ctx.cluster, ctx.host)}[UNIT]
    exe = "/opt/citadel-gpu-exporter/bin/citadel-gpu-exporter"
    assert f"ExecStart={exe} --listen {address} --port 9835" in unit
    assert "DynamicUser=yes" in unit


@pytest.fixture
def fake_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    wheel = tmp_path / "citadel_gpu_exporter-0.1.0-py3-none-any.whl"
    deps = [
        tmp_path / "nvidia_ml_py-13.0-py3-none-any.whl",
        tmp_path / "prometheus_client-0.2-py3-none-any.whl",
    ]
    for path in (wheel, *deps):
        path.write_bytes(path.name.encode())
    monkeypatch.setattr(
        gpu_exporter,
        "project_wheels",
        lambda project, label, pyver: (wheel, "citadel-gpu-exporter==0.1.0", deps),
    )
    return [wheel, *deps]


@pytest.mark.parametrize("distro", sorted(h.DISTROS))
def test_first_converge_installs_offline_and_waits_for_metrics(
    distro: str, fake_wheels: list[Path]
) -> None:
    ctx = h.context("inventory/production.yml", "llm-embed")
    facts = {"LinuxDistribution": h.DISTROS[distro], ("Command", PY): h.PYTHONS[distro]}
    run = h.run(gpu_exporter.apply, facts, ctx, ctx.host.gpu_exporter)
    pip = run.op("pip install").text()
    assert (
        "--no-index" in pip
        and "--find-links /var/cache/citadel/wheels/gpu-exporter citadel-gpu-exporter==0.1.0" in pip
    )
    # same version, new build: the exporter itself is force-reinstalled
    wheel = "/var/cache/citadel/wheels/gpu-exporter/citadel_gpu_exporter-0.1.0-py3-none-any.whl"
    assert f"--no-deps --force-reinstall {wheel}" in pip
    assert sum(": upload " in n for n in run.names()) == 3
    assert run.op("Restart citadel-gpu-exporter").conditional
    wait = run.op("Wait until http://192.168.10.31:9835/metrics answers")
    assert wait.conditional and "nvidia_gpu_up " in wait.text()


def test_rerun_changes_nothing_in_the_venv(fake_wheels: list[Path]) -> None:
    ctx = h.context("inventory/production.yml", "llm-embed")
    wanted = _venv.fingerprint("citadel-gpu-exporter==0.1.0", fake_wheels)
    facts = {
        "LinuxDistribution": h.DISTROS["debian13"],
        ("Command", PY): "3.13",
        ("Command", MARKER): wanted,
    }
    run = h.run(gpu_exporter.apply, facts, ctx, ctx.host.gpu_exporter)
    assert not run.has("pip install")
    assert not any(": upload " in n for n in run.names())


def _project(root: Path, body: str = "X = 1\n") -> Path:
    project = root / "proj"
    (project / "demo_pkg").mkdir(parents=True, exist_ok=True)
    (project / "pyproject.toml").write_text('[project]\nname = "demo-pkg"\nversion = "0.1.0"\n')
    (project / "demo_pkg" / "__init__.py").write_text(body)
    return project


def test_project_wheel_is_built_once_per_source_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[list[str]] = []

    def fake_run(cmd: list[str], **_: object) -> None:
        builds.append(list(cmd))
        out = Path(cmd[cmd.index("--wheel-dir") + 1])
        out.mkdir(parents=True, exist_ok=True)
        src = Path(cmd[-1])
        with zipfile.ZipFile(out / "demo_pkg-0.1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("demo_pkg/__init__.py", (src / "demo_pkg" / "__init__.py").read_text())

    monkeypatch.setattr(wheel_project, "run", fake_run)
    project = _project(tmp_path)
    cache = tmp_path / "cache"
    first = wheels.ensure_project_wheel(project, cache=cache)
    again = wheels.ensure_project_wheel(project, cache=cache)
    assert first == again and len(builds) == 1
    assert not (project / "build").exists()  # built from a copy
    _project(tmp_path, "X = 2\n")
    rebuilt = wheels.ensure_project_wheel(project, cache=cache)
    assert len(builds) == 2
    with zipfile.ZipFile(rebuilt) as zf:
        assert zf.read("demo_pkg/__init__.py") == b"X = 2\n"
    assert len(list((cache / "wheels").glob("demo_pkg-*.whl"))) == 1


def test_real_exporter_source_digest_ignores_build_litter(tmp_path: Path) -> None:
    project = _project(tmp_path)
    before = wheels.source_digest(project)
    (project / "build").mkdir()
    (project / "build" / "x.py").write_text("junk")
    (project / "demo_pkg" / "__pycache__").mkdir()
    assert wheels.source_digest(project) == before


# -- the GPU fact ------------------------------------------------------------------------------


def test_gpu_fact_reads_the_probe() -> None:
    gpu = {"name": "NVIDIA A100-SXM4-80GB", "memory_total_bytes": 85899345920}
    probe = {
        "nvml": True, "reason": None, "driver_version": "550.54.15", "cuda_version": "12.4",
        "count": 2,
        "gpus": [{"index": 0, "uuid": "GPU-a", **gpu}, {"index": 1, "uuid": "GPU-b", **gpu}],
    }  # fmt: skip
    fact = GpuInventory().process(["#nvml", json.dumps(probe)])
    assert fact["source"] == "nvml"
    assert fact["count"] == 2
    assert fact["driver_version"] == "550.54.15"
    assert fact["names"] == ["NVIDIA A100-SXM4-80GB"] * 2
    assert fact["memory_total_bytes"] == [85899345920] * 2


def test_gpu_fact_without_a_gpu_reads_zero() -> None:
    probe = {"nvml": False, "reason": "NVML Shared Library Not Found", "driver_version": None,
             "cuda_version": None, "count": 0, "gpus": []}  # fmt: skip
    fact = GpuInventory().process(["#nvml", json.dumps(probe)])
    assert fact["count"] == 0 and fact["reason"] == "NVML Shared Library Not Found"


def test_gpu_fact_falls_back_to_nvidia_smi_csv() -> None:
    fact = GpuInventory().process(
        ["#nvidia-smi", "0, NVIDIA L40S, 550.90.07, 46068", "1, NVIDIA L40S, 550.90.07, 46068"]
    )
    assert fact["source"] == "nvidia-smi"
    assert fact["count"] == 2
    assert fact["driver_version"] == "550.90.07"
    assert fact["memory_total_bytes"] == [46068 * 1024 * 1024] * 2


def test_gpu_fact_reports_nvidia_smi_failure_and_none() -> None:
    fact = GpuInventory().process(
        [
            "#nvidia-smi",
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        ]
    )
    assert fact["count"] == 0 and "NVIDIA-SMI has failed" in fact["reason"]
    assert GpuInventory().process(["#none"])["count"] == 0
    assert (
        "probe" in GpuInventory().command() and "nvidia-smi --query-gpu" in GpuInventory().command()
    )
