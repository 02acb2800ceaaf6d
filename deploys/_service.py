"""Service helpers for deploys: restart on a changed input, wait for a (re)started one to answer."""

from __future__ import annotations

from collections.abc import Sequence

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed


def ready_check(service: str, url: str, expect: str | None, timeout_s: int) -> str:
    """One shell command: poll ``url`` (bounded) until it answers 2xx (and its body contains
    ``expect``, when given).

    Gives up early when the unit has crashed and been restarted three more times (a broken install
    fails in seconds, not after the whole timeout), printing the unit's last log lines.
    """
    restarts = f"systemctl show -p NRestarts --value {service}"
    probe = f"curl -sf --max-time 2 {url}"
    probe += f" | grep -qF '{expect}'" if expect else " -o /dev/null"
    return (
        f"n0=$({restarts}); "
        f"for i in $(seq 1 {timeout_s}); do "
        f"{probe} && exit 0; "
        f'[ "$({restarts})" -ge $((n0 + 3)) ] 2>/dev/null && break; '
        "sleep 1; done; "
        f"echo '{service}: {url} not ready within {timeout_s}s' >&2; "
        f"journalctl -u {service} -n 30 --no-pager >&2; exit 1"
    )


def restart_on_change(service: str, changed: Sequence[OperationMeta]) -> None:
    """Restart `service` when one of the files it reads changed; keep it running and enabled."""
    systemd.service(
        name=f"Restart {service} (config changed)",
        service=service,
        restarted=True,
        _if=any_changed(*changed),
    )
    systemd.service(name=f"Run {service}", service=service, running=True, enabled=True)


def system_account(user: str, home: str, dirs: Sequence[str] = (), mode: str = "0755") -> None:
    """A no-login system user and group for a service, and the directories it owns."""
    server.group(name=f"Group {user}", group=user, system=True)
    server.user(
        name=f"User {user}",
        user=user,
        group=user,
        system=True,
        home=home,
        shell="/usr/sbin/nologin",
        create_home=False,
    )
    for path in dirs:
        files.directory(name=f"Directory {path}", path=path, user=user, group=user, mode=mode)
