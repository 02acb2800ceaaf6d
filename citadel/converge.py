"""plan / apply over pyinfra: run it, read its JSON, and report per host for people and machines.

pyinfra's `--dry` exits 0 even with changes pending; `plan` turns its JSON plan into terraform's
`-detailed-exitcode` convention (0 no change, 2 changes pending, 1 error).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from citadel.errors import CitadelError
from citadel.model.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
EXIT_NO_CHANGE, EXIT_CHANGES = 0, 2
# Operations that keep package lists fresh are housekeeping, not drift.
HOUSEKEEPING = ("Refresh apt package lists",)
SHELL_MARK = "server.shell"


@dataclass
class HostPlan:
    host: str
    changes: list[str] = field(default_factory=list)
    conditional: list[str] = field(default_factory=list)  # run only if an earlier op changes
    shell: list[str] = field(default_factory=list)  # shell-only operations (always "change")


@dataclass
class HostResult:
    host: str
    changed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unchanged: int = 0


def pyinfra_inventory_file(inventory_yml: str | Path) -> Path:
    """inventory/lab.yml -> inventory/lab.py (the pyinfra inventory file beside the YAML)."""
    py = Path(inventory_yml).with_suffix(".py")
    if not py.exists():
        raise CitadelError(f"{py}: no pyinfra inventory file beside {inventory_yml}")
    return py


def refuse_production_from_here(cluster: Cluster) -> None:
    """Connecting commands run against production only when CITADEL_ALLOW_PRODUCTION=1 is set."""
    if (
        cluster.cluster.environment == "production"
        and os.environ.get("CITADEL_ALLOW_PRODUCTION") != "1"
    ):
        raise CitadelError(
            "refusing to connect to production hosts: set CITADEL_ALLOW_PRODUCTION=1 on the "
            "machine that is allowed to (a CI runner inside the production network)"
        )


def run_pyinfra(
    inventory_yml: str | Path,
    *,
    dry: bool,
    limit: list[str] | None = None,
    exclude: list[str] | None = None,
    fail_percent: int | None = None,
    stream: bool = True,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run pyinfra with --json; stream its progress (stderr) and return its JSON (stdout).

    ``timeout`` (seconds) bounds the run: a hung converge is an error naming the bound.
    """
    # A dry run must not pass -y: with it pyinfra skips change detection and plans nothing.
    cmd = [sys.executable, "-m", "pyinfra", "--json", "--dry" if dry else "-y"]
    for pattern in limit or []:
        cmd += ["--limit", pattern]
    for pattern in exclude or []:
        cmd += ["--exclude", pattern]
    if fail_percent is not None:
        cmd += ["--fail-percent", str(fail_percent)]
    cmd += [str(pyinfra_inventory_file(inventory_yml)), "deploy.py"]
    returncode, stdout, stderr = _run(cmd, stream=stream, timeout=timeout)
    # pyinfra's JSON is the last thing on stdout; anything a remote command printed before it
    # (rare, but seen) is not part of the report.
    start = stdout.rfind('{"plan":')
    try:
        return dict(json.loads(stdout[start if start >= 0 else 0 :]))
    except json.JSONDecodeError:
        pass
    # No report: pyinfra stopped before running anything. An error it reports as one line (e.g.
    # deploys.Undeployable: a component that cannot be deployed) is the whole story.
    errors = [m.group("message") for m in map(PYINFRA_ERROR.search, stderr) if m]
    if errors:
        raise CitadelError(errors[-1])
    keep = ROOT / "reports" / "pyinfra-stdout.txt"
    keep.parent.mkdir(exist_ok=True)
    keep.write_text(stdout)
    detail = [line.strip() for line in stderr if line.strip()][-3:] if not stream else []
    raise CitadelError(
        f"pyinfra exited {returncode} without a JSON report"
        + (": " + " | ".join(detail) if detail else " (see its output above)")
        + f"; its stdout is in {keep}"
    )


# How pyinfra's CLI prints a PyinfraError raised by deploy code (pyinfra_cli.exceptions
# WrappedError): `--> pyinfra error in FILE line N: MESSAGE`, colourless when piped.
PYINFRA_ERROR = re.compile(r"--> pyinfra error(?: in \S.*? line \d+)?: (?P<message>.+?)\s*$")


def _run(cmd: list[str], *, stream: bool, timeout: float | None) -> tuple[int, str, list[str]]:
    """Run pyinfra: stdout collected, stderr collected and (stream) passed on as it comes,
    except pyinfra's own error line, which the caller reports once."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out: list[str] = []
    err: list[str] = []

    def read_stdout() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.read())

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if stream and not PYINFRA_ERROR.search(line):
                sys.stderr.write(line)
                sys.stderr.flush()

    readers = [threading.Thread(target=f, daemon=True) for f in (read_stdout, read_stderr)]
    for reader in readers:
        reader.start()
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise CitadelError(f"pyinfra did not finish within {timeout:.0f} s; stopped it") from None
    finally:
        for reader in readers:
            reader.join(timeout=5)
    return returncode, "".join(out), err


def plan_by_host(report: dict[str, Any]) -> dict[str, HostPlan]:
    plans: dict[str, HostPlan] = {}
    for op in report.get("plan", []):
        name = op["name"]
        if name in HOUSEKEEPING:
            continue
        is_shell = any(SHELL_MARK in n for n in op.get("names", [])) or name.startswith("Shell")
        for host in op.get("hosts_with_change", []):
            p = plans.setdefault(host, HostPlan(host))
            (p.shell if is_shell else p.changes).append(name)
        for host in op.get("hosts_with_conditional_change", []):
            plans.setdefault(host, HostPlan(host)).conditional.append(name)
    return plans


def results_by_host(report: dict[str, Any]) -> dict[str, HostResult]:
    out: dict[str, HostResult] = {}
    results = report.get("results") or {}
    for op in results.get("operations", []):
        for host in op.get("success", []):
            out.setdefault(host, HostResult(host)).changed.append(op["name"])
        for host in op.get("error", []):
            out.setdefault(host, HostResult(host)).failed.append(op["name"])
        for host in op.get("no_change", []):
            out.setdefault(host, HostResult(host)).unchanged += 1
    for host in results.get("failed_hosts", []):
        out.setdefault(host, HostResult(host))
        if not out[host].failed:
            out[host].failed.append("(host failed: unreachable or an operation errored)")
    return out


def plan_exit_code(plans: dict[str, HostPlan]) -> int:
    return EXIT_CHANGES if any(p.changes or p.shell for p in plans.values()) else EXIT_NO_CHANGE


def format_plan(plans: dict[str, HostPlan], hosts: list[str]) -> str:
    lines = []
    for host in hosts:
        p = plans.get(host)
        if p is None or not (p.changes or p.shell):
            lines.append(f"{host}: no changes")
            continue
        lines.append(f"{host}: {len(p.changes) + len(p.shell)} change(s)")
        lines += [f"  ~ {c}" for c in p.changes]
        lines += [f"  ~ {c}   [shell: always runs]" for c in p.shell]
        # Follow-ups (restarts, reloads, checks) of the components that change; pyinfra can
        # only say they are conditional, so those of unchanged components are left out.
        changed_components = {_component(c) for c in p.changes + p.shell}
        lines += [
            f"  ? {c}   [if its input changed]"
            for c in p.conditional
            if _component(c) in changed_components
        ]
    return "\n".join(lines)


def _component(op_name: str) -> str:
    """`redis: activate | Restart redis-server` -> `redis`."""
    return op_name.split(":", 1)[0] if ":" in op_name else ""


def format_results(results: dict[str, HostResult], hosts: list[str], seconds: float) -> str:
    width = max((len(h) for h in hosts), default=4)
    lines = [f"{'host':<{width}}  changed  failed  unchanged"]
    for host in hosts:
        r = results.get(host, HostResult(host))
        lines.append(f"{host:<{width}}  {len(r.changed):>7}  {len(r.failed):>6}  {r.unchanged:>9}")
        lines += [f"{'':<{width}}    failed: {f}" for f in r.failed]
    lines.append(f"took {seconds:.1f}s")
    return "\n".join(lines)


def write_report(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def report_payload(results: dict[str, HostResult], seconds: float) -> dict[str, Any]:
    return {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 2),
        "hosts": {h: asdict(r) for h, r in sorted(results.items())},
    }
