"""Every malformed inventory gets exact `FILE: field.path: problem` lines, exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citadel.cli import main

CASES = sorted(Path("tests/unit/inventories").glob("bad_*.yml"))


def expected_lines(case: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").rstrip("\n")
        for line in case.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_malformed_inventory_reports_file_path_and_problem(case: Path, capsys) -> None:
    rc = main(["validate", "-i", str(case)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.splitlines() == expected_lines(case)
    assert "Traceback" not in out + err


def test_the_valid_base_case_passes(capsys) -> None:
    assert main(["validate", "-i", "tests/unit/inventories/good.yml"]) == 0


def test_unreadable_inventory_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citadel.cli", "validate", "-i", "inventory/does-not-exist.yml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr == "inventory/does-not-exist.yml: cannot read: No such file or directory\n"


def test_directory_as_inventory_is_one_line(capsys) -> None:
    assert main(["validate", "-i", "inventory"]) == 2
    assert capsys.readouterr().err == "inventory: is a directory, not a YAML file\n"


@pytest.mark.parametrize("case", CASES[:3], ids=[c.stem for c in CASES[:3]])
def test_real_process_prints_no_traceback(case: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citadel.cli", "validate", "-i", str(case)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == expected_lines(case)
