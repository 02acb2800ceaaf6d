"""Pure renderers: file contents and command lines the lab uses. No side effects."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path

from citadel.lab.config import LabConfig, LabHost

BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "sudo",
    "iproute2",
    "ca-certificates",
    "curl",
    "gnupg",
    "procps",
    "iputils-ping",
    "netcat-openbsd",
    "less",
    "apt-utils",
    "kmod",
)

# Units that cannot work (or only make noise) inside an nspawn container.
MASKED_UNITS = (
    "systemd-tmpfiles-setup-dev-early.service",
    "console-getty.service",
)

ENABLED_UNITS = ("systemd-networkd.service", "ssh.service")

NETWORKD_FILE = "etc/systemd/network/10-lab.network"  # must sort before 80-container-host0


def debootstrap_argv(config: LabConfig, target: Path, debs_cache: Path | None) -> list[str]:
    argv = ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES)]
    if debs_cache is not None:
        argv.append(f"--cache-dir={debs_cache}")
    argv += [config.suite, str(target), config.mirror]
    return argv


def overlay_options(lower: Path, upper: Path, work: Path) -> str:
    return f"lowerdir={lower},upperdir={upper},workdir={work}"


def nspawn_argv(config: LabConfig, host: LabHost, root: Path) -> list[str]:
    return [
        "systemd-nspawn",
        "-D",
        str(root),
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={host.name}",
        f"--hostname={host.name}",
        f"--network-bridge={config.bridge}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ]


def nspawn_shell_command(argv: list[str], console_log: Path) -> str:
    """The detached start: `setsid nspawn ... </dev/null &>console.log & echo $!`.

    In a non-interactive sh the background job stays in sh's process group, so setsid does not
    fork: $! is the nspawn PID itself, and nspawn is reparented away from us once sh exits.
    """
    return f"setsid {shlex.join(argv)} </dev/null >>{shlex.quote(str(console_log))} 2>&1 & echo $!"


def veth_name(host_name: str) -> str:
    return f"vb-{host_name}"


def networkd_file(config: LabConfig, host: LabHost, dns: list[str]) -> str:
    prefix = config.network.prefixlen
    lines = [
        "# Written by citadel lab. Sorts before the image's 80-container-host0.network.",
        "[Match]",
        "Name=host0",
        "",
        "[Link]",
        "RequiredForOnline=routable",
        "",
        "[Network]",
        f"Address={host.address}/{prefix}",
        f"Gateway={config.gateway_ip}",
        "LinkLocalAddressing=no",
        "IPv6AcceptRA=no",
    ]
    lines += [f"DNS={d}" for d in dns]
    return "\n".join(lines) + "\n"


def resolv_conf(dns: list[str]) -> str:
    return "# Written by citadel lab (the machine's resolver)\n" + "".join(
        f"nameserver {d}\n" for d in dns
    )


def etc_hosts(host: LabHost, hosts: list[LabHost]) -> str:
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{host.name}"]
    lines += ["::1\t\tlocalhost ip6-localhost ip6-loopback", "ff02::1\t\tip6-allnodes"]
    lines += ["ff02::2\t\tip6-allrouters", "", "# citadel lab hosts"]
    lines += [f"{h.address}\t{h.name}" for h in hosts]
    return "\n".join(lines) + "\n"


def sshd_dropin() -> str:
    return (
        "# Written by citadel lab\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
    )


def apt_sources(config: LabConfig) -> str:
    return (
        "Types: deb\n"
        f"URIs: {config.mirror}\n"
        f"Suites: {config.suite} {config.suite}-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://deb.debian.org/debian-security\n"
        f"Suites: {config.suite}-security\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def known_hosts_lines(entries: list[tuple[LabHost, str]]) -> str:
    """entries: (host, 'ssh-ed25519 AAAA...') -> known_hosts text keyed by lab address."""
    out = []
    for host, pub in entries:
        parts = pub.split()
        out.append(f"{host.address} {parts[0]} {parts[1]}")
    return "".join(line + "\n" for line in out)


def nft_ruleset(config: LabConfig, out_iface: str) -> str:
    """Our own table: masquerade the lab subnet out of the default interface, forward accepts."""
    t = config.nft_table
    net = config.network
    br = config.bridge
    return (
        f"table inet {t} {{}}\n"
        f"delete table inet {t}\n"
        f"table inet {t} {{\n"
        f'\tcomment "{config.owner_tag}"\n'
        "\tchain postrouting {\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        f'\t\tip saddr {net} ip daddr != {net} oifname "{out_iface}" masquerade\n'
        "\t}\n"
        "\tchain forward {\n"
        "\t\ttype filter hook forward priority filter; policy accept;\n"
        f'\t\tiifname "{br}" accept\n'
        f'\t\toifname "{br}" ct state established,related accept\n'
        "\t}\n"
        "}\n"
    )


def parse_resolv_conf(text: str) -> list[str]:
    """IPv4 nameservers usable from inside the lab (loopback resolvers are not)."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                ip = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if ip.version == 4 and not ip.is_loopback and str(ip) not in out:
                out.append(str(ip))
    return out


def ssh_argv(key: Path, known_hosts: Path, address: str, cmd: list[str], tty: bool) -> list[str]:
    argv = [
        "ssh",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
    ]
    if tty:
        argv.append("-t")
    argv.append(f"root@{address}")
    if cmd:
        # One argument is a shell command line; several are an argv, quoted for the remote shell.
        argv += ["--", cmd[0] if len(cmd) == 1 else shlex.join(cmd)]
    return argv
