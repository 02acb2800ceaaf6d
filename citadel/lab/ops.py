"""Lab operations: up, status, ssh, down, destroy, stop_host, start_host, and the host lifecycle
behind them (reclaim what a dead run left, prepare a host's tree, boot it, wait for its sshd).

What the lab needs of the machine it runs on is citadel.lab.prereqs; what it keeps on disk per
host (keys, pids, known_hosts) is citadel.lab.hoststate.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from citadel.lab import base, network, render, system
from citadel.lab.config import (
    DEFAULT_SUITE,
    LabConfig,
    LabError,
    LabHost,
    LabPaths,
    find_host,
    validate_hosts,
)
from citadel.lab.hoststate import (
    console_tail,
    ensure_ssh_key,
    host_key,
    host_running,
    known_host_names,
    read_pid,
    sshd_answers,
    write_if_changed,
    write_known_hosts,
)
from citadel.lab.prereqs import (
    check_overlay,
    ensure_prereqs,
    machine_dns,
    raise_inotify_limits,
    require_root,
)

NSPAWN_RUN = Path("/run/systemd/nspawn")


def _log(msg: str) -> None:
    print(f"citadel lab: {msg}", file=sys.stderr, flush=True)


def _cfg(config: LabConfig | None) -> LabConfig:
    return config if config is not None else LabConfig.from_env()


# ---------------------------------------------------------------- host lifecycle


def _reclaim_host(config: LabConfig, paths: LabPaths, name: str) -> None:
    """Remove what a dead or killed run left of one host: processes, its mount, its veth."""
    hd = paths.host_dir(name)
    pid = read_pid(hd)
    if pid is not None and system.is_nspawn_for(pid, hd / "root"):
        system.terminate(pid, config.stop_timeout)
    inits = system.container_inits_for({name: hd / "upper"}).get(name, [])
    for p in inits:
        system.kill(p, signal.SIGKILL)
    system.wait_gone(inits, 10)
    for mp in system.mounts_under(hd / "root"):
        system.umount(Path(mp))
    (hd / "pid").unlink(missing_ok=True)
    _remove_nspawn_runtime(hd, name)
    if system.link(config.bridge) is not None or system.link(render.veth_name(name)) is not None:
        network.remove_stale_veth(config, name)


def _remove_nspawn_runtime(hd: Path, name: str) -> None:
    """nspawn leaves /run/systemd/nspawn/{propagate/NAME,locks/inode-*} behind when /run is not
    a tmpfs; remove ours once the host is gone (a lock still held means it is not gone)."""
    with contextlib.suppress(OSError):
        (NSPAWN_RUN / "propagate" / name).rmdir()
    try:
        lock = Path((hd / "nspawn-lock").read_text().strip())
    except OSError:
        return
    try:
        with open(lock) as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink()
    except OSError:
        pass
    (hd / "nspawn-lock").unlink(missing_ok=True)


def _remove_empty_nspawn_run() -> None:
    for d in (NSPAWN_RUN / "propagate", NSPAWN_RUN / "locks", NSPAWN_RUN):
        with contextlib.suppress(OSError):
            d.rmdir()


def _prepare_host(
    config: LabConfig,
    paths: LabPaths,
    host: LabHost,
    hosts: list[LabHost],
    pub: str,
    dns: list[str],
) -> None:
    hd = paths.host_dir(host.name)
    upper, work, root = hd / "upper", hd / "work", hd / "root"
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    key = host_key(hd, host.name)
    if _recorded_suite(hd) not in (None, host.suite):
        # Another distribution under the same overlay would mix two systems: start it afresh.
        for d in (upper, work):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        (hd / ".initialized").unlink(missing_ok=True)
    record = {"name": host.name, "address": host.address, "suite": host.suite}
    write_if_changed(hd / "host.json", json.dumps(record) + "\n")
    system.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            render.overlay_options(paths.base_tree_for(host.suite), upper, work),
            str(root),
        ]
    )
    first = not (hd / ".initialized").exists()
    if first:
        write_if_changed(root / "etc/hostname", host.name + "\n")
        write_if_changed(root / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        write_if_changed(root / "etc/ssh/ssh_host_ed25519_key", key.read_text(), 0o600)
        write_if_changed(root / "etc/ssh/ssh_host_ed25519_key.pub", Path(f"{key}.pub").read_text())
    # Lab-owned files, rewritten at every start so a changed address/resolver takes effect.
    write_if_changed(root / render.NETWORKD_FILE, render.networkd_file(config, host, dns))
    write_if_changed(root / "etc/resolv.conf", render.resolv_conf(dns))
    write_if_changed(root / "etc/hosts", render.etc_hosts(host, hosts))
    ak = root / "root/.ssh/authorized_keys"
    ak.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(ak.parent, 0o700)
    existing = ak.read_text() if ak.exists() else ""
    if pub not in existing.splitlines():
        sep = "" if not existing or existing.endswith("\n") else "\n"
        write_if_changed(ak, existing + sep + pub + "\n", 0o600)
    (hd / ".initialized").touch()


def needs_boot(paths: LabPaths, host: LabHost) -> bool:
    """A host that is not running, or runs on another distribution than it declares now (a
    running host would otherwise keep its old system until someone stopped it by hand)."""
    if host_running(paths, host.name) is None:
        return True
    return _recorded_suite(paths.host_dir(host.name)) not in (None, host.suite)


def _recorded_suite(hd: Path) -> str | None:
    """The suite a host's overlay was made on (``None``: a new host; older labs: the default)."""
    try:
        record = json.loads((hd / "host.json").read_text())
    except (OSError, ValueError):
        return None
    return str(record.get("suite") or DEFAULT_SUITE) if (hd / ".initialized").exists() else None


def _boot(config: LabConfig, paths: LabPaths, host: LabHost) -> int:
    hd = paths.host_dir(host.name)
    log_path = hd / "console.log"
    with open(log_path, "a") as fh:
        fh.write(f"\n=== citadel lab: boot {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    cmd = render.nspawn_shell_command(render.nspawn_argv(config, host, hd / "root"), log_path)
    res = system.run(["sh", "-c", cmd])
    pid = int(res.stdout.strip())
    write_if_changed(hd / "pid", f"{pid}\n")
    # $! is setsid until it execs nspawn: wait for the exec so liveness checks are exact.
    deadline = time.monotonic() + 10
    while not system.is_nspawn_for(pid, hd / "root"):
        if not system.is_alive(pid) or time.monotonic() >= deadline:
            raise LabError(f"host {host.name} did not start; console: {console_tail(hd)}")
        time.sleep(0.05)
    st = os.stat(hd / "root")
    write_if_changed(hd / "nspawn-lock", f"{NSPAWN_RUN}/locks/inode-{st.st_dev}:{st.st_ino}\n")
    return pid


def _wait_sshd(config: LabConfig, paths: LabPaths, hosts: list[LabHost]) -> None:
    pending = {h.name: h for h in hosts}
    deadline = time.monotonic() + config.boot_timeout
    while pending:
        for name, h in list(pending.items()):
            hd = paths.host_dir(name)
            if host_running(paths, name) is None:
                raise LabError(f"host {name} stopped while booting; console: {console_tail(hd)}")
            if sshd_answers(h.address, timeout=1.0):
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            name = sorted(pending)[0]
            raise LabError(
                f"host {name} ({pending[name].address}): sshd did not answer within "
                f"{config.boot_timeout:.0f} s; console: {console_tail(paths.host_dir(name))}"
            )
        time.sleep(0.5)


def _lab_state(config: LabConfig, paths: LabPaths) -> None:
    write_if_changed(
        paths.state_dir / "lab.json",
        json.dumps(
            {
                "bridge": config.bridge,
                "gateway": config.gateway,
                "nft_table": config.nft_table,
                "owner_tag": config.owner_tag,
                "base_tree": str(paths.base_tree),
            },
            indent=2,
        )
        + "\n",
    )


def _up(hosts: list[LabHost], config: LabConfig, log: system.Log, only: str | None = None) -> None:
    require_root()
    validate_hosts(config, hosts)
    ensure_prereqs(log)
    paths = config.paths()
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with system.locked(paths.state_dir / "lock"):
        check_overlay()
        pub = ensure_ssh_key(paths)
        dns = machine_dns(config)
        network.check_free(config)
        targets = [h for h in hosts if only is None or h.name == only]
        for suite in sorted({h.suite for h in targets}):
            base.ensure_base(config.for_suite(suite), log)
        _lab_state(config, paths)
        to_start = [h for h in targets if needs_boot(paths, h)]
        for h in to_start:
            if host_running(paths, h.name) is not None:
                log(f"{h.name}: its distribution changed to {h.suite}: restarting it afresh")
        if to_start:
            network.check_veth_support()
            raise_inotify_limits()
        network.ensure(config)
        write_known_hosts(paths, hosts)
        t0 = time.monotonic()
        for h in to_start:
            _reclaim_host(config, paths, h.name)
            _prepare_host(config, paths, h, hosts, pub, dns)
            _boot(config, paths, h)
        _wait_sshd(config, paths, targets)
        if to_start:
            log(
                f"{len(to_start)} host(s) booted, sshd answering in {time.monotonic() - t0:.1f} s;"
                f" {len(targets) - len(to_start)} already running"
            )
        else:
            log(f"all {len(targets)} host(s) already running")


# ---------------------------------------------------------------- public operations


def up(hosts: list[LabHost], config: LabConfig | None = None, log: system.Log = _log) -> None:
    _up(hosts, _cfg(config), log)


def start_host(
    hosts: list[LabHost], name: str, config: LabConfig | None = None, log: system.Log = _log
) -> None:
    host = find_host(hosts, name)
    _up(hosts, _cfg(config), log, only=host.name)


def stop_host(name: str, config: LabConfig | None = None, log: system.Log = _log) -> None:
    """Stop one host (SIGTERM to its nspawn, SIGKILL after the timeout); its overlay is kept."""
    require_root()
    cfg = _cfg(config)
    paths = cfg.paths()
    if name not in known_host_names(paths):
        for hn in known_host_names(paths):
            try:
                if json.loads((paths.host_dir(hn) / "host.json").read_text())["address"] == name:
                    name = hn
                    break
            except (OSError, ValueError, KeyError):
                continue
        else:
            raise LabError(f"no lab host {name!r} in {paths.hosts_dir}")
    with system.locked(paths.state_dir / "lock"):
        _reclaim_host(cfg, paths, name)
    log(f"host {name} stopped (overlay kept)")


def status(hosts: list[LabHost], config: LabConfig | None = None, out: system.Log = print) -> int:
    require_root()
    cfg = _cfg(config)
    paths = cfg.paths()
    ok = True
    br = network.bridge_owner(cfg)
    tb = network.table_owner(cfg)
    out(f"bridge {cfg.bridge} ({cfg.gateway}): {br.value}")
    out(f"nft table inet {cfg.nft_table}: {tb.value}")
    ok = br is network.Owner.OURS and tb is network.Owner.OURS
    out(f"{'HOST':<14}{'ADDRESS':<16}{'RUNNING':<9}SSHD")
    for h in hosts:
        running = host_running(paths, h.name) is not None
        answers = running and sshd_answers(h.address)
        ok = ok and running and answers
        yn = {True: "yes", False: "no"}
        out(f"{h.name:<14}{h.address:<16}{yn[running]:<9}{yn[answers]}")
    return 0 if ok else 1


def ssh(hosts: list[LabHost], host: str, cmd: list[str], config: LabConfig | None = None) -> int:
    require_root()
    cfg = _cfg(config)
    h = find_host(hosts, host)
    paths = cfg.paths()
    if not paths.ssh_key.exists():
        raise LabError(f"no lab ssh key at {paths.ssh_key}: run `citadel lab up` first")
    tty = not cmd and sys.stdin.isatty()
    argv = render.ssh_argv(paths.ssh_key, paths.known_hosts, h.address, cmd, tty)
    try:
        return subprocess.call(argv)
    except FileNotFoundError:
        raise LabError("ssh client not found (apt-get install openssh-client)") from None


def down(config: LabConfig | None = None, log: system.Log = _log) -> None:
    """Stop every host of this lab and remove all it made on the machine; state stays."""
    require_root()
    cfg = _cfg(config)
    paths = cfg.paths()
    lock = paths.state_dir / "lock"
    if not paths.state_dir.exists():
        network.teardown(cfg, log)
        return
    with system.locked(lock):
        names = known_host_names(paths)
        # 1. orderly: SIGTERM every nspawn at once, then wait for all
        pids = [p for n in names if (p := host_running(paths, n)) is not None]
        for p in pids:
            system.kill(p, signal.SIGTERM)
        if not system.wait_gone(pids, cfg.stop_timeout):
            for p in pids:
                system.kill(p, signal.SIGKILL)
        # 2. whatever is left (killed runs): container inits, mounts, veths
        for n in names:
            _reclaim_host(cfg, paths, n)
        for mp in system.mounts_under(paths.hosts_dir):
            system.umount(Path(mp))
        network.teardown(cfg, log)
        _remove_empty_nspawn_run()
    # PID 1 reaps the orphaned nspawn processes a moment later; wait so `ps` is clean.
    system.wait_vanished(pids, 10)
    log(f"lab down ({len(names)} host(s) stopped; state kept in {paths.state_dir})")


def destroy(config: LabConfig | None = None, log: system.Log = _log) -> None:
    """down, then drop the state dir and the cached base tree."""
    cfg = _cfg(config)
    down(cfg, log)
    paths = cfg.paths()
    if system.mounts_under(paths.state_dir):
        raise LabError(f"mounts remain under {paths.state_dir}; not removing it")
    shutil.rmtree(paths.state_dir, ignore_errors=True)
    trees = paths.base_trees()
    for tree in trees:
        if system.tree_in_use(tree):
            raise LabError(f"state removed; base tree {tree} kept: another lab uses it")
        shutil.rmtree(tree, ignore_errors=True)
    names = ", ".join(str(t) for t in trees) or "none"
    log(f"lab destroyed (state {paths.state_dir} and base trees {names} removed)")
