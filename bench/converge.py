"""Convergence benchmark: cold converge, no-op re-converge and the apt floor, per lab size.

    sudo .venv/bin/python bench/converge.py [--sizes 4,8,16,24] [--out bench/RESULTS.md]

For each size N, on a bench lab of its own (bridge ``citadel-bench0``, 10.210.12.0/24, nft table
``citadel_lab_bench``, state ``/var/lib/citadel/bench-lab``, hosts ``bn-01``..; never the main lab
or the lab tests' one), with fresh host overlays over the cached Debian base tree:

1. floor, one host: ``apt-get update && apt-get install --no-install-recommends <packages>`` over
   ssh on one fresh host, where <packages> is exactly what base + firewall + node_exporter
   install (the implicit role "base");
2. floor, N hosts: the same on N fresh hosts at once (same NAT, mirror and CPUs as the converge);
3. the converge: ``citadel``'s pyinfra run (``python -m pyinfra -y --json INV.py deploy.py``) on
   N fresh hosts with ``roles: []`` (cold), then again (no-op, twice; it must change nothing),
   then a no-op with ``--no-wait``, a no-op limited to one host, and a ``--dry`` plan.

``--from-json bench/out/converge-<date>.json [--note LINE ...]`` re-renders the section only.

Each phase brings its hosts up and tears the lab down afterwards (``down`` leaves nothing: no
processes, mounts, bridge, nft table or veth; checked), in ``finally`` blocks, so a failure or an
interrupt never leaves a bench lab running. pyinfra's stderr is time-stamped line by line to split
each run into startup / connect / prepare (facts) / execute and to time each operation.

Nothing is pinned: pyinfra, ssh, apt and dpkg inside the hosts share the machine's cores with
whatever else runs; load averages and other running nspawn hosts are recorded with each phase.

Writes ``bench/out/converge-<date>.json`` (git-ignored) and the ``## Convergence`` section of
``bench/RESULTS.md`` (other sections kept). The generated inventories live in
``bench/inventories/`` (git-ignored: they name the bench lab's key path).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import ipaddress
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from citadel.lab import network as lab_network  # noqa: E402
from citadel.lab import ops as lab_ops  # noqa: E402
from citadel.lab import render as lab_render  # noqa: E402
from citadel.lab import system as lab_system  # noqa: E402
from citadel.lab.config import LabConfig, LabHost  # noqa: E402
from citadel.loader import load_cluster  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
OUT = ROOT / "bench" / "out"
INVENTORIES = ROOT / "bench" / "inventories"
SECTION = "## Convergence (bench/converge.py)"

# The bench lab: its own bridge, subnet, nft table, state dir and host names.
BRIDGE = "citadel-bench0"
GATEWAY = "10.210.12.1/24"
NFT_TABLE = "citadel_lab_bench"
STATE_DIR = Path("/var/lib/citadel/bench-lab")
HOST_PREFIX = "bn"
FLOOR_HOST = f"{HOST_PREFIX}-floor"
FIRST_OCTET = 11  # bn-01 -> .11
FLOOR_OCTET = 200

# What the bench must never touch (the main lab, the lab tests' lab, production).
FORBIDDEN_BRIDGES = ("citadel-lab0", "citadel-test0")
FORBIDDEN_STATE = (Path("/var/lib/citadel/lab"),)
FORBIDDEN_NETS = (
    ipaddress.IPv4Network("10.210.10.0/24"),
    ipaddress.IPv4Network("192.168.10.0/24"),
)

# Packages the firewall and node_exporter deploys install (deploys/firewall.py,
# deploys/node_exporter.py); base's own list comes from the model (Config.system_packages()).
ROLE_BASE_EXTRA_PACKAGES = ("nftables", "prometheus-node-exporter")

GOAL_NOOP_S = 10.0  # no-op re-converge of the 8-host lab
GOAL_NOOP_SIZE = 8
GOAL_COLD_RATIO = 1.5  # cold converge within 1.5x of the floor

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PHASE_MARKS = {
    "--> Loading config": "config",
    "--> Loading inventory": "inventory",
    "--> Connecting to hosts": "connect",
    "--> Preparing": "prepare",
    "--> Beginning operation run": "execute",
    "--> Results": "results",
}
OP_START = re.compile(r"Starting (?:[a-z ,]+ )?operation: (.*)$")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- machine


def machine_facts() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pyinfra": importlib.metadata.version("pyinfra"),
        "lab_os": "Debian 13 (trixie), systemd-nspawn, overlayfs over the cached base tree",
        "pinning": "none: pyinfra, ssh and the hosts' apt/dpkg share all cores with other work",
    }


def load_snapshot() -> dict[str, Any]:
    """Load averages and how many nspawn hosts run on the machine (ours and others')."""
    try:
        load = [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        load = []
    nspawn = 0
    for pid in lab_system.all_pids():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd-nspawn":
                nspawn += 1
    return {"loadavg": load, "nspawn_running": nspawn}


# ---------------------------------------------------------------------------------- the lab


def bench_config(args: argparse.Namespace) -> LabConfig:
    cfg = LabConfig(
        state_dir=Path(args.state_dir),
        bridge=args.bridge,
        gateway=args.gateway,
        nft_table=args.nft_table,
    )
    cfg.validate()
    if cfg.bridge in FORBIDDEN_BRIDGES:
        raise SystemExit(f"bench: bridge {cfg.bridge} belongs to another lab: refused")
    if any(cfg.state_dir.resolve() == p for p in FORBIDDEN_STATE):
        raise SystemExit(f"bench: state dir {cfg.state_dir} belongs to the main lab: refused")
    if cfg.nft_table in ("citadel_lab", "citadel"):
        raise SystemExit(f"bench: nft table {cfg.nft_table} belongs to another lab: refused")
    for net in FORBIDDEN_NETS:
        if cfg.network.overlaps(net):
            raise SystemExit(f"bench: subnet {cfg.network} overlaps {net}: refused")
    return cfg


def bench_hosts(cfg: LabConfig, n: int) -> list[LabHost]:
    base = int(cfg.network.network_address)
    return [
        LabHost(f"{HOST_PREFIX}-{i:02d}", str(ipaddress.IPv4Address(base + FIRST_OCTET + i - 1)))
        for i in range(1, n + 1)
    ]


def floor_host(cfg: LabConfig) -> LabHost:
    base = int(cfg.network.network_address)
    return LabHost(FLOOR_HOST, str(ipaddress.IPv4Address(base + FLOOR_OCTET)))


def leftovers(cfg: LabConfig) -> list[str]:
    """What a bench lab left on the machine after down (empty when nothing)."""
    left = []
    if lab_system.link(cfg.bridge) is not None:
        left.append(f"bridge {cfg.bridge}")
    if lab_network.table_owner(cfg) is not lab_network.Owner.ABSENT:
        left.append(f"nft table inet {cfg.nft_table}")
    left += [f"mount {m}" for m in lab_system.mounts_under(cfg.state_dir)]
    for name in lab_ops.known_host_names(cfg.paths()):
        if lab_ops.host_running(cfg.paths(), name) is not None:
            left.append(f"host {name} running")
        if lab_system.link(lab_render.veth_name(name)) is not None:
            left.append(f"veth of {name}")
    return left


def wipe_hosts(cfg: LabConfig) -> None:
    """Drop the host overlays (the next phase starts cold); refuses while anything is mounted."""
    paths = cfg.paths()
    if lab_system.mounts_under(paths.state_dir):
        raise RuntimeError(f"mounts remain under {paths.state_dir}; not removing host overlays")
    shutil.rmtree(paths.hosts_dir, ignore_errors=True)


@contextlib.contextmanager
def bench_lab(cfg: LabConfig, hosts: list[LabHost], record: dict[str, Any]) -> Iterator[None]:
    """Fresh hosts up; always down afterwards (and checked), overlays dropped."""
    lab_ops.down(cfg, log=log)
    wipe_hosts(cfg)
    record["load_before"] = load_snapshot()
    try:
        t0 = time.monotonic()
        lab_ops.up(hosts, cfg, log=log)
        record["lab_up_s"] = round(time.monotonic() - t0, 2)
        yield
    finally:
        record["load_after"] = load_snapshot()
        t0 = time.monotonic()
        try:
            lab_ops.down(cfg, log=log)
        finally:
            record["lab_down_s"] = round(time.monotonic() - t0, 2)
            record["left_after_down"] = leftovers(cfg)
            if record["left_after_down"]:
                log(f"WARNING: down left {record['left_after_down']}")
            else:
                wipe_hosts(cfg)


# ---------------------------------------------------------------------------------- inventory


def write_inventory(cfg: LabConfig, hosts: list[LabHost], n: int) -> Path:
    """bench/inventories/bench-N.yml + .py and a group_data/all.yml of its own."""
    INVENTORIES.mkdir(parents=True, exist_ok=True)
    (INVENTORIES / ".gitignore").write_text("# generated by bench/converge.py\n*\n")
    group_dir = INVENTORIES / "group_data"
    group_dir.mkdir(exist_ok=True)
    all_yml = yaml.safe_load((ROOT / "group_data" / "all.yml").read_text())
    all_yml.setdefault("firewall", {})["admin_networks"] = [str(cfg.network)]
    (group_dir / "all.yml").write_text(
        "# generated by bench/converge.py: the repository's group_data/all.yml, admin_networks =\n"
        "# the bench lab's subnet\n" + yaml.safe_dump(all_yml, sort_keys=False)
    )
    paths = cfg.paths()
    doc = {
        "cluster": {"name": "citadel-bench", "environment": "lab", "subnet": str(cfg.network)},
        "ssh": {
            "user": "root",
            "key_file": str(paths.ssh_key),
            "known_hosts_file": str(paths.known_hosts),
        },
        "group_data_dir": "group_data",
        "hosts": [{"name": h.name, "address": h.address, "roles": []} for h in hosts],
    }
    yml = INVENTORIES / f"bench-{n}.yml"
    yml.write_text(
        f"# generated by bench/converge.py: {n} bench lab hosts, base role only\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    yml.with_suffix(".py").write_text(
        '"""pyinfra inventory for the bench lab (generated by bench/converge.py)."""\n\n'
        "from pathlib import Path\n\n"
        "from citadel.pyinfra_inventory import pyinfra_inventory\n\n"
        "globals().update(pyinfra_inventory(Path(__file__).with_suffix('.yml')))\n"
    )
    return yml


def role_base_packages(inventory_yml: Path) -> list[str]:
    """What the base role installs on a host of this inventory (validates it, secrets too)."""
    loaded = load_cluster(inventory_yml, require_secrets=True)
    host = loaded.cluster.hosts[0]
    return list(dict.fromkeys([*host.base.system_packages(), *ROLE_BASE_EXTRA_PACKAGES]))


# ---------------------------------------------------------------------------------- the floor

FLOOR_SCRIPT = """set -e
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s.%N)
apt-get update -q > /tmp/bench-update.log 2>&1
t1=$(date +%s.%N)
apt-get install -y -q --no-install-recommends {packages} > /tmp/bench-install.log 2>&1
t2=$(date +%s.%N)
echo "update_s=$(python3 -c "print($t1-$t0)")"
echo "install_s=$(python3 -c "print($t2-$t1)")"
grep -h -E '^(Need to get|Fetched|[0-9]+ upgraded)' /tmp/bench-update.log /tmp/bench-install.log \
  | sed 's/^/apt: /'
"""


def apt_floor(cfg: LabConfig, hosts: list[LabHost], packages: list[str]) -> dict[str, Any]:
    """The same packages installed with apt directly on fresh hosts, all at once; timed."""
    paths = cfg.paths()
    script = FLOOR_SCRIPT.format(packages=" ".join(shlex.quote(p) for p in packages))
    t0 = time.monotonic()
    procs = {}
    for h in hosts:
        argv = lab_render.ssh_argv(paths.ssh_key, paths.known_hosts, h.address, [script], False)
        procs[h.name] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    per_host: dict[str, Any] = {}
    ok = True
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        elapsed = time.monotonic() - t0
        entry: dict[str, Any] = {"done_s": round(elapsed, 2), "rc": proc.returncode}
        for line in out.splitlines():
            if line.startswith(("update_s=", "install_s=")):
                key, _, value = line.partition("=")
                with contextlib.suppress(ValueError):
                    entry[key] = round(float(value), 2)
            elif line.startswith("apt: "):
                entry.setdefault("apt", []).append(line[5:])
        if proc.returncode != 0:
            ok = False
            entry["tail"] = out.strip().splitlines()[-5:]
        per_host[name] = entry
    wall = time.monotonic() - t0
    return {"wall_s": round(wall, 2), "ok": ok, "hosts": len(hosts), "per_host": per_host}


# ---------------------------------------------------------------------------------- pyinfra


def run_pyinfra(
    inventory_yml: Path, label: str, timeout: float, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One pyinfra run with --json; wall time, CPU time, phase split, per-operation times."""
    cmd = [
        sys.executable,
        "-m",
        "pyinfra",
        "-y",
        "--json",
        *extra,
        str(inventory_yml.with_suffix(".py")),
        "deploy.py",
    ]
    lines: list[tuple[float, str]] = []
    stdout: list[str] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    err_stream, out_stream = proc.stderr, proc.stdout

    def pump_err() -> None:
        for line in err_stream:
            lines.append((time.monotonic() - t0, ANSI.sub("", line.rstrip("\n"))))

    def pump_out() -> None:
        stdout.append(out_stream.read())

    threads = [threading.Thread(target=f, daemon=True) for f in (pump_err, pump_out)]
    for th in threads:
        th.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    wall = time.monotonic() - t0
    for th in threads:
        th.join(timeout=10)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"converge-{label}.log").write_text("".join(f"{t:8.2f}  {line}\n" for t, line in lines))
    result: dict[str, Any] = {
        "wall_s": round(wall, 2),
        "pyinfra_cpu_s": round(cpu, 2),
        "rc": proc.returncode,
        "timed_out": timed_out,
        **split_phases(lines, wall),
    }
    try:
        report = json.loads("".join(stdout))
    except json.JSONDecodeError:
        result["error"] = "no JSON report: " + " | ".join(ln for _, ln in lines[-3:])
        return result
    res = report.get("results") or {}
    changed: dict[str, list[str]] = {}
    for op in res.get("operations", []):
        for host in op.get("success", []):
            changed.setdefault(host, []).append(op["name"])
    result["failed_hosts"] = res.get("failed_hosts", [])
    result["totals"] = res.get("totals", {})
    result["operations"] = len(res.get("operations", []))
    result["changed_hosts"] = len(changed)
    result["changed_ops"] = sorted({name for names in changed.values() for name in names})
    return result


def split_phases(lines: list[tuple[float, str]], wall: float) -> dict[str, Any]:
    """From time-stamped stderr: seconds in each pyinfra stage and the slowest operations."""
    marks: dict[str, float] = {}
    ops: list[tuple[float, str]] = []
    for t, line in lines:
        for mark, phase in PHASE_MARKS.items():
            if line.startswith(mark) and phase not in marks:
                marks[phase] = t
        m = OP_START.search(line)
        if m and "execute" in marks and "results" not in marks:
            ops.append((t, m.group(1).strip()))
    phases: dict[str, float] = {}
    order = ["config", "inventory", "connect", "prepare", "execute", "results"]
    present = [p for p in order if p in marks]
    if present:
        phases["startup"] = marks[present[0]]
    for a, b in zip(present, [*present[1:], None], strict=True):
        end = marks[b] if b else wall
        phases[a] = end - marks[a]
    end_exec = marks.get("results", wall)
    timed_ops: dict[str, float] = {}
    ends = [t for t, _ in ops[1:]] + [end_exec]
    for (t, name), end in zip(ops, ends[: len(ops)], strict=True):
        timed_ops[name] = timed_ops.get(name, 0.0) + (end - t)
    slow = sorted(timed_ops.items(), key=lambda kv: -kv[1])[:6]
    return {
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "slowest_ops_s": [[name, round(s, 2)] for name, s in slow],
    }


# ---------------------------------------------------------------------------------- one size


def bench_size(args: argparse.Namespace, cfg: LabConfig, n: int, rec: dict[str, Any]) -> None:
    """Fills rec as it goes (a failure keeps what was measured before it)."""
    hosts = bench_hosts(cfg, n)
    inv = write_inventory(cfg, hosts, n)
    packages = role_base_packages(inv)
    rec["packages"] = packages
    log(f"size {n}: packages {' '.join(packages)}")

    if not args.no_floor:
        floor1: dict[str, Any] = {}
        rec["floor_1"] = floor1
        fh = floor_host(cfg)
        with bench_lab(cfg, [fh], floor1):
            floor1.update(apt_floor(cfg, [fh], packages))
        log(f"size {n}: floor on 1 host {floor1.get('wall_s')} s")

    if not args.no_parallel_floor and not args.no_floor:
        floor_n: dict[str, Any] = {}
        rec["floor_n"] = floor_n
        with bench_lab(cfg, hosts, floor_n):
            floor_n.update(apt_floor(cfg, hosts, packages))
        log(f"size {n}: floor on {n} hosts at once {floor_n.get('wall_s')} s")

    conv: dict[str, Any] = {}
    rec["converge"] = conv
    with bench_lab(cfg, hosts, conv):
        log(f"size {n}: cold converge")
        conv["cold"] = run_pyinfra(inv, f"{n}-cold", args.timeout)
        log(f"size {n}: cold {conv['cold']['wall_s']} s, {conv['cold'].get('changed_hosts')} hosts")
        if conv["cold"].get("failed_hosts") or conv["cold"].get("rc") != 0:
            log(f"size {n}: cold converge failed: {conv['cold'].get('failed_hosts')}")
        conv["noop"] = []
        for i in range(args.noop_runs):
            r = run_pyinfra(inv, f"{n}-noop{i + 1}", args.timeout)
            conv["noop"].append(r)
            log(f"size {n}: no-op {i + 1}: {r['wall_s']} s, changed {r.get('changed_ops')}")
        conv["noop_1host"] = run_pyinfra(
            inv, f"{n}-noop-limit1", args.timeout, ("--limit", hosts[0].name)
        )
        conv["noop_no_wait"] = run_pyinfra(inv, f"{n}-noop-nowait", args.timeout, ("--no-wait",))
        conv["dry"] = run_pyinfra(inv, f"{n}-dry", args.timeout, ("--dry",))


# ---------------------------------------------------------------------------------- report


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def noop_ok(r: dict[str, Any]) -> bool:
    return (
        r.get("rc") == 0
        and not r.get("failed_hosts")
        and not r.get("changed_ops")
        and "error" not in r
    )


def summarize(rec: dict[str, Any]) -> dict[str, Any]:
    conv = rec.get("converge", {})
    cold = conv.get("cold", {})
    noops = conv.get("noop", [])
    noop_times = [r["wall_s"] for r in noops]
    floor1 = rec.get("floor_1", {}).get("wall_s")
    floor_n = rec.get("floor_n", {}).get("wall_s")
    cold_s = cold.get("wall_s")
    cold_ok = cold.get("rc") == 0 and not cold.get("failed_hosts") and "error" not in cold
    return {
        "size": rec["size"],
        "lab_up_s": conv.get("lab_up_s"),
        "cold_s": cold_s,
        "cold_ok": cold_ok,
        "noop_s": min(noop_times) if noop_times else None,
        "noop_all_s": noop_times,
        "noop_ok": bool(noops) and all(noop_ok(r) for r in noops),
        "noop_changed": sorted({c for r in noops for c in r.get("changed_ops", [])}),
        "noop_1host_s": conv.get("noop_1host", {}).get("wall_s"),
        "dry_s": conv.get("dry", {}).get("wall_s"),
        "noop_no_wait_s": conv.get("noop_no_wait", {}).get("wall_s"),
        "floor_1_s": floor1,
        "floor_n_s": floor_n,
        "cold_over_floor_1": round(cold_s / floor1, 2) if cold_s and floor1 else None,
        "cold_over_floor_n": round(cold_s / floor_n, 2) if cold_s and floor_n else None,
        "load_cold": (conv.get("load_before") or {}).get("loadavg"),
        "nspawn_running": (conv.get("load_before") or {}).get("nspawn_running"),
        "left_after_down": sorted(
            {
                x
                for k in ("floor_1", "floor_n", "converge")
                for x in rec.get(k, {}).get("left_after_down", [])
            }
        ),
    }


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares y = a + b*x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def render_section(data: dict[str, Any]) -> str:
    m = data["machine"]
    rows = [summarize(r) for r in data["sizes"]]
    out = [
        SECTION,
        "",
        f"Run {m['date_utc']} on {m['cores']} cores ({m['cpu_model']}), {m['mem_gib']} GiB, "
        f"kernel {m['kernel']}, Python {m['python']}, pyinfra {m['pyinfra']}. Lab hosts: "
        f"{m['lab_os']}; packages from deb.debian.org through the bench lab's NAT (no local "
        f"mirror or cache). Pinning: {m['pinning']}. The machine is shared: the table gives "
        "the 1-minute load average when the converge's lab was started (it includes the tail "
        "of this bench's N-host floor run just before) and the nspawn hosts of other labs "
        "running then.",
        "",
        "Each size: fresh host overlays (cold), `python -m pyinfra -y --json "
        "bench/inventories/bench-N.py deploy.py`, hosts with `roles: []` (base + firewall + "
        "node_exporter). Floor: the same packages with `apt-get update && apt-get install -y "
        "--no-install-recommends ...` over ssh on fresh hosts (one host; and N hosts at once). "
        f"Packages: `{' '.join(data['sizes'][0]['packages']) if data['sizes'] else ''}`.",
        "",
        "| hosts | lab up (s) | cold converge (s) | no-op (s, min of "
        f"{data['args']['noop_runs']}) | no-op `--no-wait` (s) | no-op, 1 host limited (s) "
        "| plan only, `--dry` (s) | floor 1 host (s) "
        "| floor N at once (s) | cold / floor 1 | cold / floor N | no-op changed nothing "
        "| load at lab start (1 min) / other nspawn hosts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        la = r["load_cold"] or []
        nsp = "-" if r["nspawn_running"] is None else r["nspawn_running"]
        noop_all = " / ".join(_f(x) for x in r["noop_all_s"])
        out.append(
            f"| {r['size']} | {_f(r['lab_up_s'])} | {_f(r['cold_s'])}"
            f"{'' if r['cold_ok'] else ' (FAILED)'} | {_f(r['noop_s'])} ({noop_all}) "
            f"| {_f(r['noop_no_wait_s'])} | {_f(r['noop_1host_s'])} | {_f(r['dry_s'])} "
            f"| {_f(r['floor_1_s'])} | {_f(r['floor_n_s'])} "
            f"| {_f(r['cold_over_floor_1'], 2)} | {_f(r['cold_over_floor_n'], 2)} "
            f"| {'yes' if r['noop_ok'] else 'NO: ' + ', '.join(r['noop_changed'])} "
            f"| {_f(la[0] if la else None, 2)} / {nsp} |"
        )
    out.append("")

    # Goals.
    goal_rows = [r for r in rows if r["size"] == GOAL_NOOP_SIZE]
    if goal_rows and goal_rows[0]["noop_s"] is not None:
        g = goal_rows[0]
        met = g["noop_s"] < GOAL_NOOP_S and g["noop_ok"]
        out.append(
            f"Goal: no-op re-converge of the {GOAL_NOOP_SIZE}-host lab under {GOAL_NOOP_S:.0f} s: "
            f"**{_f(g['noop_s'])} s, {'met' if met else 'NOT met'}**."
        )
    else:
        out.append(f"Goal: no-op of the {GOAL_NOOP_SIZE}-host lab: not measured in this run.")
    ratios = [
        (r["size"], r["cold_over_floor_1"], r["cold_over_floor_n"])
        for r in rows
        if r["cold_over_floor_1"] is not None
    ]
    if ratios:
        parts = []
        for size, r1, rn in ratios:
            verdict = "met" if r1 <= GOAL_COLD_RATIO else "NOT met"
            parts.append(f"{size} hosts {r1:.2f}x ({verdict}; {_f(rn, 2)}x of N at once)")
        out.append(
            f"Goal: cold converge within {GOAL_COLD_RATIO}x of the floor (one host, apt "
            f"directly): {'; '.join(parts)}."
        )
    out.append("")

    # Growth with host count.
    for key, label in (
        ("cold_s", "cold converge"),
        ("floor_n_s", "floor, N hosts at once"),
        ("noop_s", "no-op re-converge"),
    ):
        pts = [(float(r["size"]), float(r[key])) for r in rows if r[key] is not None]
        fit = fit_line(pts)
        if fit:
            out.append(
                f"Growth, {label}: about {fit[0]:.1f} s + {fit[1]:.2f} s per host "
                f"(least squares over {len(pts)} sizes)."
            )
    out.append("")

    # Where the time goes.
    out += [
        "### Where the time goes (pyinfra stages from its time-stamped output, seconds)",
        "",
        "| hosts | run | startup (imports) | inventory (validate) | connect | prepare (facts, "
        "op generation) | execute | pyinfra CPU (s) | slowest operations (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rec in data["sizes"]:
        conv = rec.get("converge", {})
        runs = [("cold", conv.get("cold"))]
        if conv.get("noop"):
            runs.append(("no-op", conv["noop"][0]))
        runs.append(("dry", conv.get("dry")))
        for label, run in runs:
            if not run:
                continue
            ph = run.get("phases_s", {})
            inv_s = (ph.get("config") or 0) + (ph.get("inventory") or 0)
            slow = "; ".join(
                f"{n.replace('|', '/')} {s:.1f}" for n, s in run.get("slowest_ops_s", [])[:3]
            )
            out.append(
                f"| {rec['size']} | {label} | {_f(ph.get('startup'))} | {_f(inv_s)} "
                f"| {_f(ph.get('connect'))} | {_f(ph.get('prepare'))} | {_f(ph.get('execute'))} "
                f"| {_f(run.get('pyinfra_cpu_s'))} | {slow} |"
            )
    out.append("")
    floor_lines = []
    for rec in data["sizes"]:
        for key, label in (("floor_1", "1 host"), ("floor_n", f"{rec['size']} hosts at once")):
            fl = rec.get(key)
            if not fl or not fl.get("per_host"):
                continue
            ups = [h.get("update_s") for h in fl["per_host"].values() if h.get("update_s")]
            ins = [h.get("install_s") for h in fl["per_host"].values() if h.get("install_s")]
            apt = next(iter(fl["per_host"].values())).get("apt", [])
            need = next((a for a in apt if a.startswith("Need to get")), "")
            floor_lines.append(
                f"- floor, {label} (size {rec['size']}): apt-get update "
                f"{_f(max(ups) if ups else None)} s, install {_f(max(ins) if ins else None)} s "
                f"(slowest host); {need.rstrip('.')}"
                + ("" if fl.get("ok") else " — FAILED on some host")
            )
    out += floor_lines
    if data.get("notes"):
        out += ["", *data["notes"]]
    out += ["", f"Raw data: `bench/out/converge-{data['stamp']}.json` (git-ignored)."]
    return "\n".join(out).rstrip() + "\n"


def write_results(path: Path, section: str) -> None:
    """Replace only our section (re-read right before writing; other sections kept)."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pat = re.compile(r"^## Convergence \(bench/converge\.py\)\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(old):
        new = pat.sub(lambda _m: section + "\n", old, count=1)
    else:
        new = old.rstrip() + "\n\n" + section
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new.rstrip() + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sizes", default="4,8,16,24", help="comma-separated host counts")
    ap.add_argument("--out", default=str(RESULTS), help="the results file (markdown)")
    ap.add_argument("--noop-runs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1200, help="per pyinfra run, seconds")
    ap.add_argument("--no-floor", action="store_true", help="skip both apt floors")
    ap.add_argument("--no-parallel-floor", action="store_true", help="skip the N-host apt floor")
    ap.add_argument("--bridge", default=BRIDGE)
    ap.add_argument("--gateway", default=GATEWAY, help="bridge address with prefix")
    ap.add_argument("--nft-table", default=NFT_TABLE)
    ap.add_argument("--state-dir", default=str(STATE_DIR))
    ap.add_argument("--note", action="append", default=[], help="a line added to the section")
    ap.add_argument("--json-only", action="store_true", help="do not touch the results file")
    ap.add_argument(
        "--from-json", metavar="PATH", help="only re-render the section from an earlier run's JSON"
    )
    args = ap.parse_args(argv)
    if args.from_json:
        old: dict[str, Any] = json.loads(Path(args.from_json).read_text())
        if args.note:
            old["notes"] = list(args.note)
        old["sizes"] = [r for r in old["sizes"] if "converge" in r]
        write_results(Path(args.out), render_section(old))
        return 0
    if os.geteuid() != 0:
        print("bench: must run as root (the lab boots containers)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(n < 1 or n > 150 for n in sizes):
        print("bench: sizes must be between 1 and 150", file=sys.stderr)
        return 2
    cfg = bench_config(args)

    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    data: dict[str, Any] = {
        "stamp": stamp,
        "machine": machine_facts(),
        "args": vars(args),
        "lab": {
            "bridge": cfg.bridge,
            "gateway": cfg.gateway,
            "nft_table": cfg.nft_table,
            "state_dir": str(cfg.state_dir),
        },
        "sizes": [],
        "notes": list(args.note),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    json_path = OUT / f"converge-{stamp}.json"
    rc = 0
    try:
        for n in sizes:
            t0 = time.monotonic()
            rec: dict[str, Any] = {"size": n, "packages": []}
            try:
                bench_size(args, cfg, n, rec)
            except Exception as exc:  # one size failing must not lose the others
                log(f"size {n}: FAILED: {type(exc).__name__}: {exc}")
                rec["error"] = f"{type(exc).__name__}: {exc}"
                rc = 1
            rec["size_total_s"] = round(time.monotonic() - t0, 1)
            data["sizes"].append(rec)
            json_path.write_text(json.dumps(data, indent=2) + "\n")
            log(f"size {n}: done in {rec['size_total_s']} s -> {json_path}")
    finally:
        with contextlib.suppress(Exception):
            lab_ops.down(cfg, log=log)
        left = leftovers(cfg)
        data["left_at_end"] = left
        if left:
            log(f"WARNING: the bench lab left {left}")
            rc = 1
        else:
            shutil.rmtree(cfg.state_dir, ignore_errors=True)  # keys and overlays: nothing kept
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    ok_sizes = [r for r in data["sizes"] if "converge" in r]
    if ok_sizes and not args.json_only:
        data["sizes"] = ok_sizes
        write_results(Path(args.out), render_section(data))
        log(f"results -> {args.out}")
    for r in ok_sizes:
        s = summarize(r)
        print(json.dumps({k: s[k] for k in ("size", "cold_s", "noop_s", "floor_1_s", "floor_n_s")}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
