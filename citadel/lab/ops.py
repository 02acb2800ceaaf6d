"""Lab operations: up, status, ssh, down, destroy, stop_host, start_host."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
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

NSPAWN_RUN = Path("/run/systemd/nspawn")

PREREQS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}


def _log(msg: str) -> None:
    print(f"citadel lab: {msg}", file=sys.stderr, flush=True)


def _cfg(config: LabConfig | None) -> LabConfig:
    return config if config is not None else LabConfig.from_env()


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "must run as root (the lab mounts overlays, boots containers, makes a bridge)"
        )


def ensure_prereqs(log: system.Log) -> None:
    missing = sorted({pkg for cmd, pkg in PREREQS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing prerequisites: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise LabError(f"`{' '.join(argv[:3])}` failed: {' '.join(tail)}")


def check_overlay() -> None:
    def has() -> bool:
        try:
            return "overlay" in Path("/proc/filesystems").read_text().split()
        except OSError:
            return False

    if not has():
        system.run(["modprobe", "overlay"], check=False)
    if not has():
        raise LabError("kernel feature missing: overlay filesystem (modprobe overlay failed)")


# Every booted systemd uses inotify instances; the kernel default (128 per user) runs out
# at about 20 hosts ("Failed to allocate manager object: Too many open files").
INOTIFY_MINIMUMS = {
    "/proc/sys/fs/inotify/max_user_instances": 8192,
    "/proc/sys/fs/inotify/max_user_watches": 524288,
}


def raise_inotify_limits() -> None:
    for path, minimum in INOTIFY_MINIMUMS.items():
        try:
            if int(Path(path).read_text()) < minimum:
                Path(path).write_text(f"{minimum}\n")
        except (OSError, ValueError):
            pass


def machine_dns(config: LabConfig) -> list[str]:
    if config.dns:
        return list(config.dns)
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        text = ""
    dns = render.parse_resolv_conf(text)
    if not dns:
        raise LabError(
            "no usable resolver in /etc/resolv.conf (loopback resolvers are unreachable "
            "from the lab hosts); set LabConfig.dns"
        )
    return dns


# ---------------------------------------------------------------- state


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write only when the content differs (keeps mtimes stable for idempotent runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            os.chmod(path, mode)
            return
    except OSError:
        pass
    if path.is_symlink():
        path.unlink()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.rename(path)


def ensure_ssh_key(paths: LabPaths) -> str:
    paths.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.ssh_dir, 0o700)
    paths.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(paths.state_dir, 0o700)
    if not paths.ssh_key.exists():
        system.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "citadel-lab",
                "-f",
                str(paths.ssh_key),
            ]
        )
    return Path(f"{paths.ssh_key}.pub").read_text().strip()


def host_key(hd: Path, name: str) -> Path:
    key = hd / "ssh_host_ed25519_key"
    if not key.exists():
        hd.mkdir(parents=True, exist_ok=True)
        system.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(key)]
        )
    return key


def write_known_hosts(paths: LabPaths, hosts: list[LabHost]) -> None:
    entries = [
        (h, Path(f"{host_key(paths.host_dir(h.name), h.name)}.pub").read_text()) for h in hosts
    ]
    _write(paths.known_hosts, render.known_hosts_lines(entries))


def read_pid(hd: Path) -> int | None:
    try:
        return int((hd / "pid").read_text().strip())
    except (OSError, ValueError):
        return None


def host_running(paths: LabPaths, name: str) -> int | None:
    hd = paths.host_dir(name)
    pid = read_pid(hd)
    if pid is not None and system.is_nspawn_for(pid, hd / "root"):
        return pid
    return None


def known_host_names(paths: LabPaths) -> list[str]:
    if not paths.hosts_dir.is_dir():
        return []
    return sorted(p.name for p in paths.hosts_dir.iterdir() if p.is_dir())


def sshd_answers(address: str, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def console_tail(hd: Path, lines: int = 15) -> str:
    try:
        text = (hd / "console.log").read_text(errors="replace")
    except OSError:
        return "(no console log)"
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    out = " | ".join(ln.strip() for ln in tail) or "(console log empty)"
    if "Too many open files" in out:
        out += " (hint: raise fs.inotify.max_user_instances)"
    return out


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
    _write(hd / "host.json", json.dumps(record) + "\n")
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
        _write(root / "etc/hostname", host.name + "\n")
        _write(root / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
        _write(root / "etc/ssh/ssh_host_ed25519_key", key.read_text(), 0o600)
        _write(root / "etc/ssh/ssh_host_ed25519_key.pub", Path(f"{key}.pub").read_text())
    # Lab-owned files, rewritten at every start so a changed address/resolver takes effect.
    _write(root / render.NETWORKD_FILE, render.networkd_file(config, host, dns))
    _write(root / "etc/resolv.conf", render.resolv_conf(dns))
    _write(root / "etc/hosts", render.etc_hosts(host, hosts))
    ak = root / "root/.ssh/authorized_keys"
    ak.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(ak.parent, 0o700)
    existing = ak.read_text() if ak.exists() else ""
    if pub not in existing.splitlines():
        sep = "" if not existing or existing.endswith("\n") else "\n"
        _write(ak, existing + sep + pub + "\n", 0o600)
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
    _write(hd / "pid", f"{pid}\n")
    # $! is setsid until it execs nspawn: wait for the exec so liveness checks are exact.
    deadline = time.monotonic() + 10
    while not system.is_nspawn_for(pid, hd / "root"):
        if not system.is_alive(pid) or time.monotonic() >= deadline:
            raise LabError(f"host {host.name} did not start; console: {console_tail(hd)}")
        time.sleep(0.05)
    st = os.stat(hd / "root")
    _write(hd / "nspawn-lock", f"{NSPAWN_RUN}/locks/inode-{st.st_dev}:{st.st_ino}\n")
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
    _write(
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
