"""`citadel verify`'s second half: the API document's examples against the converged cluster.

tests/acceptance sends what the document sends (its SDK classes, curl examples, queries) and ends
with a table, document section -> passed / failed / skipped(reason); JUnit XML beside verify's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def acceptance_junit(verify_junit: Path) -> Path:
    """reports/verify.xml -> reports/acceptance.xml"""
    return verify_junit.with_name("acceptance.xml")


def run_acceptance(inventory: str, junit: Path) -> int:
    junit.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        *(sys.executable, "-m", "pytest", "tests/acceptance", "--inventory", inventory),
        *(f"--junitxml={junit}", "-q", "-rfs", "-p", "no:cacheprovider"),
    ]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode
