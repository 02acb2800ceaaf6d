"""Ownership/state detection logic with fakes (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.lab import base, cli, network, ops, system
from citadel.lab.config import LabConfig, LabError, LabHost

CFG = LabConfig(state_dir=Path("/var/lib/citadel/lab"))
TAG = CFG.owner_tag


def _bridge(alias: str | None, kind: str = "bridge") -> dict[str, object]:
    link: dict[str, object] = {"ifname": "citadel-lab0", "linkinfo": {"info_kind": kind}}
    if alias is not None:
        link["ifalias"] = alias
    return link


def test_classify_bridge() -> None:
    assert network.classify_bridge(None, TAG) is network.Owner.ABSENT
    assert network.classify_bridge(_bridge(TAG), TAG) is network.Owner.OURS
    assert network.classify_bridge(_bridge(None), TAG) is network.Owner.FOREIGN
    assert network.classify_bridge(_bridge("citadel-lab /other"), TAG) is network.Owner.FOREIGN
    assert network.classify_bridge(_bridge(TAG, kind="veth"), TAG) is network.Owner.FOREIGN


def _addr(ifname: str, local: str, prefix: int) -> dict[str, object]:
    return {
        "ifname": ifname,
        "addr_info": [{"family": "inet", "local": local, "prefixlen": prefix}],
    }


def test_address_conflicts() -> None:
    addrs = [
        _addr("lo", "127.0.0.1", 8),
        _addr("eth0", "192.0.2.2", 24),
        _addr("citadel-lab0", "10.210.10.1", 24),  # our own bridge: fine
    ]
    assert network.address_conflicts(addrs, CFG) == []
    assert network.address_conflicts([_addr("dummy0", "10.210.10.1", 32)], CFG) == [
        "10.210.10.1/32 on dummy0"
    ]
    # an overlapping wider network on another interface is a conflict too
    assert network.address_conflicts([_addr("x0", "10.210.0.1", 16)], CFG)
    # a neighbouring subnet (the e2e test lab) is not
    assert network.address_conflicts([_addr("citadel-test0", "10.210.11.1", 24)], CFG) == []


def test_classify_table() -> None:
    ours = f'table inet citadel_lab {{\n\tcomment "{TAG}"\n\tchain postrouting {{\n'
    assert network.classify_table(None, TAG) is network.Owner.ABSENT
    assert network.classify_table(ours, TAG) is network.Owner.OURS
    other = 'table inet citadel_lab {\n\tcomment "someone else"\n}\n'
    assert network.classify_table(other, TAG) is network.Owner.FOREIGN
    bare = "table inet citadel_lab {\n\tchain x {\n\t}\n}\n"
    assert network.classify_table(bare, TAG) is network.Owner.FOREIGN


MOUNTINFO = (
    "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "301 22 0:41 / /var/lib/citadel/lab/hosts/data/root rw,relatime shared:150 - overlay overlay "
    "rw,lowerdir=/var/cache/citadel/lab/base-trixie,upperdir=/var/lib/citadel/lab/hosts/data/upper,"
    "workdir=/var/lib/citadel/lab/hosts/data/work\n"
    "302 22 0:42 / /tmp/with\\040space rw - tmpfs tmpfs rw\n"
)


def test_parse_mountinfo() -> None:
    mounts = system.parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/",
        "/var/lib/citadel/lab/hosts/data/root",
        "/tmp/with space",
    ]
    ov = mounts[1]
    assert ov.fstype == "overlay"
    assert system.overlay_option(ov.super_options, "upperdir") == (
        "/var/lib/citadel/lab/hosts/data/upper"
    )
    assert system.overlay_option(ov.super_options, "nope") is None


def test_mounts_under_and_tree_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "mounts", lambda pid="self": system.parse_mountinfo(MOUNTINFO))
    assert system.mounts_under(Path("/var/lib/citadel/lab/hosts")) == [
        "/var/lib/citadel/lab/hosts/data/root"
    ]
    assert system.mounts_under(Path("/var/lib/citadel/lab/host")) == []
    assert system.tree_in_use(Path("/var/cache/citadel/lab/base-trixie"))
    assert not system.tree_in_use(Path("/var/cache/citadel/lab/base-bookworm"))


def test_parse_nspid() -> None:
    assert system.parse_nspid("Name:\tsystemd\nNSpid:\t4242\t1\n") == [4242, 1]
    assert system.parse_nspid("Name:\tbash\n") == []


def test_base_marker(tmp_path: Path) -> None:
    cfg = LabConfig(cache_dir=tmp_path)
    tree = tmp_path / "lab" / "base-trixie"
    assert not base.is_complete(tree, cfg)
    tree.mkdir(parents=True)
    assert not base.is_complete(tree, cfg)  # a tree without the marker never counts
    (tree / base.MARKER).write_text(base.marker_text(cfg))
    assert base.is_complete(tree, cfg)
    (tree / base.MARKER).write_text("version=0\n")
    assert not base.is_complete(tree, cfg)


def test_check_free_refuses_foreign_bridge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "link", lambda name: _bridge(None))
    with pytest.raises(LabError, match="not created by this lab"):
        network.check_free(CFG)


def test_check_free_refuses_address_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "link", lambda name: None)
    monkeypatch.setattr(system, "ip_json", lambda *a: [_addr("dummy0", "10.210.10.1", 24)])
    with pytest.raises(
        LabError,
        match=r"already used on this machine: 10\.210\.10\.1/24 on dummy0",
    ):
        network.check_free(CFG)


def test_check_free_refuses_foreign_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "link", lambda name: None)
    monkeypatch.setattr(system, "ip_json", lambda *a: [])
    monkeypatch.setattr(
        system,
        "run",
        lambda argv, **kw: system.Result(0, "table inet citadel_lab {\n}\n", ""),
    )
    with pytest.raises(LabError, match="nftables table inet citadel_lab exists"):
        network.check_free(CFG)


def test_remove_stale_veth_of_another_lab_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "link", lambda name: {"ifname": name, "master": "citadel-test0"})
    with pytest.raises(LabError, match="host names must be unique"):
        network.remove_stale_veth(CFG, "data")


def test_main_not_root_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ops.os, "geteuid", lambda: 1000)
    for argv in (["up"], ["status"], ["down"], ["ssh", "a", "--", "true"], ["stop", "a"]):
        assert cli.main(argv, [LabHost("a", "10.210.10.5")], CFG) == 1
        err = capsys.readouterr().err
        assert err.startswith("citadel lab: must run as root")
        assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bogus"], "unknown command 'bogus'"),
        (["ssh"], "ssh needs a HOST"),
        (["stop"], "stop needs exactly one HOST"),
        (["up", "extra"], "unexpected arguments"),
    ],
)
def test_main_usage_errors(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv, [], CFG) == 1
    assert needle in capsys.readouterr().err


def test_main_ssh_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []

    def fake_ssh(hosts: list[LabHost], host: str, cmd: list[str], config: object) -> int:
        seen.append((host, cmd))
        return 7

    monkeypatch.setattr(ops, "ssh", fake_ssh)
    assert cli.main(["ssh", "data", "--", "false", "x"], [], CFG) == 7
    assert cli.main(["ssh", "10.210.10.35"], [], CFG) == 7
    assert seen == [("data", ["false", "x"]), ("10.210.10.35", [])]


def test_console_tail(tmp_path: Path) -> None:
    (tmp_path / "console.log").write_text("a\n\nb\nFailed to start X\n")
    assert ops.console_tail(tmp_path, 2) == "b | Failed to start X"
    assert ops.console_tail(tmp_path / "nope") == "(no console log)"
