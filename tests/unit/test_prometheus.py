"""Prometheus: targets from the inventory, rendered config and rules accepted by promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from citadel import artifacts
from citadel.components import prometheus as prom
from citadel.loader import load_cluster
from citadel.metrics import RECORDED, unknown_metrics
from citadel.model.cluster import Cluster
from citadel.render import HostView, render_host
from citadel.secrets import MaskedSecrets

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian 12: apt-get install prometheus; Debian 13: promtool)",
)


@pytest.fixture(scope="module", params=["lab", "production"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return load_cluster(ROOT / "inventory" / f"{request.param}.yml").cluster


def _files(cluster: Cluster) -> dict[str, str]:
    host = cluster.host("monitoring")
    return {
        f.spec.dest: f.content for f in render_host(cluster, host) if f.component == "prometheus"
    }


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def _install(files: dict[str, str], root: Path) -> Path:
    """Write the rendered files under root, with prometheus.yml's absolute paths re-rooted."""
    for dest, content in files.items():
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if dest == prom.CONFIG_FILE:
            content = content.replace('"/etc/prometheus/', f'"{root}/etc/prometheus/')
        target.write_text(content)
    return root / prom.CONFIG_FILE.lstrip("/")


def test_every_converging_exporter_is_a_target(cluster: Cluster) -> None:
    targets = prom.scrape_targets(cluster, prom.static_absent(cluster))
    by_job: dict[str, set[str]] = {}
    for t in targets:
        by_job.setdefault(t.job, set()).add(t.host)
    assert by_job["node_exporter"] == {h.name for h in cluster.hosts}
    assert by_job["prometheus"] == {"monitoring"}
    assert by_job["gpu_exporter"] == {h.name for h in cluster.with_role("gpu")}
    assert by_job["postgres_exporter"] == {"data"}
    assert by_job["redis_exporter"] == {"data"}
    assert by_job["gateway"] == {"gateway"}
    vllm = {h.name for h in cluster.model_hosts() if h.model and h.model.engine == "vllm"}
    assert by_job.get("model", set()) == vllm
    for t in targets:
        assert set(t.all_labels()) >= {"host", "role", "service"}
        assert t.all_labels()["service"] == t.job


def test_lab_scrapes_its_vllm_hosts_and_no_qdrant() -> None:
    """vLLM serves /metrics (llama.cpp's server has none); the lab declares Qdrant skipped."""
    cluster = load_cluster(ROOT / "inventory" / "lab.yml").cluster
    absent = prom.static_absent(cluster)
    assert absent[("vector-db", "qdrant")].startswith("lab: ")
    targets = prom.scrape_targets(cluster, absent)
    model_hosts = sorted(t.host for t in targets if t.job == "model")
    assert model_hosts == ["llm-chat", "llm-instruct"]
    assert "qdrant" not in {t.job for t in targets}
    files = _files(cluster)
    assert prom.QDRANT_KEY_FILE not in files
    assert "vector-db/qdrant: lab: " in files[prom.CONFIG_FILE]


def test_an_unpinned_artifact_leaves_the_scrape_config_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a declared skip makes a target absent; an unpinned artifact fails apply instead."""
    cluster = load_cluster(ROOT / "inventory" / "production.yml").cluster
    before = _files(cluster)
    pins = artifacts.load_pins()
    unpinned = {"qdrant": {v: {**e, "sha256": None} for v, e in pins["qdrant"].items()}}
    monkeypatch.setattr(artifacts, "load_pins", lambda: unpinned)
    assert prom.static_absent(cluster) == {}
    assert _files(cluster) == before
    assert "qdrant" in {t.job for t in prom.scrape_targets(cluster, prom.static_absent(cluster))}


def test_production_scrapes_vllm_with_model_label() -> None:
    cluster = load_cluster(ROOT / "inventory" / "production.yml").cluster
    models = [t for t in prom.scrape_targets(cluster) if t.job == "model"]
    assert {(t.host, t.labels["model"]) for t in models} == {
        ("llm-chat", "llama-3-chat"),
        ("llm-instruct", "llama-3-instruct"),
    }  # Ollama (llm-embed) serves no /metrics


def test_skipped_component_is_absent(cluster: Cluster) -> None:
    data = cluster.host("data")
    assert data.redis_exporter is not None
    skipped = data.model_copy(
        update={"redis_exporter": data.redis_exporter.model_copy(update={"skip": "test"})}
    )
    hosts = [skipped if h.name == "data" else h for h in cluster.hosts]
    other = cluster.model_copy(update={"hosts": hosts})
    assert "redis_exporter" not in {t.job for t in prom.scrape_targets(other)}


def test_qdrant_target_uses_the_key_file_when_available() -> None:
    cluster = load_cluster(ROOT / "inventory" / "production.yml").cluster
    [t] = [t for t in prom.scrape_targets(cluster, absent={}) if t.job == "qdrant"]
    assert t.bearer_file == prom.QDRANT_KEY_FILE
    host = cluster.host("monitoring")
    assert host.prometheus is not None
    specs = prom.files(HostView(cluster, host, MaskedSecrets()), host.prometheus, absent={})
    [key] = [s for s in specs if s.dest == prom.QDRANT_KEY_FILE]
    assert key.secret and key.mode == "0640" and key.group == "prometheus"


def test_listen_address_and_retention_from_the_model(cluster: Cluster) -> None:
    files = _files(cluster)
    args = files[prom.DEFAULTS_FILE]
    host = cluster.host("monitoring")
    assert host.prometheus is not None
    assert f"--web.listen-address={host.address}:{host.prometheus.port}" in args
    assert f"--storage.tsdb.retention.time={host.prometheus.retention}" in args
    assert "0.0.0.0" not in args


def test_config_and_rules_files_are_checked_before_install(cluster: Cluster) -> None:
    host = cluster.host("monitoring")
    specs = {f.spec.dest: f.spec for f in render_host(cluster, host) if f.component == "prometheus"}
    assert specs[prom.CONFIG_FILE].validate == prom.CHECK_CONFIG
    assert specs[prom.RECORDING_FILE].validate == prom.CHECK_RULES
    assert specs[prom.ALERTS_FILE].validate == prom.CHECK_RULES


def test_recorded_names_match_the_registry(cluster: Cluster) -> None:
    rules = yaml.safe_load(_files(cluster)[prom.RECORDING_FILE])
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"]}
    assert recorded == set(RECORDED)


def test_every_rule_uses_known_metrics(cluster: Cluster) -> None:
    files = _files(cluster)
    for path in (prom.RECORDING_FILE, prom.ALERTS_FILE):
        for group in yaml.safe_load(files[path])["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule.get("alert")
                assert not unknown_metrics(rule["expr"]), (name, unknown_metrics(rule["expr"]))


def test_alerts_of_the_issue_exist(cluster: Cluster) -> None:
    alerts = {
        r["alert"]
        for g in yaml.safe_load(_files(cluster)[prom.ALERTS_FILE])["groups"]
        for r in g["rules"]
    }
    assert alerts >= {
        "HostDown",
        "ModelServerDown",
        "GpuHot",
        "HighErrorRate",
        "RateLimitSurge",
        "DiskFilling",
        "PostgresDown",
    }


def test_gpu_not_readable_alert_only_where_nvidia_converges() -> None:
    lab = load_cluster(ROOT / "inventory" / "lab.yml").cluster
    prod = load_cluster(ROOT / "inventory" / "production.yml").cluster
    assert "GpuNotReadable" not in _files(lab)[prom.ALERTS_FILE]
    assert 'host=~"llm-chat|llm-instruct|llm-embed"' in _files(prod)[prom.ALERTS_FILE]


@needs_promtool
def test_promtool_accepts_rules_and_config(cluster: Cluster, tmp_path: Path) -> None:
    files = _files(cluster)
    config = _install(files, tmp_path)
    for rules in (prom.RECORDING_FILE, prom.ALERTS_FILE):
        result = _promtool("check", "rules", str(tmp_path / rules.lstrip("/")))
        assert result.returncode == 0, result.stdout + result.stderr
    result = _promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """What put_files' stage check does on the host: a broken rule never replaces the live one."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - record: bad\n        expr: sum(rate(up[5m])\n"
    )
    staged = prom.CHECK_RULES.format(path=broken)
    result = subprocess.run(staged, shell=True, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
