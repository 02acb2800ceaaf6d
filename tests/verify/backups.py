"""What the verify modules of components that back up check the same way (citadel.model.backup):
the timer enabled and running, the service sandboxed, its last run (the first converge's, or the
timer's) a success with no secret in its settings, and the freshness of the last backup and its
metric."""

from __future__ import annotations

import time

from citadel.model.backup import LAST_SUCCESS, METRIC, BackupSettings, Unit
from tests.verify.test_gateway import MAX_EXPOSURE, exposure


def assert_timer_and_last_run(target, unit: Unit, secret: str) -> None:
    timer = target.infra.service(f"{unit.name}.timer")
    assert timer.is_enabled and timer.is_running
    report = target.infra.check_output(
        f"LC_ALL=C systemd-analyze security --no-pager {unit.name}.service"
    )
    assert exposure(report) <= MAX_EXPOSURE, report
    show = target.infra.check_output(
        f"systemctl show -p Result -p ExecMainStatus -p Environment {unit.name}.service"
    )
    assert "Result=success" in show and "ExecMainStatus=0" in show, show
    assert target.secret(secret) not in show


def assert_fresh(target, settings: BackupSettings, metric_file: str) -> int:
    """The last success is younger than stale_after_hours and the metric says it; returns it."""
    last = int(target.infra.file(f"{settings.target}/{LAST_SUCCESS}").content_string)
    assert time.time() - last < settings.stale_after_hours * 3600, f"last backup at {last}"
    textfile = target.host.node_exporter.textfile_directory
    metric = target.infra.file(f"{textfile}/{metric_file}").content_string
    assert f'{METRIC}{{kind="{settings.KIND}"}} {last}' in metric, metric
    return last
