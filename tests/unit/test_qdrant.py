"""qdrant: config.yaml and the systemd unit rendered from the model, the install / collection
command sequence, and the one-line unavailability of its artifact."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from citadel import artifacts
from citadel.components import qdrant
from citadel.components.qdrant import Collection
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.render import HostView, component_files
from citadel.secrets import MASK, MaskedSecrets, SecretStore

ROOT = Path(__file__).resolve().parents[2]
KEY = "qdrant-Key-123"


@pytest.fixture(scope="module", params=["inventory/production.yml", "inventory/lab.yml"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return load_cluster(ROOT / request.param).cluster


def rendered(cluster: Cluster, masked: bool = False):
    host = cluster.host("vector-db")
    secrets = MaskedSecrets() if masked else SecretStore({"qdrant_api_key": KEY})
    view = HostView(cluster, host, secrets)
    return {f.spec.dest: f for f in component_files("qdrant", view, host.qdrant)}  # type: ignore[arg-type]


def test_config_yaml(cluster: Cluster) -> None:
    host = cluster.host("vector-db")
    cfg = host.qdrant
    assert cfg is not None
    f = rendered(cluster)[qdrant.CONFIG]
    assert f.spec.secret and f.spec.mode == "0640" and f.spec.group == "qdrant"
    data = yaml.safe_load(f.content)
    assert data["service"] == {
        "host": str(host.address),
        "http_port": cfg.http_port,
        "grpc_port": cfg.grpc_port,
        "enable_cors": False,
        "api_key": KEY,
    }
    assert data["storage"] == {
        "storage_path": cfg.storage_path,
        "snapshots_path": cfg.snapshots_path,
    }
    assert data["telemetry_disabled"] is True


def test_preview_masks_the_key(cluster: Cluster) -> None:
    for f in rendered(cluster, masked=True).values():
        assert KEY not in f.content
    assert (
        yaml.safe_load(rendered(cluster, masked=True)[qdrant.CONFIG].content)["service"]["api_key"]
        == MASK
    )


def test_api_key_header_file(cluster: Cluster) -> None:
    f = rendered(cluster)[qdrant.API_KEY_HEADER]
    assert f.spec.secret and f.spec.mode == "0600" and f.spec.user == "root"
    assert f.content == f"api-key: {KEY}\n"


def test_unit_file(cluster: Cluster) -> None:
    cfg = cluster.host("vector-db").qdrant
    assert cfg is not None
    text = rendered(cluster)[qdrant.UNIT].content
    assert KEY not in text
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(text)
    svc = unit["Service"]
    assert svc["User"] == svc["Group"] == "qdrant"
    assert svc["ExecStart"] == f"{qdrant.BINARY_LINK} --config-path {qdrant.CONFIG}"
    assert svc["LimitNOFILE"] == str(cfg.max_open_files)
    assert svc["ProtectSystem"] == "strict"
    assert cfg.storage_path in svc["ReadWritePaths"] and cfg.snapshots_path in svc["ReadWritePaths"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_file_passes_systemd_analyze(cluster: Cluster, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = tmp_path / "qdrant.service"
    unit.write_text(rendered(cluster)[qdrant.UNIT].content)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The binary is not installed here: only that complaint is acceptable.
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip()
        and "qdrant" in line
        and "/usr/local/bin/qdrant" not in line
        and "is not executable" not in line
        and "Command" not in line
    ]
    assert not [p for p in problems if "Unknown" in p or "bad" in p.lower()], problems


def test_install_command_sequence() -> None:
    cfg = qdrant.Config(version="1.18.2")
    assert qdrant.install_dir(cfg) == "/opt/qdrant/1.18.2"
    cmd = qdrant.extract_command("/opt/qdrant/1.18.2/q.tar.gz", "/opt/qdrant/1.18.2")
    assert cmd == (
        "tar -xzf /opt/qdrant/1.18.2/q.tar.gz -C /opt/qdrant/1.18.2 qdrant && "
        "chmod 0755 /opt/qdrant/1.18.2/qdrant"
    )


def test_collection_plan() -> None:
    wanted = [Collection(name="documents", size=4096), Collection(name="my_collection", size=4096)]
    existing = {"documents": {"size": 4096, "distance": "Cosine"}, "my_collection": None}
    create, conflicts = qdrant.collection_plan(wanted, existing)
    assert [c.name for c in create] == ["my_collection"]
    assert conflicts == []
    create, conflicts = qdrant.collection_plan(
        wanted, {"documents": {"size": 768, "distance": "Cosine"}}
    )
    assert [c.name for c in create] == ["my_collection"]
    assert conflicts and "documents" in conflicts[0] and "768" in conflicts[0]
    assert qdrant.collection_plan(
        wanted, {c.name: {"size": 4096, "distance": "Cosine"} for c in wanted}
    ) == ([], [])


def test_create_command_never_carries_the_key() -> None:
    c = Collection(name="documents", size=4096)
    cmd = qdrant.create_command("http://10.0.0.30:6333", c)
    assert f"-H @{qdrant.API_KEY_HEADER}" in cmd
    assert "api-key:" not in cmd
    assert cmd.index("/readyz") < cmd.index("-X PUT")
    get = "curl -sf -o /dev/null -H @/etc/qdrant/api-key.header"
    assert f"{get} http://10.0.0.30:6333/collections/documents ||" in cmd
    assert json.loads(qdrant.create_body(c)) == {"vectors": {"size": 4096, "distance": "Cosine"}}


def test_collections_fact() -> None:
    cmd = qdrant.collections_command("http://10.0.0.30:6333", ["documents", "my_collection"])
    assert "@/etc/qdrant/api-key.header" in cmd and "api-key:" not in cmd
    body = json.dumps(
        {"result": {"config": {"params": {"vectors": {"size": 4096, "distance": "Cosine"}}}}}
    )
    got = qdrant.parse_collections(
        [f"documents {body}", 'my_collection {"status":{"error":"Not found"}}']
    )
    assert got == {"documents": {"size": 4096, "distance": "Cosine"}, "my_collection": None}
    assert qdrant.parse_collections(["documents "]) == {"documents": None}


def test_unavailable_artifact_is_one_line_naming_artifact_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = artifacts.load_pins()
    unpinned = {"qdrant": {v: {**e, "sha256": None} for v, e in pins["qdrant"].items()}}
    monkeypatch.setattr(artifacts, "load_pins", lambda: unpinned)
    cfg = qdrant.Config(version="1.18.2")
    reason = artifacts.unavailable_reason("qdrant", cfg, tmp_path, None, probe=False)
    assert reason is not None and "\n" not in reason
    assert "qdrant 1.18.2" in reason
    assert "https://github.com/qdrant/qdrant/releases/download/v1.18.2/" in reason
    mirrored = artifacts.unavailable_reason(
        "qdrant", cfg, tmp_path, "https://mirror.example/citadel", probe=False
    )
    assert mirrored is not None and "https://mirror.example/citadel/qdrant-" in mirrored


def test_pinned_artifact_url() -> None:
    a = artifacts.pinned("qdrant", "1.18.2", "x86_64")
    assert a.url.endswith("/v1.18.2/qdrant-x86_64-unknown-linux-gnu.tar.gz")
    assert artifacts.source_url(a, "https://m.example/x/") == (
        "https://m.example/x/qdrant-x86_64-unknown-linux-gnu.tar.gz"
    )
