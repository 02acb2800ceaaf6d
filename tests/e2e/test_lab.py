"""End to end: a real 2-host lab on a bridge/subnet/table of its own (runs beside a real lab).

Needs root and systemd-nspawn; builds (or reuses) the cached Debian base tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from citadel.lab import LabConfig, LabError, LabHost, main, ops, system

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(
        shutil.which("systemd-nspawn") is None, reason="systemd-nspawn is not installed"
    ),
]

BRIDGE = "citadel-test0"
TABLE = "citadel_lab_test"
HOSTS = [LabHost("lt-a", "10.210.11.10"), LabHost("lt-b", "10.210.11.11")]


def _config(state: Path, **kw: object) -> LabConfig:
    base: dict[str, object] = {
        "state_dir": state,
        "cache_dir": Path(os.environ.get("CITADEL_CACHE_DIR") or "/var/cache/citadel"),
        "bridge": BRIDGE,
        "gateway": "10.210.11.1/24",
        "nft_table": TABLE,
    }
    base.update(kw)
    return LabConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[LabConfig]:
    config = _config(tmp_path / "lab")
    yield config
    ops.down(config, log=lambda m: None)  # whatever happened, leave nothing


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _lab(cfg: LabConfig, *argv: str) -> int:
    return main(list(argv), HOSTS, cfg)


def assert_nothing_left(cfg: LabConfig) -> None:
    state = str(cfg.state_dir)
    links = _sh("ip", "-br", "link")
    assert BRIDGE not in links
    for h in HOSTS:
        assert f"vb-{h.name}" not in links
    assert state not in _sh("mount")
    assert TABLE not in _sh("nft", "list", "tables")
    deadline = time.monotonic() + 10
    while True:
        procs = [p for p in _sh("ps", "-eo", "pid,stat,args").splitlines() if state in p]
        uppers = {h.name: cfg.paths().host_dir(h.name) / "upper" for h in HOSTS}
        inits = system.container_inits_for(uppers)
        if (not procs and not inits) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert procs == []
    assert inits == {}
    for h in HOSTS:
        assert not Path(f"/run/systemd/nspawn/propagate/{h.name}").exists()


def test_lab_lifecycle(cfg: LabConfig, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    assert _lab(cfg, "up") == 0
    print(f"up (cold for this state dir): {time.monotonic() - t0:.1f} s")
    assert _lab(cfg, "status") == 0
    assert _lab(cfg, "ssh", "lt-a", "--", "true") == 0
    assert _lab(cfg, "ssh", "lt-a", "--", "false") == 1
    # one argument is a shell command line; several are an argv (quoted for the remote shell)
    assert _lab(cfg, "ssh", "10.210.11.11", "--", "test $(hostname) = lt-b") == 0
    assert _lab(cfg, "ssh", "lt-b", "--", "test", "a b", "=", "a b") == 0
    # systemd is fully up (nothing failed), resolver + NAT + CA bundle give https to Debian
    assert _lab(cfg, "ssh", "lt-a", "--", "systemctl is-system-running --wait") == 0
    assert _lab(cfg, "ssh", "lt-b", "--", "curl -sSfI https://deb.debian.org/debian/") == 0
    assert _lab(cfg, "ssh", "lt-a", "--", "ping -c1 -W3 10.210.11.11") == 0
    assert _lab(cfg, "ssh", "lt-b", "--", "ping -c1 -W3 lt-a") == 0
    # known_hosts pins the lab-made host keys (strict checking is on in ops.ssh)
    kh = cfg.paths().known_hosts.read_text()
    assert "10.210.11.10 ssh-ed25519 " in kh and "10.210.11.11 ssh-ed25519 " in kh

    # up again: a no-op that leaves the running hosts alone
    pids = [ops.read_pid(cfg.paths().host_dir(h.name)) for h in HOSTS]
    t0 = time.monotonic()
    assert _lab(cfg, "up") == 0
    noop = time.monotonic() - t0
    print(f"up (no-op): {noop:.2f} s")
    assert noop < 10
    assert [ops.read_pid(cfg.paths().host_dir(h.name)) for h in HOSTS] == pids

    # fault drill: stop one host, it is down; start it, its data survived
    assert _lab(cfg, "ssh", "lt-a", "--", "echo kept > /root/drill.txt") == 0
    ops.stop_host("lt-a", cfg)
    assert _lab(cfg, "status") == 1
    assert _lab(cfg, "ssh", "lt-b", "--", "true") == 0
    ops.start_host(HOSTS, "lt-a", cfg)
    assert _lab(cfg, "status") == 0
    assert _lab(cfg, "ssh", "lt-a", "--", "grep -qx kept /root/drill.txt") == 0

    assert _lab(cfg, "down") == 0
    assert_nothing_left(cfg)
    assert _lab(cfg, "status") == 1
    capsys.readouterr()


def test_half_alive_lab_is_reclaimed(cfg: LabConfig) -> None:
    assert _lab(cfg, "up") == 0
    assert _lab(cfg, "ssh", "lt-a", "--", "echo survived > /root/f") == 0
    # a killed run: nspawn processes gone, but mounts, bridge, table (and orphans) remain
    for h in HOSTS:
        pid = ops.read_pid(cfg.paths().host_dir(h.name))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    assert system.wait_gone(
        [p for h in HOSTS if (p := ops.read_pid(cfg.paths().host_dir(h.name)))], 10
    )
    assert _lab(cfg, "status") == 1
    assert _lab(cfg, "up") == 0
    assert _lab(cfg, "status") == 0
    assert _lab(cfg, "ssh", "lt-a", "--", "grep -qx survived /root/f") == 0
    # killed again, then down alone must clean it all
    for h in HOSTS:
        pid = ops.read_pid(cfg.paths().host_dir(h.name))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    assert _lab(cfg, "down") == 0
    assert_nothing_left(cfg)


def test_boot_timeout_names_host_with_console(tmp_path: Path) -> None:
    config = _config(tmp_path / "lab", boot_timeout=0.2)
    one = [LabHost("lt-c", "10.210.11.12")]
    try:
        with pytest.raises(LabError, match=r"host lt-c \(10\.210\.11\.12\): sshd did not answer"):
            ops.up(one, config, log=lambda m: None)
    finally:
        ops.down(config, log=lambda m: None)


def test_foreign_bridge_and_address_refused(tmp_path: Path) -> None:
    foreign = "citadel-tf0"
    subprocess.run(["ip", "link", "add", foreign, "type", "bridge"], check=True)
    try:
        config = _config(tmp_path / "lab", bridge=foreign, gateway="10.210.12.1/24")
        with pytest.raises(LabError, match="not created by this lab"):
            ops.up([LabHost("lt-d", "10.210.12.10")], config, log=lambda m: None)
        subprocess.run(["ip", "addr", "add", "10.210.12.1/24", "dev", foreign], check=True)
        config = _config(tmp_path / "lab", bridge="citadel-tf1", gateway="10.210.12.1/24")
        with pytest.raises(LabError, match="already used on this machine"):
            ops.up([LabHost("lt-d", "10.210.12.10")], config, log=lambda m: None)
        # the refusal touched nothing
        assert foreign in _sh("ip", "-br", "link")
        assert "citadel-tf1" not in _sh("ip", "-br", "link")
    finally:
        subprocess.run(["ip", "link", "delete", foreign], check=False)


def test_destroy_drops_state_and_base(tmp_path: Path) -> None:
    # a private cache (never the shared base tree other labs run on)
    config = _config(tmp_path / "lab", cache_dir=tmp_path / "cache")
    paths = config.paths()
    (paths.base_tree / "etc").mkdir(parents=True)
    (paths.hosts_dir / "lt-e" / "upper").mkdir(parents=True)
    assert main(["destroy"], [], config) == 0
    assert not paths.state_dir.exists()
    assert not paths.base_tree.exists()
