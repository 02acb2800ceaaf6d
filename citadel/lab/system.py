"""Side-effecting helpers: commands, processes, mounts, links. Parsers are pure for tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from citadel.lab.config import LabError

Log = Callable[[str], None]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: list[str], *, check: bool = True, capture: bool = True, input: str | None = None
) -> Result:
    try:
        proc = subprocess.run(
            argv,
            input=input,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]}") from None
    res = Result(proc.returncode, proc.stdout or "", proc.stderr or "")
    if check and res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        detail = msg[-1] if msg else f"exit {res.returncode}"
        raise LabError(f"`{' '.join(argv[:4])}` failed: {detail}")
    return res


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- mounts


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    super_options: str


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        lf = left.split()
        rf = right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        mounts.append(Mount(_unescape(lf[4]), rf[0], _unescape(rf[1]), _unescape(rf[2])))
    return mounts


def mounts(pid: str = "self") -> list[Mount]:
    try:
        return parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())
    except OSError:
        return []


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below prefix, deepest first (the order to unmount them)."""
    p = str(prefix).rstrip("/")
    found = {
        m.mount_point for m in mounts() if m.mount_point == p or m.mount_point.startswith(p + "/")
    }
    return sorted(found, key=lambda s: (-s.count("/"), s))


def is_mounted(path: Path) -> bool:
    return str(path) in {m.mount_point for m in mounts()}


def overlay_option(super_options: str, key: str) -> str | None:
    for opt in super_options.split(","):
        if opt.startswith(key + "="):
            return opt[len(key) + 1 :]
    return None


def tree_in_use(base: Path) -> bool:
    b = str(base)
    for m in mounts():
        if m.fstype == "overlay":
            lower = overlay_option(m.super_options, "lowerdir") or ""
            if b in lower.split(":"):
                return True
    return False


def umount(path: Path) -> None:
    for _ in range(20):
        res = run(["umount", str(path)], check=False)
        if res.returncode == 0 or not is_mounted(path):
            return
        time.sleep(0.25)
    # Still busy after 5 s: detach it so nothing of the lab stays visible.
    run(["umount", "--lazy", str(path)], check=False)


# ---------------------------------------------------------------- processes


def proc_state(pid: int) -> str | None:
    """Process state letter, None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def is_alive(pid: int) -> bool:
    st = proc_state(pid)
    return st is not None and st not in ("Z", "X")


def is_nspawn_for(pid: int, root: Path) -> bool:
    """pid is alive and is the systemd-nspawn running `root` (guards against PID reuse)."""
    if not is_alive(pid):
        return False
    argv = proc_cmdline(pid)
    if not argv or not os.path.basename(argv[0]).startswith("systemd-nspawn"):
        return False
    return str(root) in argv


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _pidns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def parse_nspid(status_text: str) -> list[int]:
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return []


def namespace_inits() -> list[int]:
    """PIDs (in our namespace) of processes that are PID 1 of a nested PID namespace."""
    own = _pidns("self")
    out = []
    for pid in all_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = parse_nspid(status)
        if len(nspid) >= 2 and nspid[-1] == 1 and _pidns(pid) != own:
            out.append(pid)
    return out


def container_inits_for(upper_dirs: dict[str, Path]) -> dict[str, list[int]]:
    """Container inits whose root is the overlay with one of these upper dirs, by host name.

    Found through the init's own mountinfo (the overlay's upperdir option), so it works even
    when the nspawn process that started it is gone (a killed run).
    """
    wanted = {str(p): name for name, p in upper_dirs.items()}
    found: dict[str, list[int]] = {}
    for pid in namespace_inits():
        for m in mounts(str(pid)):
            if m.mount_point == "/" and m.fstype == "overlay":
                upper = overlay_option(m.super_options, "upperdir")
                if upper in wanted:
                    found.setdefault(wanted[upper], []).append(pid)
    return found


def kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not any(is_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def wait_vanished(pids: list[int], timeout: float) -> bool:
    """Until the pids are gone from /proc entirely (zombies reaped by their parent)."""
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{p}").exists() for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (nspawn turns it into an orderly poweroff), SIGKILL after the timeout."""
    kill(pid, signal.SIGTERM)
    if not wait_gone([pid], timeout):
        kill(pid, signal.SIGKILL)
        wait_gone([pid], 5)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it when it happens to be our child


# ---------------------------------------------------------------- links and addresses


def ip_json(*args: str) -> list[dict[str, object]]:
    res = run(["ip", "-j", *args], check=False)
    if res.returncode != 0 or not res.stdout.strip():
        return []
    data = json.loads(res.stdout)
    return data if isinstance(data, list) else []


def link(name: str) -> dict[str, object] | None:
    for item in ip_json("-d", "link", "show"):
        if item.get("ifname") == name:
            return item
    return None


def default_interface() -> str:
    for r in ip_json("route", "show", "default"):
        dev = r.get("dev")
        if isinstance(dev, str):
            return dev
    raise LabError("this machine has no default route: the lab needs one for NAT")
