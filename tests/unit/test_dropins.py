"""Every service Debian packages that citadel runs gets the shared sandbox as a drop-in
(templates/_shared/sandbox.j2 ``dropin``, issue #19), and scores its bound with it.

Proven offline: each drop-in rendered from the lab and the production inventory goes beside the
packaged unit it amends (tests/unit/fixtures/packaged-units/<distribution>/, copied from the
Debian 12 packages and from the lab's Debian 13 hosts) under a root directory, and
`systemd-analyze security --offline=yes --root=` scores the two together. Without the drop-in
the same units score 9.2-9.6 (3.9 for Prometheus): docs/security.md. The online twin is each
component's verify module (its SANDBOX_EXPOSURE, checked by assert_sandboxed).
"""

from __future__ import annotations

import re
import shutil
from functools import cache
from pathlib import Path, PurePosixPath

import pytest

from citadel.loader import load_cluster
from citadel.model.files import SANDBOX_DROPIN, UNIT_DIR
from citadel.render import render_host
from tests.unit.test_sandbox import REPEATABLE, _analyze, _service, needs_analyze
from tests.verify import (
    test_alertmanager,
    test_edge_tls,
    test_node_exporter,
    test_postgres,
    test_postgres_exporter,
    test_prometheus,
    test_redis_exporter,
)
from tests.verify.test_gateway import exposure

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "packaged-units"
INVENTORIES = ("inventory/lab.yml", "inventory/production.yml")
# Packaged unit -> its bound (the verify module's constant: one number, online and offline).
BOUNDS = {
    "prometheus-node-exporter": test_node_exporter.SANDBOX_EXPOSURE,
    "prometheus-redis-exporter": test_redis_exporter.SANDBOX_EXPOSURE,
    "prometheus-postgres-exporter": test_postgres_exporter.SANDBOX_EXPOSURE,
    "prometheus": test_prometheus.SANDBOX_EXPOSURE,
    "prometheus-alertmanager": test_alertmanager.SANDBOX_EXPOSURE,
    "nginx": test_edge_tls.SANDBOX_EXPOSURE,  # webui's nginx: the same drop-in
    "postgresql@": test_postgres.SANDBOX_EXPOSURE,
}


@cache
def dropins(inventory: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(host, unit) -> (the host's distribution, the drop-in's content)."""
    cluster = load_cluster(ROOT / inventory).cluster
    out = {}
    for host in cluster.hosts:
        for f in render_host(cluster, host):
            if f.spec.on_change == "unit":
                dest = PurePosixPath(f.spec.dest)
                out[(host.name, dest.parent.name.removesuffix(".service.d"))] = (
                    host.distribution,
                    f.content,
                )
    return out


def _cases() -> list[tuple[str, str, str]]:
    return [(i, host, unit) for i in INVENTORIES for host, unit in sorted(dropins(i))]


def packaged(unit: str) -> str:
    """The packaged unit file's name: an instance (postgresql@17-main) is its template's."""
    return re.sub(r"@.*", "@", unit) + ".service"


def _root(tmp_path: Path, distribution: str, unit: str, content: str | None) -> Path:
    """A root directory with the packaged unit and, unless None, its drop-in."""
    lib = tmp_path / "lib/systemd/system"
    lib.mkdir(parents=True)
    shutil.copy(FIXTURES / distribution / packaged(unit), lib)
    (tmp_path / "usr").mkdir()
    (tmp_path / "usr/lib").symlink_to("../lib")
    if content is not None:
        d = tmp_path / UNIT_DIR.lstrip("/") / f"{unit}.service.d"
        d.mkdir(parents=True)
        (d / SANDBOX_DROPIN).write_text(content)
    return tmp_path


def _score(root: Path, unit: str) -> float:
    r = _analyze("security", "--offline=yes", f"--root={root}", "--no-pager", f"{unit}.service")
    assert r.returncode == 0, r.stderr
    return exposure(r.stdout)


def test_every_packaged_service_has_a_dropin() -> None:
    for inventory in INVENTORIES:
        units = {re.sub(r"@.*", "@", unit) for _, unit in dropins(inventory)}
        assert units == set(BOUNDS), inventory
        for host, unit in dropins(inventory):
            assert (FIXTURES / dropins(inventory)[(host, unit)][0] / packaged(unit)).is_file()


@needs_analyze
@pytest.mark.parametrize(("inventory", "host", "unit"), _cases())
def test_offline_exposure_with_the_dropin(
    inventory: str, host: str, unit: str, tmp_path: Path
) -> None:
    distribution, content = dropins(inventory)[(host, unit)]
    bound = BOUNDS[re.sub(r"@.*", "@", unit)]
    before = _score(_root(tmp_path / "before", distribution, unit, None), unit)
    after = _score(_root(tmp_path / "after", distribution, unit, content), unit)
    assert after <= bound < before, f"{host}: {unit} {before} -> {after} (bound {bound})"


@needs_analyze
@pytest.mark.parametrize(("inventory", "host", "unit"), _cases())
def test_verify_offline(inventory: str, host: str, unit: str, tmp_path: Path) -> None:
    """systemd reads the drop-in without a complaint about it (the programs are not here)."""
    distribution, content = dropins(inventory)[(host, unit)]
    root = _root(tmp_path, distribution, unit, content)
    r = _analyze("verify", "--man=no", f"--root={root}", f"{unit}.service")
    problems = [
        line
        for line in (r.stdout + r.stderr).splitlines()
        if SANDBOX_DROPIN in line or "Unknown key" in line or "Failed to parse" in line
    ]
    assert not problems, problems


@pytest.mark.parametrize(("inventory", "host", "unit"), _cases())
def test_dropin_shape(inventory: str, host: str, unit: str) -> None:
    """One place decides: each list the packaged unit may hold is reset before ours, so the
    drop-in's list is the whole list; no capability is given to a program that runs as its own
    user."""
    lines = _service(dropins(inventory)[(host, unit)][1])
    keys = [k for k, _ in lines]
    assert (
        not {k for k in keys if keys.count(k) > 1}
        - REPEATABLE
        - {
            "CapabilityBoundingSet",
            "RestrictAddressFamilies",
        }
    )
    for key in ("SystemCallFilter", "RestrictAddressFamilies", "ReadWritePaths"):
        assert lines[keys.index(key)] == (key, ""), f"{key} is not reset first"
    s = dict(lines)
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    caps = [v for k, v in lines if k == "CapabilityBoundingSet"]
    if unit == "nginx":  # starts as root, binds 80/443, drops to www-data itself
        assert caps == [
            "",
            "CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID CAP_CHOWN CAP_DAC_OVERRIDE CAP_KILL",
        ]
    else:
        assert caps == [""]
    if unit.startswith("postgresql@"):
        assert s["User"] == "postgres" and "RemoveIPC" not in s
        assert "MemoryDenyWriteExecute" not in s  # LLVM JIT
