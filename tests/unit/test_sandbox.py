"""Every systemd unit citadel writes is sandboxed (templates/_shared/sandbox.j2, issue #19).

Proven offline: each unit rendered from the lab and the production inventory goes through
`systemd-analyze security --offline=yes` (its overall exposure, 2.5 or below) and
`systemd-analyze verify`. The lab owner's online twin is tests/verify (assert_sandboxed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

from citadel.loader import load_cluster
from citadel.render import render_host
from tests.verify.test_gateway import MAX_EXPOSURE, exposure

ROOT = Path(__file__).resolve().parents[2]
INVENTORIES = ("inventory/lab.yml", "inventory/production.yml")
UNIT_DIR = PurePosixPath("/etc/systemd/system")
# The units the shared sandbox covers, and what each must keep open.
SANDBOXED = {
    "citadel-gateway.service": {},
    "citadel-gpu-exporter.service": {"devices": True, "wx_memory": True, "proc_all": True},
    "llama-cpp.service": {},
    "ollama.service": {"devices": True, "wx_memory": True, "proc_all": True},
    "qdrant.service": {},
    "open-webui.service": {"wx_memory": True, "proc_all": True},
    "vllm.service": {"devices": True, "wx_memory": True, "proc_all": True},
    "citadel-pg-backup.service": {},
    "citadel-redis-backup.service": {},
    "citadel-qdrant-backup.service": {},
}
PENDING: set[str] = set()
# Directives a unit may give more than once (each line adds to the list).
REPEATABLE = {"SystemCallFilter", "DeviceAllow", "ReadWritePaths", "Environment", "ExecStartPre"}
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


@cache
def units(inventory: str) -> dict[tuple[str, str], str]:
    """(host, unit file name) -> content, for every whole unit the inventory's hosts receive."""
    cluster = load_cluster(ROOT / inventory).cluster
    out = {}
    for host in cluster.hosts:
        for f in render_host(cluster, host):
            dest = PurePosixPath(f.spec.dest)
            if dest.parent == UNIT_DIR and dest.suffix == ".service":
                out[(host.name, dest.name)] = f.content
    return out


@cache
def unit_files(inventory: str) -> dict[tuple[str, str], str]:
    """(host, unit file name) -> content, for every unit (service, socket, timer) hosts get."""
    cluster = load_cluster(ROOT / inventory).cluster
    out = {}
    for host in cluster.hosts:
        for f in render_host(cluster, host):
            dest = PurePosixPath(f.spec.dest)
            if dest.parent == UNIT_DIR and dest.suffix in (".service", ".socket", ".timer"):
                out[(host.name, dest.name)] = f.content
    return out


def _cases() -> list[tuple[str, str, str]]:
    return [
        (inventory, host, name)
        for inventory in INVENTORIES
        for host, name in sorted(units(inventory))
        if name not in PENDING
    ]


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LC_ALL": "C", "SYSTEMD_COLORS": "0"},
    )


def _service(content: str) -> list[tuple[str, str]]:
    """The [Service] section's (key, value) lines, repeated keys kept."""
    lines, section = [], None
    for raw in content.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            lines.append((key, value))
    return lines


def test_every_unit_is_sandboxed_or_pending() -> None:
    for inventory in INVENTORIES:
        names = {name for _, name in units(inventory)}
        assert names <= set(SANDBOXED) | PENDING, (
            f"{inventory}: a unit without the shared sandbox: {sorted(names - set(SANDBOXED))}"
        )
    seen = {name for inventory in INVENTORIES for _, name in units(inventory)}
    assert set(SANDBOXED) <= seen, "each sandboxed unit is rendered by one inventory at least"


@needs_analyze
@pytest.mark.parametrize(("inventory", "host", "name"), _cases())
def test_offline_exposure(inventory: str, host: str, name: str, tmp_path: Path) -> None:
    unit = tmp_path / name
    unit.write_text(units(inventory)[(host, name)])
    r = _analyze("security", "--offline=yes", "--no-pager", str(unit))
    assert r.returncode == 0, r.stderr
    level = exposure(r.stdout)
    assert level <= MAX_EXPOSURE, f"{host}: {name} exposure {level}:\n{r.stdout}"


@needs_analyze
@pytest.mark.parametrize(("inventory", "host", "name"), _cases())
def test_verify_offline(inventory: str, host: str, name: str, tmp_path: Path) -> None:
    # The host's other units beside it: a backup unit requires its server's (qdrant.service),
    # the gateway its socket.
    for (other, unit_name), content in unit_files(inventory).items():
        if other == host:
            (tmp_path / unit_name).write_text(content)
    unit = tmp_path / name
    r = _analyze("verify", "--man=no", str(unit))
    # The programs are not installed here: that complaint is the only one allowed.
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if line.strip() and "is not executable: No such file or directory" not in line
    ]
    assert not problems, problems


@pytest.mark.parametrize(("inventory", "host", "name"), _cases())
def test_sandbox_shape(inventory: str, host: str, name: str) -> None:
    """One place decides: the shape's directives once each, its parameters as declared."""
    lines = _service(units(inventory)[(host, name)])
    counts = Counter(key for key, _ in lines)
    assert not {k for k, n in counts.items() if n > 1} - REPEATABLE, counts
    s = dict(lines)
    opens = SANDBOXED[name]
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["CapabilityBoundingSet"] == s["AmbientCapabilities"] == ""
    assert s.get("User", "root") != "root" or s.get("DynamicUser") == "yes"
    assert s["PrivateDevices"] == ("no" if opens.get("devices") else "yes")
    if opens.get("devices"):
        assert s["DevicePolicy"] == "closed"
        assert ("DeviceAllow", "char-nvidia* rw") in lines
    assert ("MemoryDenyWriteExecute" in s) is not opens.get("wx_memory", False)
    assert ("ProcSubset" in s) is not opens.get("proc_all", False)
    assert ("SystemCallFilter", "@system-service") in lines


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_backup_units_keep_their_servers_ipc_and_never_start_them(inventory: str) -> None:
    """Each runs as its server's own user: RemoveIPC would remove that user's IPC, the running
    server's included, when it stops (seen in the lab: PostgreSQL's 'could not open shared memory
    segment'). Requisite=, not Requires=: a timer run during a restore must not start the server
    the restore stopped."""
    backup = {
        name: u
        for (host, name), u in units(inventory).items()
        if name.startswith("citadel-") and name.endswith("-backup.service")
    }
    expected = {"citadel-pg-backup.service", "citadel-redis-backup.service"}
    if inventory.endswith("production.yml"):
        expected.add("citadel-qdrant-backup.service")  # the lab skips Qdrant
    assert set(backup) == expected
    for name, u in backup.items():
        service = dict(_service(u))
        assert "RemoveIPC" not in service, name
        assert service["User"] in ("postgres", "redis", "qdrant"), name
        assert "Requisite=" in u and "Requires=" not in u, name
    gateway = [
        u
        for (host, name), u in units("inventory/lab.yml").items()
        if name == "citadel-gateway.service"
    ]
    assert all("RemoveIPC=yes" in u for u in gateway)
