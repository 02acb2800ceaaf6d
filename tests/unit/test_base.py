"""Base: rendered files from the inventory, each checked by the tool that reads it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from citadel.components import base
from citadel.loader import load_cluster
from citadel.model.cluster import Cluster
from citadel.model.files import FileSpec
from citadel.render import HostView, RenderedFile, component_files
from citadel.secrets import MaskedSecrets

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly0000000000000000000000 ops@example"


@pytest.fixture(scope="module", params=["inventory/production.yml", "inventory/lab.yml"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return load_cluster(request.param).cluster


def rendered(
    cluster: Cluster, name: str = "data", cfg: base.Config | None = None
) -> dict[str, str]:
    host = cluster.host(name)
    view = HostView(cluster, host, MaskedSecrets())
    files = component_files("base", view, cfg or host.base)
    return {f.spec.dest: f.content for f in files}


def test_files_of_every_host(cluster: Cluster) -> None:
    for h in cluster.hosts:
        files = rendered(cluster, h.name)
        assert set(files) >= {
            base.SSHD_DROPIN,
            base.SSHD_CHECK,
            base.SUDOERS_FILE,
            base.JOURNALD_DROPIN,
            base.SYSCTL_FILE,
            base.AUTO_UPGRADES,
            base.UNATTENDED_FILE,
            base.CHRONY_DROPIN,
            base.CHRONY_SOURCES,
        }


def test_sshd_dropin_keys_only(cluster: Cluster) -> None:
    text = rendered(cluster)[base.SSHD_DROPIN]
    lines = {tuple(line.split(None, 1)) for line in text.splitlines() if not line.startswith("#")}
    assert ("PasswordAuthentication", "no") in lines
    assert ("KbdInteractiveAuthentication", "no") in lines
    assert ("AuthenticationMethods", "publickey") in lines
    assert ("PermitRootLogin", "prohibit-password") in lines
    assert ("MaxAuthTries", "3") in lines
    # sorted first in sshd_config.d: sshd keeps the first value it reads
    assert Path(base.SSHD_DROPIN).name.startswith("00-")


def test_sysctl_journald_time_and_upgrades(cluster: Cluster) -> None:
    files = rendered(cluster)
    assert "net.core.somaxconn = 4096\n" in files[base.SYSCTL_FILE]
    assert "vm.swappiness = 10\n" in files[base.SYSCTL_FILE]
    assert "SystemMaxUse=512M\n" in files[base.JOURNALD_DROPIN]
    assert "pool 2.debian.pool.ntp.org iburst\n" in files[base.CHRONY_SOURCES]
    dropin = files[base.CHRONY_DROPIN]
    assert "ConditionCapability=\n" in dropin and "chronyd $$DAEMON_OPTS -x" in dropin
    assert 'APT::Periodic::Unattended-Upgrade "1";' in files[base.AUTO_UPGRADES]
    blacklist = files[base.UNATTENDED_FILE]
    assert '"nvidia-.*$";' in blacklist and '"libnvidia-.*$";' in blacklist
    assert '"cuda-drivers.*$";' in blacklist
    assert "citadel ALL=(ALL:ALL) NOPASSWD: ALL" in files[base.SUDOERS_FILE]


def test_held_package_patterns_match_as_unattended_upgrades_does() -> None:
    cfg = base.Config(held_packages=["nvidia-*", "libnvidia-*", "cuda-drivers*", "libstdc++6"])
    patterns = cfg.held_package_patterns()

    # unattended-upgrades: re.match(pattern, package name)
    def held(name: str) -> bool:
        return any(re.match(p, name) for p in patterns)

    assert held("nvidia-driver-550") and held("libnvidia-compute-550") and held("cuda-drivers-550")
    assert held("libstdc++6")
    assert not held("nvidiafoo") and not held("openssh-server") and not held("libstdcxx6")
    assert all("\\" not in p for p in patterns)


def test_timesyncd_variant() -> None:
    prod = load_cluster("inventory/production.yml").cluster
    cfg = prod.host("data").base.model_copy(update={"time_sync": "timesyncd"})
    files = rendered(prod, cfg=cfg)
    assert base.CHRONY_DROPIN not in files
    assert "NTP=2.debian.pool.ntp.org\n" in files[base.TIMESYNCD_DROPIN]
    assert "systemd-timesyncd" in cfg.system_packages()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "../../etc/passwd"),
        ("sysctl", {"net.core.somaxconn\nkernel.x": 1}),
        ("held_packages", ["nvidia-*; rm -rf /"]),
        ("ntp_servers", ["pool a b"]),
        ("journald_max_use", "lots"),
    ],
)
def test_bad_values_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        base.Config.model_validate({field: value})


def test_admin_keys_are_public_keys_only() -> None:
    assert base.AdminUser(name="ops", ssh_keys=[KEY]).ssh_keys == [KEY]
    with pytest.raises(ValidationError, match="private key"):
        base.AdminUser(name="ops", ssh_keys=["-----BEGIN OPENSSH " + "PRIVATE KEY-----"])
    with pytest.raises(ValidationError, match="public key"):
        base.AdminUser(name="ops", ssh_keys=["hello"])


# -- the real tools ---------------------------------------------------------------------------
def write(tmp_path: Path, name: str, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def check_script(tmp_path: Path, cluster: Cluster) -> Path:
    return write(tmp_path, "check-sshd", rendered(cluster)[base.SSHD_CHECK], 0o755)


SSHD_SKIP = (
    "openssh-server is not installed here (apt-get install openssh-server)"
    if not Path("/usr/sbin/sshd").exists() or not Path("/etc/ssh/sshd_config").exists()
    else "sshd -t needs root (host keys, /run/sshd)"
    if os.geteuid() != 0
    else None
)


@pytest.mark.skipif(SSHD_SKIP is not None, reason=SSHD_SKIP or "")
def test_sshd_dropin_passes_sshd_t_in_context(cluster: Cluster, tmp_path: Path) -> None:
    candidate = write(tmp_path, "00-citadel.conf", rendered(cluster)[base.SSHD_DROPIN])
    proc = subprocess.run(
        [str(check_script(tmp_path, cluster)), str(candidate)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    # the effective config (candidate first) says what the drop-in says
    main = write(tmp_path, "main.conf", f"Include {candidate}\nInclude /etc/ssh/sshd_config\n")
    effective = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(main)], capture_output=True, text=True, check=True
    ).stdout
    assert "passwordauthentication no" in effective
    assert "kbdinteractiveauthentication no" in effective
    assert "permitrootlogin without-password" in effective  # sshd's name for prohibit-password


@pytest.mark.skipif(SSHD_SKIP is not None, reason=SSHD_SKIP or "")
def test_broken_sshd_dropin_is_refused_and_live_file_stays(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from pyinfra.api import Config, Inventory, State, deploy
    from pyinfra.api.connect import connect_all
    from pyinfra.api.deploy import add_deploy
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops

    from deploys._files import STAGING, put_file

    check = check_script(tmp_path, cluster)
    live = write(tmp_path, "live.conf", "# live drop-in\n")
    good = rendered(cluster)[base.SSHD_DROPIN]
    broken = good.replace("PasswordAuthentication no", "PasswordAuthentication maybe")
    spec = FileSpec(
        dest=str(live), template="base/sshd_citadel.conf.j2", validate=f"{check} {{path}}"
    )

    @deploy("test: sshd drop-in")
    def put(content: str) -> None:
        put_file(RenderedFile("base", spec, content))

    def run(content: str) -> None:
        state = State(Inventory((["@local"], {})), Config())
        connect_all(state)
        add_deploy(state, put, content)
        run_ops(state)

    staged = Path(STAGING) / str(live).lstrip("/").replace("/", "__")
    try:
        with pytest.raises(PyinfraError):
            run(broken)
        assert live.read_text() == "# live drop-in\n"
        assert not staged.exists()
        run(good)
        assert live.read_text() == good
    finally:
        staged.unlink(missing_ok=True)


@pytest.mark.skipif(shutil.which("visudo") is None, reason="sudo is not installed (visudo)")
def test_sudoers_passes_visudo(cluster: Cluster, tmp_path: Path) -> None:
    path = write(tmp_path, "citadel-admins", rendered(cluster)[base.SUDOERS_FILE], 0o440)
    proc = subprocess.run(["visudo", "-c", "-q", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    bad = write(tmp_path, "bad", "citadel ALL=(ALL NOPASSWD ALL\n", 0o440)
    assert subprocess.run(["visudo", "-c", "-q", "-f", str(bad)], capture_output=True).returncode


@pytest.mark.skipif(shutil.which("apt-config") is None, reason="apt-config is not installed")
def test_apt_snippets_parse_and_blacklist_is_read(cluster: Cluster, tmp_path: Path) -> None:
    files = rendered(cluster)
    path = write(tmp_path, "51citadel", files[base.UNATTENDED_FILE])
    out = subprocess.run(
        ["apt-config", "-c", str(path), "dump", "Unattended-Upgrade::Package-Blacklist"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'Unattended-Upgrade::Package-Blacklist:: "nvidia-.*$";' in out
    auto = write(tmp_path, "20auto", files[base.AUTO_UPGRADES])
    subprocess.run(["apt-config", "-c", str(auto), "dump"], capture_output=True, check=True)
