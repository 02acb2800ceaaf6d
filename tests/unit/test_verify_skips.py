"""Verify tells the truth: a check skips only for a reason the inventory declares; any other skip
is a failure in pytest's result, the JUnit XML and `citadel verify`'s summary. Nothing connects:
the synthetic checks below never touch `target.infra`."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from citadel.labsecrets import all_secret_names
from citadel.loader import load_cluster
from citadel.verify_run import format_summary, summarize
from tests.verify import test_gateway as verify_gateway
from tests.verify import test_prometheus as verify_prometheus
from tests.verify.declared import DeclaredSkip, deployed_host, wait_for

ROOT = Path(__file__).resolve().parents[2]
VERIFY = ROOT / "tests" / "verify"
LAB = ROOT / "inventory" / "lab.yml"
PRODUCTION = ROOT / "inventory" / "production.yml"

SYNTHETIC = {
    "test_synthetic_redis.py": """
        import pytest
        from tests.verify.declared import deployed_host

        COMPONENT = "redis"

        def test_passes(target):
            assert target.host.name == "data"

        def test_undeclared_runtime_skip(target):
            pytest.skip("Prometheus on monitoring does not answer")

        def test_declared_runtime_skip(target):
            deployed_host(target.cluster, "grafana")  # the lab declares grafana skipped

        def test_importorskip(target):
            pytest.importorskip("no_such_module_for_citadel")

        @pytest.mark.skip(reason="a skip mark")
        def test_skip_mark(target):
            pass
    """,
    "test_synthetic_qdrant.py": """
        COMPONENT = "qdrant"  # the lab declares it skipped (lab-no-vendor-downloads)

        def test_never_runs(target):
            raise AssertionError("a declared skip must not run")
    """,
}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, Path]:
    """pytest over synthetic verify modules with tests/verify/conftest.py's hooks, on the lab."""
    root = tmp_path_factory.mktemp("verify")
    (root / "conftest.py").write_text(
        "from tests.conftest import pytest_addoption  # noqa: F401\n"
        "from tests.verify.conftest import *  # noqa: F403\n"
    )
    for name, body in SYNTHETIC.items():
        (root / name).write_text(textwrap.dedent(body))
    junit = root / "verify.xml"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CITADEL_LAB_DIR": str(root / "lab")}
    env.pop("CITADEL_SECRETS_FILE", None)
    for name in all_secret_names(load_cluster(LAB).cluster):
        env[f"CITADEL_SECRET_{name.upper()}"] = "x"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(root),
            "--inventory",
            str(LAB),
            f"--junitxml={junit}",
            "-q",
            "-rfs",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr, junit


def test_an_undeclared_skip_fails_the_run(synthetic_run: tuple[int, str, Path]) -> None:
    status, output, _ = synthetic_run
    assert status == 1, output
    # three undeclared skips fail (a skip mark fails at setup: an error); nothing else does
    assert "2 failed, 1 passed, 2 skipped, 1 error" in output, output
    assert "undeclared skip (the inventory declares no such reason): Prometheus on monitoring" in (
        output
    )


def test_junit_and_summary_show_undeclared_skips_as_failures(
    synthetic_run: tuple[int, str, Path],
) -> None:
    _, output, junit = synthetic_run
    hosts = [h.name for h in load_cluster(LAB).cluster.hosts]
    cells = summarize(junit, hosts)
    redis = cells[("synthetic_redis", "data")]
    assert redis.status == "FAILED"
    failed = {name.split(" [")[0]: name for name in redis.failed}
    assert set(failed) == {
        "test_undeclared_runtime_skip[data]",
        "test_importorskip[data]",
        "test_skip_mark[data]",
    }, output
    assert all("[undeclared skip" in name for name in failed.values())
    assert "no_such_module_for_citadel" in failed["test_importorskip[data]"]
    assert redis.passed == 1
    assert redis.skipped == {
        "the inventory skips grafana (monitoring: lab: " + _grafana_skip() + ")"
    }
    qdrant = cells[("synthetic_qdrant", "vector-db")]
    assert qdrant.status.startswith("skipped: lab: ")  # the inventory's reason, nothing else
    summary = format_summary(cells)
    assert "FAILED (test_undeclared_runtime_skip[data] [undeclared skip" in summary
    assert failed["test_skip_mark[data]"].endswith(": a skip mark]")


def _grafana_skip() -> str:
    grafana = load_cluster(LAB).cluster.host("monitoring").grafana
    assert grafana is not None and grafana.skip is not None
    return grafana.skip.removeprefix("lab: ")


# -- the verify modules themselves ----------------------------------------------------------------

FORBIDDEN = {"skip", "skipif", "importorskip", "xfail"}
# Every place a verify module may skip, each for a reason computed from the inventory alone.
DECLARED_SITES = {
    ("test_gateway", "test_health_names_why_a_service_is_skipped", "declared_skip"),
    ("test_gateway", "test_metrics_are_for_the_monitoring_host_only", "deployed_host"),
    ("test_gateway", "test_webui_users_each_get_their_own_rate_limit", "deployed_host"),
    ("test_gpu_exporter", "test_prometheus_scrapes_it", "deployed_host"),
    ("test_prometheus", "test_document_query", "declared_skip"),
    ("test_prometheus", "test_document_query", "deployed_host"),
    ("test_prometheus", "_serve_one_chat", "deployed_host"),
}


def _verify_modules() -> list[Path]:
    return sorted(VERIFY.glob("test_*.py"))


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call | ast.Attribute]]:
    """(enclosing function, node) for every call and pytest.* attribute in a module."""
    out: list[tuple[str, ast.Call | ast.Attribute]] = []

    def walk(node: ast.AST, func: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Call | ast.Attribute):
                out.append((name, child))
            walk(child, name)

    walk(tree, "<module>")
    return out


@pytest.mark.parametrize("path", _verify_modules(), ids=lambda p: p.name)
def test_verify_modules_never_skip_outside_the_inventory(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for func, node in _calls(tree):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            owner = ast.unparse(node.value)
            assert owner not in ("pytest", "pytest.mark"), (
                f"{path.name}:{node.lineno} {func}: {owner}.{node.attr} is an undeclared skip; "
                "use tests/verify/declared.py for a reason the inventory declares, or fail"
            )
    sites = {
        (path.stem, func, node.func.id)
        for func, node in _calls(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("declared_skip", "deployed_host")
    }
    assert sites <= DECLARED_SITES, f"review these skip sites: {sorted(sites - DECLARED_SITES)}"


def test_every_verify_module_is_parametrised_by_the_inventory() -> None:
    from citadel.components import ORDER

    components = set(ORDER) | {"vllm", "ollama", "llamacpp"}
    for path in _verify_modules():
        tree = ast.parse(path.read_text())
        names = {
            t.id: node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        assert "COMPONENT" in names, path.name
        value = names["COMPONENT"]
        assert isinstance(value, ast.Constant) and value.value in components, path.name


def _target(inventory: Path) -> SimpleNamespace:
    return SimpleNamespace(cluster=load_cluster(inventory).cluster)


def test_declared_reasons_come_from_the_inventory() -> None:
    lab, production = _target(LAB), _target(PRODUCTION)
    # Qdrant: skipped by the lab's override only; production reports every service.
    assert (verify_gateway._declared_qdrant_skip(lab) or "").startswith("lab: ")
    assert verify_gateway._declared_qdrant_skip(production) is None
    # GPU data: the lab declares no GPU driver; production's missing data is a failure.
    assert not verify_prometheus._gpu_expected(lab)
    assert verify_prometheus._gpu_expected(production)
    # The document's five health services in production.
    assert verify_gateway._promised_services(production) == {
        "llama_chat",
        "llama_instruct",
        "embeddings",
        "vector_db",
        "database",
    }
    assert deployed_host(production.cluster, "prometheus").name == "monitoring"
    with pytest.raises(DeclaredSkip, match=r"the inventory skips grafana \(monitoring: lab: "):
        deployed_host(lab.cluster, "grafana")
    assert deployed_host(lab.cluster, "webui").name == "webui"  # the lab runs OpenWebUI
    with pytest.raises(DeclaredSkip, match="no host runs qdrant in this inventory"):
        deployed_host(load_cluster(ROOT / "tests/unit/inventories/good.yml").cluster, "qdrant")


def test_production_verify_authenticates_with_the_inventorys_token() -> None:
    loaded = load_cluster(PRODUCTION)
    gateway = loaded.cluster.host("gateway")
    assert gateway.gateway is not None and gateway.gateway.auth.jwks_url
    name = gateway.gateway.auth.verify_token_secret
    assert name == "gateway_verify_token"
    target = SimpleNamespace(host=gateway, secret={name: "operators-token"}.__getitem__)
    assert verify_gateway._token(target) == "operators-token"


def test_wait_for_is_bounded_and_returns_the_last_result() -> None:
    now = [0.0]
    calls: list[float] = []

    def probe() -> int:
        calls.append(now[0])
        return len(calls)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    got = wait_for(
        probe, lambda n: n >= 100, timeout_s=10, interval_s=2, clock=lambda: now[0], sleep=sleep
    )
    assert got == 6 and calls == [0, 2, 4, 6, 8, 10]
    assert wait_for(probe, lambda n: True, timeout_s=10, clock=lambda: now[0], sleep=sleep) == 7
