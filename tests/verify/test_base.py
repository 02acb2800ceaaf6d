"""base: sshd hardened (effective config), time sync, journald limits, sysctl, upgrades, users."""

from __future__ import annotations

import shlex

COMPONENT = "base"


def in_container(target) -> bool:
    return target.infra.run("systemd-detect-virt --container --quiet").rc == 0


def test_sshd_effective_config_is_keys_only(target):
    effective = target.infra.check_output("sshd -T")
    settings: dict[str, str] = {}
    for line in effective.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, value)
    cfg = target.host.base.sshd
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["pubkeyauthentication"] == "yes"
    assert settings["authenticationmethods"] == "publickey"
    assert settings["permitemptypasswords"] == "no"
    root = {"prohibit-password": "without-password", "no": "no"}[cfg.permit_root_login]
    assert settings["permitrootlogin"] == root
    assert settings["maxauthtries"] == str(cfg.max_auth_tries)
    assert settings["port"] == str(cfg.port)
    assert target.infra.service("ssh").is_running


def test_time_sync_service(target):
    cfg = target.host.base
    if cfg.time_sync == "chrony":
        assert target.infra.service("chrony").is_running
        assert target.infra.service("chrony").is_enabled
        cmdline = target.infra.check_output("ps -o args= -C chronyd")
        # In a container chronyd cannot set the clock: it runs with -x (tracks, never steps).
        assert ("-x" in cmdline.split()) == in_container(target)
        assert target.infra.run("chronyc -n tracking").rc == 0
        sources = target.infra.file("/etc/chrony/sources.d/citadel.sources").content_string
        for source in cfg.ntp_servers:
            assert source.removeprefix("pool ") in sources
    else:
        service = target.infra.service("systemd-timesyncd")
        assert service.is_enabled
        if not in_container(target):  # ConditionVirtualization=!container: the host's clock
            assert service.is_running


def test_journald_limits(target):
    config = target.infra.check_output("systemd-analyze cat-config systemd/journald.conf")
    assert f"SystemMaxUse={target.host.base.journald_max_use}" in config
    started = target.infra.check_output(
        "journalctl -b -u systemd-journald --no-pager -o cat | grep 'System Journal' | tail -1"
    )
    size = target.host.base.journald_max_use
    assert f"max {size}" in started or f"max {size[:-1]}.0{size[-1]}" in started


def test_sysctl_values(target):
    container = in_container(target)
    for key, value in target.host.base.sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        current = target.infra.check_output(f"cat {shlex.quote(path)}").split()
        if current == str(value).split():
            continue
        # Only a key the container makes read-only may differ (left as the machine has it).
        writable = target.infra.run(f"test -w {shlex.quote(path)}").rc == 0
        assert container and not writable, f"{key} = {current}, want {value}"


def test_timezone(target):
    zone = target.host.base.timezone
    resolved = target.infra.check_output("readlink -f /etc/localtime")
    assert resolved == target.infra.check_output(f"readlink -f /usr/share/zoneinfo/{zone}")


def test_admin_users_and_sudo(target):
    for user in target.host.base.admin_users:
        assert target.infra.user(user.name).exists
        if user.ssh_keys:
            keys = target.infra.file(f"/home/{user.name}/.ssh/authorized_keys").content_string
            assert sorted(k.strip() for k in keys.splitlines() if k.strip()) == sorted(
                user.ssh_keys
            )
    sudoers = target.infra.file("/etc/sudoers.d/citadel-admins")
    assert sudoers.mode == 0o440
    assert target.infra.run("visudo -c -q").rc == 0
    for name in target.host.base.sudo_users():
        assert f"{name} ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers.content_string


def test_unattended_security_upgrades_hold_nvidia(target):
    cfg = target.host.base
    if not cfg.unattended_upgrades:
        return
    assert target.infra.package("unattended-upgrades").is_installed
    assert target.infra.service("apt-daily-upgrade.timer").is_enabled
    periodic = target.infra.check_output("apt-config dump APT::Periodic::Unattended-Upgrade")
    assert '"1"' in periodic
    blacklist = target.infra.check_output("apt-config dump Unattended-Upgrade::Package-Blacklist")
    for pattern in cfg.held_package_patterns():
        assert f'"{pattern}"' in blacklist
