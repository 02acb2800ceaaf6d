"""`citadel verify`: testinfra (tests/verify) against every host, JUnit XML and a summary table."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PARAM = re.compile(r"\[([^\]]+)\]$")
# How tests/verify/conftest.py words a skip it turned into a failure (tests/verify/declared.py).
UNDECLARED_SKIP = "undeclared skip"


@dataclass
class Cell:
    """One component on one host: how its checks ended. Only a skip the inventory declares is a
    skip; any other is a failure (tests/verify/conftest.py), listed with its reason."""

    passed: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)

    @property
    def status(self) -> str:
        if self.failed:
            return "FAILED"
        if self.passed:
            return "verified"
        return "skipped: " + "; ".join(sorted(self.skipped)) if self.skipped else "no checks"


def run_verify(inventory: str, junit: Path, extra: list[str] | None = None) -> int:
    junit.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "tests/verify",
        "--inventory",
        inventory,
        f"--junitxml={junit}",
        "-q",
        "-rfs",
        "-p",
        "no:cacheprovider",
        *(extra or []),
    ]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def _host_of(test_id: str, hosts: list[str]) -> str:
    """`monitoring-ai_inference_duration_seconds` -> `monitoring` (tests parametrised further)."""
    matches = [h for h in hosts if test_id == h or test_id.startswith(h + "-")]
    return max(matches, key=len) if matches else test_id


def summarize(junit: Path, hosts: list[str] | None = None) -> dict[tuple[str, str], Cell]:
    """(component, host) -> Cell, from pytest's JUnit XML."""
    cells: dict[tuple[str, str], Cell] = {}
    root = ET.parse(junit).getroot()
    for case in root.iter("testcase"):
        component = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_")
        m = _PARAM.search(case.get("name", ""))
        host = _host_of(m.group(1), hosts or []) if m else "-"
        cell = cells.setdefault((component, host), Cell())
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            name = case.get("name", "?")
            message = failure.get("message") or ""
            # tests/verify/conftest.py fails a skip the inventory does not declare
            if UNDECLARED_SKIP in message:
                detail = message[message.index(UNDECLARED_SKIP) :].rstrip('"')
                name += f" [{detail}]"
            cell.failed.append(name)
        elif skipped is not None:
            reason = skipped.get("message") or ""
            for prefix in ("Skipped: ", "DeclaredSkip: "):
                reason = reason.removeprefix(prefix)
            cell.skipped.add(reason)
        else:
            cell.passed += 1
    return cells


def format_summary(cells: dict[tuple[str, str], Cell]) -> str:
    rows = sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    width_h = max([len(h) for (_, h), _ in rows] + [4])
    width_c = max([len(c) for (c, _), _ in rows] + [9])
    lines = [f"{'host':<{width_h}}  {'component':<{width_c}}  result"]
    for (component, host), cell in rows:
        extra = f" ({', '.join(cell.failed)})" if cell.failed else ""
        lines.append(f"{host:<{width_h}}  {component:<{width_c}}  {cell.status}{extra}")
    return "\n".join(lines)
