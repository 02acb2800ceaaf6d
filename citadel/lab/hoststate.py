"""What the lab keeps on disk for its hosts and reads back: the SSH key and host keys, the
known_hosts file, a host's pid (and whether that is still its nspawn), its console log; and
whether a host's sshd answers. Files are written only when their content changes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from citadel.lab import render, system
from citadel.lab.config import (
    LabHost,
    LabPaths,
)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> None:
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
    write_if_changed(paths.known_hosts, render.known_hosts_lines(entries))


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
