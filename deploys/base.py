"""Base: every host, first. Packages, admin users + keys, sshd, time sync, journald, sysctl,
timezone, unattended security upgrades (NVIDIA driver packages held).

Every file goes through put_files (stage -> validate -> install): the sshd drop-in is checked with
`sshd -t` in the context of the live config, sudoers with `visudo -c`, apt snippets with apt-config.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Command
from pyinfra.operations import apt, server, systemd
from pyinfra.operations.util import any_changed

from citadel.components.base import (
    CHRONY_DROPIN,
    CHRONY_SOURCES,
    JOURNALD_DROPIN,
    SSHD_DROPIN,
    SYSCTL_FILE,
    TIMESYNCD_DROPIN,
    Config,
)
from deploys import firewall, node_exporter
from deploys._context import DeployContext
from deploys._deploy import deploy
from deploys._files import put_files

# Apply sysctl settings; in a container some keys are read-only (e.g. vm.*, fs.* under nspawn):
# there the failure is reported on stderr and tolerated, anywhere else it fails the converge.
SYSCTL_APPLY = (
    f"if ! out=$(sysctl -e -p {SYSCTL_FILE} 2>&1); then "
    "if systemd-detect-virt --container --quiet; then "
    'echo "$out" | grep -v " = " >&2; '
    "echo 'citadel: keys read-only in this container were left as the host has them' >&2; "
    'else echo "$out" >&2; exit 1; fi; fi'
)


# The other components every host has install in the base packages' apt transaction: dpkg and
# its triggers (man-db, systemd) run once per host instead of three times (bench/RESULTS.md).
BASE_ROLE_PACKAGES = {"firewall": firewall.PACKAGES, "node_exporter": node_exporter.PACKAGES}


def base_role_packages(ctx: DeployContext) -> list[str]:
    """The packages of this host's base-role components that converge (skipped ones not)."""
    return [
        package
        for section, _ in ctx.host.components()
        for package in BASE_ROLE_PACKAGES.get(section, [])
    ]


@deploy("base: install")
def install(ctx: DeployContext, cfg: Config) -> None:
    # The one package-list refresh of a converge (hourly at most): `citadel plan` counts it as
    # housekeeping, not drift, so components install without refreshing lists themselves.
    apt.update(name="Refresh apt package lists", cache_time=3600)
    apt.packages(
        name="Install base packages",
        packages=[*cfg.system_packages(), *base_role_packages(ctx)],
        no_recommends=True,
    )
    if cfg.time_sync == "chrony":
        apt.packages(
            name="Remove systemd-timesyncd (chrony keeps time)",
            packages=["systemd-timesyncd"],
            present=False,
        )
    for user in cfg.admin_users:
        server.user(
            name=f"Admin user {user.name}",
            user=user.name,
            shell="/bin/bash",
            create_home=True,
        )
        if user.ssh_keys:
            server.user_authorized_keys(
                name=f"SSH keys of {user.name} (exactly the inventory's)",
                user=user.name,
                public_keys=user.ssh_keys,
                delete_keys=True,
            )
        else:
            # Never empty an authorized_keys file: it may hold the key this converge runs with.
            logger.info(
                f"[{ctx.host.name}] base: {user.name} has no ssh_keys in the inventory; "
                "its authorized_keys are left as they are"
            )
    # pyinfra's Timezone fact resolves /etc/localtime fully (UTC -> Etc/UTC on Debian 13), which
    # would set the zone again on every run: compare resolved paths instead.
    zone = f"/usr/share/zoneinfo/{cfg.timezone}"
    resolved = f'[ "$(readlink -f /etc/localtime)" = "$(readlink -f {zone})" ]'
    same = host.get_fact(Command, command=f"{resolved} && echo same || true")
    if (same or "").strip() != "same":
        server.timezone(name=f"Timezone {cfg.timezone}", timezone=cfg.timezone)


@deploy("base: configure")
def configure(ctx: DeployContext, cfg: Config) -> list[OperationMeta]:
    return put_files(ctx.files("base"))


@deploy("base: activate")
def activate(ctx: DeployContext, cfg: Config, changed: list[OperationMeta]) -> None:
    by_dest = {op_dest: op for op_dest, op in zip(_dests(ctx), changed, strict=True)}
    sshd = by_dest[SSHD_DROPIN]
    systemd.service(
        name="Reload sshd (drop-in changed, checked with sshd -t)",
        service="ssh",
        reloaded=True,
        _if=sshd.did_change,
    )
    systemd.service(name="Run sshd", service="ssh", running=True, enabled=True)

    journald = by_dest[JOURNALD_DROPIN]
    systemd.service(
        name="Restart journald (limits changed)",
        service="systemd-journald",
        restarted=True,
        _if=journald.did_change,
    )

    server.shell(
        name="Apply sysctl settings (read-only keys tolerated in a container)",
        commands=[SYSCTL_APPLY],
        _if=by_dest[SYSCTL_FILE].did_change,
    )

    service = cfg.time_sync_service()
    if cfg.time_sync == "chrony":
        dropin = by_dest[CHRONY_DROPIN]
        systemd.daemon_reload(name="Reload systemd units (chrony drop-in)", _if=dropin.did_change)
        systemd.service(
            name="Restart chrony (unit or sources changed)",
            service=service,
            restarted=True,
            _if=any_changed(dropin, by_dest[CHRONY_SOURCES]),
        )
        systemd.service(name="Run chrony", service=service, running=True, enabled=True)
    elif _in_container():
        # systemd-timesyncd has ConditionVirtualization=!container: the host's clock is used.
        systemd.service(name="Enable systemd-timesyncd", service=service, enabled=True)
    else:
        systemd.service(
            name="Restart systemd-timesyncd (sources changed)",
            service=service,
            restarted=True,
            _if=by_dest[TIMESYNCD_DROPIN].did_change,
        )
        systemd.service(name="Run systemd-timesyncd", service=service, running=True, enabled=True)

    timer_state = cfg.unattended_upgrades
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        systemd.service(
            name=f"{'Enable' if timer_state else 'Disable'} {timer}",
            service=timer,
            running=timer_state,
            enabled=timer_state,
        )


def _in_container() -> bool:
    out = host.get_fact(Command, "systemd-detect-virt --container 2>/dev/null || true")
    return bool(out) and out.strip() != "none"


def _dests(ctx: DeployContext) -> list[str]:
    return [f.spec.dest for f in ctx.files("base")]


def apply(ctx: DeployContext, cfg: Config) -> None:
    install(ctx, cfg)
    activate(ctx, cfg, configure(ctx, cfg))
