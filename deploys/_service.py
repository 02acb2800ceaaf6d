"""Helpers for the model-serving deploys: waiting for a (re)started service to answer."""

from __future__ import annotations


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
