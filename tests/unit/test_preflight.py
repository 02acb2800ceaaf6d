"""Fail closed: only an inventory-declared skip leaves a component out; anything else that cannot be
deployed stops the host before any operation, with one line (deploys.preflight), and `citadel
plan` / `apply` exit 1 naming it. Nothing here connects: the deploy harness fakes facts, and
pyinfra itself is a fake process printing what pyinfra's CLI prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import deploys
from citadel import artifacts, converge
from citadel.artifacts import ArtifactUnavailable
from citadel.cli import main
from citadel.labsecrets import all_secret_names
from citadel.loader import load_cluster
from citadel.secrets import MaskedSecrets
from deploys import Undeployable, converge_host, preflight
from deploys._context import DeployContext
from tests.unit import deploy_harness as h

ROOT = Path(__file__).resolve().parents[2]
UNPINNED = "tests/unit/inventories/unpinned_artifact.yml"


def _ctx(inventory: str, host: str) -> DeployContext:
    loaded = load_cluster(ROOT / inventory, secrets=MaskedSecrets())
    return DeployContext(loaded, loaded.cluster.host(host))


def _converge_expecting_failure(ctx: DeployContext) -> tuple[h.Run, str]:
    """converge_host under the harness; the operations it added before it stopped, and why."""
    caught: list[str] = []

    def attempt() -> None:
        with pytest.raises(Undeployable) as err:
            converge_host(ctx)
        caught.append(str(err.value))

    run = h.run(attempt, {})
    [message] = caught
    return run, message


@pytest.fixture(autouse=True)
def _fresh_availability() -> None:
    artifacts._AVAILABILITY.clear()


def test_the_test_inventory_declares_no_skip() -> None:
    cluster = load_cluster(ROOT / UNPINNED).cluster
    assert not [(x.name, s) for x in cluster.hosts for s, c in x.sections() if c.skip]
    assert cluster.cluster.environment != "lab"


def test_an_unpinned_artifact_stops_the_host_before_any_operation() -> None:
    run, message = _converge_expecting_failure(_ctx(UNPINNED, "vec"))
    assert run.ops == []  # not even base's: the preflight runs before any component
    assert "\n" not in message
    assert message.startswith("vec: qdrant cannot be deployed: qdrant 1.99.0: not in pins.yml; ")
    assert "fix: pin it (citadel pins lock qdrant 1.99.0)" in message
    assert "set artifacts.mirror" in message
    assert "declare a skip with its reason (qdrant.skip in the inventory)" in message


def test_a_null_sha256_stops_production_qdrant(monkeypatch: pytest.MonkeyPatch) -> None:
    pins = artifacts.load_pins()
    unpinned = {"qdrant": {v: {**e, "sha256": None} for v, e in pins["qdrant"].items()}}
    monkeypatch.setattr(artifacts, "load_pins", lambda: unpinned)
    run, message = _converge_expecting_failure(_ctx("inventory/production.yml", "vector-db"))
    assert run.ops == []
    assert message.startswith("vector-db: qdrant cannot be deployed: qdrant 1.18.2 (x86_64): ")
    assert "no sha256 pinned" in message


def test_an_artifact_that_cannot_be_fetched_stops_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreachable(artifact: Any, *_: Any, **__: Any) -> Path:
        raise ArtifactUnavailable(f"{artifact.label()}: unavailable from {artifact.url} (no route)")

    monkeypatch.setattr(artifacts, "ensure_cached", unreachable)
    run, message = _converge_expecting_failure(_ctx("inventory/production.yml", "llm-embed"))
    assert run.ops == []
    assert message.startswith("llm-embed: ollama cannot be deployed: ollama 0.12.3 (x86_64): ")
    assert "fix: pin it (citadel pins lock ollama 0.12.3)" in message
    assert "model.skip in the inventory" in message


def test_the_preflight_checks_the_hosts_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def cached(artifact: Any, *_: Any, **__: Any) -> Path:
        asked.append(artifact.arch)
        return Path("/cache") / artifact.filename

    monkeypatch.setattr(artifacts, "ensure_cached", cached)
    h.run(preflight, {"Arch": "aarch64"}, _ctx("inventory/production.yml", "vector-db"))
    assert asked == ["aarch64"]


def test_an_unreachable_vendor_repository_stops_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grafana's apt repository: checked in the preflight, not after base's operations."""
    from deploys import grafana

    def down(cfg: Any) -> None:
        raise ArtifactUnavailable(f"grafana {cfg.version}: apt repository {cfg.repository} down")

    monkeypatch.setattr(grafana, "probe_repository", down)
    run, message = _converge_expecting_failure(_ctx("inventory/production.yml", "monitoring"))
    assert run.ops == []
    assert message.startswith("monitoring: grafana cannot be deployed: grafana 12.2.0: apt ")
    assert message.endswith(
        "fix: make it available, or declare a skip with its reason (grafana.skip in the inventory)"
    )


def test_a_failure_found_later_still_fails_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ArtifactUnavailable raised inside a deploy is no longer a skip."""
    from deploys import redis

    def missing(ctx: Any, cfg: Any) -> None:
        raise ArtifactUnavailable("redis-server is not in this host's package sources")

    monkeypatch.setattr(redis, "apply", missing)
    monkeypatch.setattr(deploys, "_module", lambda name: redis if name == "redis" else _noop)
    _, message = _converge_expecting_failure(_ctx("inventory/production.yml", "data"))
    assert message.startswith("data: redis cannot be deployed: redis-server is not in this ")


class _Noop:
    @staticmethod
    def apply(ctx: Any, cfg: Any) -> None:
        return None


_noop = _Noop()


@pytest.mark.parametrize(
    "host", [x.name for x in load_cluster(ROOT / "inventory/lab.yml").cluster.hosts]
)
def test_every_lab_host_passes_the_preflight(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab converges: what it cannot have, it skips by a named override (inventory/lab.yml)."""

    def no_download(*_: Any, **__: Any) -> Path:
        raise AssertionError("the lab's preflight fetched an artifact")

    monkeypatch.setattr(artifacts, "ensure_cached", no_download)
    assert h.run(preflight, {}, _ctx("inventory/lab.yml", host)).ops == []


# -- how pyinfra reports it, and what plan / apply make of that -----------------------------------


# pyinfra_cli monkey-patches the stdlib for gevent on import, so it runs in a process of its own:
# exec_file (how the CLI runs deploy.py) and what pyinfra_cli.cli.cli does with what it raises.
_CLI = """
import sys
import click
from pyinfra.api import Config, Inventory, State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_state
from pyinfra_cli.exceptions import UnexpectedExternalError, WrappedError
from pyinfra_cli.log import setup_logging
from pyinfra_cli.util import exec_file

setup_logging(20)
with ctx_state.use(State(Inventory(([], {})), Config())):
    try:
        exec_file(sys.argv[1])
    except (UnexpectedExternalError, PyinfraError) as exc:
        error = exc if isinstance(exc, click.ClickException) else WrappedError(exc)
        error.show()
        sys.exit(error.exit_code)
"""


def _pyinfra_cli_output(deploy_file: Path) -> tuple[str, int]:
    """What pyinfra's CLI prints (stderr) and its exit status when deploy code raises."""
    proc = subprocess.run(
        [sys.executable, "-c", _CLI, str(deploy_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.stderr, proc.returncode


MESSAGE = "vec: qdrant cannot be deployed: qdrant 1.99.0: not in pins.yml; fix: pin it"


def test_pyinfra_prints_undeployable_as_one_line_and_exits_1(tmp_path: Path) -> None:
    deploy_file = tmp_path / "deploy.py"
    deploy_file.write_text(f"from deploys import Undeployable\nraise Undeployable({MESSAGE!r})\n")
    output, status = _pyinfra_cli_output(deploy_file)
    assert status == 1
    [line] = output.strip().splitlines()
    assert line.startswith("--> pyinfra error in ") and line.endswith(f": {MESSAGE}")
    assert "Traceback" not in output
    match = converge.PYINFRA_ERROR.search(line)
    assert match is not None and match.group("message") == MESSAGE


def test_any_other_exception_would_be_a_traceback(tmp_path: Path) -> None:
    """Why Undeployable is a PyinfraError: a CitadelError from deploy code prints a traceback."""
    deploy_file = tmp_path / "deploy.py"
    deploy_file.write_text(
        "from citadel.artifacts import ArtifactUnavailable\nraise ArtifactUnavailable('x')\n"
    )
    output, _ = _pyinfra_cli_output(deploy_file)
    assert "Traceback (most recent call last)" in output


def _fake_pyinfra(monkeypatch: pytest.MonkeyPatch, stdout: str, stderr: str, status: int) -> list:
    """Replace the pyinfra process by one that prints stdout / stderr and exits with status."""
    calls: list[list[str]] = []
    real_popen = subprocess.Popen
    script = (
        "import sys; sys.stderr.write(sys.argv[1]); sys.stderr.flush(); "
        "sys.stdout.write(sys.argv[2]); sys.exit(int(sys.argv[3]))"
    )

    def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
        calls.append(cmd)
        return real_popen([sys.executable, "-c", script, stderr, stdout, str(status)], **kwargs)

    monkeypatch.setattr(converge.subprocess, "Popen", popen)
    monkeypatch.setattr(
        converge, "pyinfra_inventory_file", lambda inv: Path(inv).with_suffix(".py")
    )
    for name in all_secret_names(load_cluster(ROOT / UNPINNED).cluster):
        monkeypatch.setenv(f"CITADEL_SECRET_{name.upper()}", "x")
    return calls


PYINFRA_STDERR = (
    "--> Loading config...\n"
    "--> Loading inventory...\n"
    "--> Connecting to hosts...\n"
    "    [vec] Connected\n"
    "--> Preparing operations...\n"
    "    Loading: deploy.py\n"
    f"--> pyinfra error in {ROOT}/deploys/__init__.py line 107: {MESSAGE}\n"
)


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_plan_and_apply_exit_1_with_the_preflights_line(
    command: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    calls = _fake_pyinfra(monkeypatch, stdout="", stderr=PYINFRA_STDERR, status=1)
    report = tmp_path / "apply.json"
    extra = ["--report", str(report)] if command == "apply" else []
    assert main([command, "-i", UNPINNED, *extra]) == 1
    err = capsys.readouterr().err
    assert err.count(MESSAGE) == 1  # pyinfra's own line is not repeated
    assert f"citadel: {MESSAGE}\n" in err
    assert "Traceback" not in err
    assert ("--dry" if command == "plan" else "-y") in calls[0]
    if command == "apply":
        assert "Connecting to hosts" in err  # pyinfra's progress still streams
        assert not report.exists()


def test_a_pyinfra_report_still_decides_plans_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = {
        "plan": [
            {
                "name": "x: y",
                "names": ["files.put"],
                "hosts_with_change": ["vec"],
                "hosts_with_conditional_change": [],
            }
        ],
        "results": None,
    }
    _fake_pyinfra(monkeypatch, stdout="noise\n" + json.dumps(plan), stderr="", status=0)
    assert main(["plan", "-i", UNPINNED]) == converge.EXIT_CHANGES
    assert "vec: 1 change(s)" in capsys.readouterr().out


def test_pyinfra_without_report_or_error_line_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.chdir(ROOT)
    _fake_pyinfra(monkeypatch, stdout="", stderr="boom\n", status=3)
    monkeypatch.setattr(converge, "ROOT", tmp_path)  # where reports/pyinfra-stdout.txt goes
    assert main(["plan", "-i", UNPINNED]) == 1
    assert "pyinfra exited 3 without a JSON report: boom" in capsys.readouterr().err
    assert (tmp_path / "reports" / "pyinfra-stdout.txt").exists()
