"""Issue #20, upgrades: the gateway's listening socket is systemd's, so a restart (an upgrade,
a rollback) refuses no connection; the unit waits for the drain before it kills."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from citadel.components import gateway
from citadel.components.edge_tls import GATEWAY_SOCKET
from citadel.loader import load_cluster
from citadel.render import render_host

ROOT = Path(__file__).resolve().parents[2]


def _units(inventory: str) -> dict[str, str]:
    cluster = load_cluster(ROOT / inventory).cluster
    host = cluster.with_role("gateway")[0]
    return {
        Path(f.spec.dest).name: f.content
        for f in render_host(cluster, host)
        if f.spec.dest.startswith("/etc/systemd/system/citadel-gateway.")
    }


def test_behind_nginx_systemd_listens_on_nginxs_socket() -> None:
    units = _units("inventory/lab.yml")
    socket_unit = units["citadel-gateway.socket"]
    assert f"ListenStream={GATEWAY_SOCKET}\n" in socket_unit
    assert "SocketMode=0666" in socket_unit  # nginx (www-data) connects
    service = units["citadel-gateway.service"]
    assert "Requires=citadel-gateway.socket" in service
    assert "RuntimeDirectory=" not in service  # its stop would delete the socket
    assert "TimeoutStopSec=45" in service  # drain_s 30 + 15


def test_without_a_front_systemd_listens_on_the_gateways_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway, "fronted", lambda view: False)
    assert "ListenStream=0.0.0.0:8000\n" in _units("inventory/lab.yml")["citadel-gateway.socket"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_the_socket_unit_verifies(tmp_path: Path) -> None:
    for name, content in _units("inventory/lab.yml").items():
        (tmp_path / name).write_text(content)
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "citadel-gateway.socket")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert not problems, problems
