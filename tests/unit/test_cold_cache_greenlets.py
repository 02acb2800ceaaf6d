"""A cold cache under pyinfra's parallel host loading: two hosts need one uncached wheel.

pyinfra loads every host's deploy code in gevent greenlets of one process. A run once hung
forever on a cold cache: one host held the wheel cache's ``flock`` and yielded while ``pip wheel``
ran, the next host blocked the whole process in ``flock``, so the holder never resumed. These
tests run the real thing (gevent's monkey patching as pyinfra applies it, a real ``pip wheel``)
in a child process bounded by a timeout, so a regression is a failure, not a hang.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TIMEOUT_S = 240

PROJECT_TOML = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "citadel-cold-probe"
version = "0.1.0"
requires-python = ">=3.9"

[tool.setuptools.packages.find]
include = ["citadel_cold_probe*"]
"""

# What pyinfra does: patch everything first, then run each host's code in its own greenlet.
CHILD = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import sys
    from pathlib import Path

    import gevent

    from citadel import wheels

    cache, project, hosts = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    greenlets = [
        gevent.spawn(wheels.ensure_project_wheel, project, cache=cache) for _ in range(hosts)
    ]
    gevent.joinall(greenlets, raise_error=True)
    print(sorted({g.value.name for g in greenlets}))
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "probe"
    (root / "citadel_cold_probe").mkdir(parents=True)
    (root / "citadel_cold_probe" / "__init__.py").write_text('"""probe"""\n')
    (root / "pyproject.toml").write_text(PROJECT_TOML)
    return root


def run_hosts(tmp_path: Path, project: Path, hosts: int) -> subprocess.CompletedProcess[str]:
    cache = tmp_path / "cache"  # empty: nothing built yet
    try:
        return subprocess.run(
            [sys.executable, "-c", CHILD, str(cache), str(project), str(hosts)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{hosts} greenlets needing one uncached wheel hung for {TIMEOUT_S} s")


def test_two_hosts_needing_the_same_uncached_wheel_both_finish(
    tmp_path: Path, project: Path
) -> None:
    proc = run_hosts(tmp_path, project, hosts=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # built once, the same wheel handed to both
    assert proc.stdout.strip().splitlines()[-1] == "['citadel_cold_probe-0.1.0-py3-none-any.whl']"
    assert len(list((tmp_path / "cache" / "wheels").glob("*.whl"))) == 1


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from citadel import wheels

    with wheels.file_lock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def test_two_runs_on_one_machine_still_wait_for_each_other(tmp_path: Path) -> None:
    """The cross-process flock stays: a second run waits until the first one lets go."""
    import time

    directory = tmp_path / "wheels"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with wheels_lock(directory):
            waited = time.monotonic() - t0
        assert waited >= 1.0, f"took the lock after {waited:.2f} s while another run held it"
    finally:
        holder.wait(timeout=30)


def wheels_lock(directory: Path):  # imported late: the module under test, in this process
    from citadel import wheels

    return wheels.file_lock(directory)
