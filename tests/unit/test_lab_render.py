"""Pure tests of what the lab writes and runs (no root needed)."""

from __future__ import annotations

import shlex
from pathlib import Path

from citadel.lab import render
from citadel.lab.config import LabConfig, LabHost

CFG = LabConfig(state_dir=Path("/var/lib/citadel/lab"), cache_dir=Path("/var/cache/citadel"))
HOST = LabHost("llm-chat", "10.210.10.28")


def test_networkd_file_static_address_gateway_dns() -> None:
    text = render.networkd_file(CFG, HOST, ["10.255.255.53"])
    assert "[Match]\nName=host0\n" in text
    assert "Address=10.210.10.28/24\n" in text
    assert "Gateway=10.210.10.1\n" in text
    assert "DNS=10.255.255.53\n" in text
    assert "192.168.10." not in text


def test_networkd_file_sorts_before_image_default() -> None:
    name = Path(render.NETWORKD_FILE).name
    assert name.endswith(".network")
    assert name < "80-container-host0.network"
    assert render.NETWORKD_FILE.startswith("etc/systemd/network/")


def test_networkd_file_other_subnet() -> None:
    cfg = LabConfig(gateway="10.210.11.1/24")
    text = render.networkd_file(cfg, LabHost("t-a", "10.210.11.10"), ["1.1.1.1", "9.9.9.9"])
    assert "Address=10.210.11.10/24" in text
    assert "Gateway=10.210.11.1" in text
    assert text.count("DNS=") == 2


def test_nspawn_argv() -> None:
    root = Path("/s/hosts/llm-chat/root")
    argv = render.nspawn_argv(CFG, HOST, root)
    assert argv[:3] == ["systemd-nspawn", "-D", str(root)]
    for flag in (
        "--boot",
        "--register=no",
        "--keep-unit",
        "--machine=llm-chat",
        "--network-bridge=citadel-lab0",
    ):
        assert flag in argv


def test_nspawn_shell_command_detaches_and_prints_pid() -> None:
    argv = render.nspawn_argv(CFG, HOST, Path("/s/h/root"))
    cmd = render.nspawn_shell_command(argv, Path("/s/h/console log"))
    assert cmd.startswith("setsid systemd-nspawn ")
    assert "</dev/null" in cmd
    assert ">>'/s/h/console log' 2>&1 & echo $!" in cmd
    # the command line survives the shell intact
    words = shlex.split(cmd.split(" </dev/null")[0])
    assert words[1:] == argv


def test_debootstrap_argv() -> None:
    argv = render.debootstrap_argv(CFG, Path("/c/tmp"), Path("/c/debs"))
    assert argv[0] == "debootstrap"
    assert "--variant=minbase" in argv
    include = next(a for a in argv if a.startswith("--include="))
    pkgs = include.split("=", 1)[1].split(",")
    for p in ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo", "iproute2"):
        assert p in pkgs
    assert "--cache-dir=/c/debs" in argv
    assert argv[-3:] == ["trixie", "/c/tmp", "http://deb.debian.org/debian"]


def test_overlay_options() -> None:
    opts = render.overlay_options(Path("/b"), Path("/h/upper"), Path("/h/work"))
    assert opts == "lowerdir=/b,upperdir=/h/upper,workdir=/h/work"


def test_nft_ruleset_is_ours_and_replaces_atomically() -> None:
    text = render.nft_ruleset(CFG, "eth0")
    lines = text.splitlines()
    # create-if-missing, delete, recreate: one nft -f transaction, never "table not found"
    assert lines[0] == "table inet citadel_lab {}"
    assert lines[1] == "delete table inet citadel_lab"
    assert f'comment "{CFG.owner_tag}"' in text
    assert 'ip saddr 10.210.10.0/24 ip daddr != 10.210.10.0/24 oifname "eth0" masquerade' in text
    assert 'iifname "citadel-lab0" accept' in text
    assert "type nat hook postrouting" in text
    assert "type filter hook forward" in text


def test_parse_resolv_conf_skips_loopback_and_ipv6() -> None:
    text = "# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver fd00::1\n"
    text += "nameserver 10.255.255.53\nsearch example\n"
    assert render.parse_resolv_conf(text) == ["10.255.255.53"]


def test_resolv_conf_and_hosts() -> None:
    assert render.resolv_conf(["1.2.3.4"]).endswith("nameserver 1.2.3.4\n")
    hosts = [HOST, LabHost("gateway", "10.210.10.39")]
    text = render.etc_hosts(HOST, hosts)
    assert "127.0.1.1\tllm-chat" in text
    assert "10.210.10.39\tgateway" in text


def test_known_hosts_lines_keyed_by_address() -> None:
    text = render.known_hosts_lines([(HOST, "ssh-ed25519 AAAAC3Nz root@llm-chat\n")])
    assert text == "10.210.10.28 ssh-ed25519 AAAAC3Nz\n"


def test_sshd_dropin_key_only() -> None:
    text = render.sshd_dropin()
    assert "PasswordAuthentication no" in text
    assert "HostKey /etc/ssh/ssh_host_ed25519_key" in text


def test_ssh_argv_strict_and_command_forms() -> None:
    key, kh = Path("/s/ssh/id_ed25519"), Path("/s/known_hosts")
    argv = render.ssh_argv(key, kh, "10.210.10.28", ["true"], tty=False)
    assert argv[0] == "ssh"
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={kh}" in argv
    assert argv[argv.index("-i") + 1] == str(key)
    assert argv[-3:] == ["root@10.210.10.28", "--", "true"]
    # a single argument is a shell command line
    assert render.ssh_argv(key, kh, "a", ["echo $HOME"], tty=False)[-1] == "echo $HOME"
    # several arguments are an argv, quoted for the remote shell
    assert render.ssh_argv(key, kh, "a", ["echo", "a b"], tty=False)[-1] == "echo 'a b'"
    interactive = render.ssh_argv(key, kh, "a", [], tty=True)
    assert "-t" in interactive and interactive[-1] == "root@a"


def test_veth_name() -> None:
    assert render.veth_name("llm-instruct") == "vb-llm-instruct"
    assert len(render.veth_name("llm-instruct")) <= 15


def test_apt_sources_deb822() -> None:
    text = render.apt_sources(CFG)
    assert "Suites: trixie trixie-updates" in text
    assert "Suites: trixie-security" in text
