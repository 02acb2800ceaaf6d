"""Lab configuration, host validation and paths (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.lab import lab_paths
from citadel.lab.config import LabConfig, LabError, LabHost, find_host, validate_hosts

CLUSTER = [
    LabHost("llm-chat", "10.210.10.28"),
    LabHost("llm-instruct", "10.210.10.29"),
    LabHost("vector-db", "10.210.10.30"),
    LabHost("llm-embed", "10.210.10.31"),
    LabHost("data", "10.210.10.35"),
    LabHost("monitoring", "10.210.10.37"),
    LabHost("webui", "10.210.10.38"),
    LabHost("gateway", "10.210.10.39"),
]


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CITADEL_LAB_DIR", raising=False)
    monkeypatch.delenv("CITADEL_CACHE_DIR", raising=False)
    p = lab_paths()
    assert p.state_dir == Path("/var/lib/citadel/lab")
    assert p.ssh_key == Path("/var/lib/citadel/lab/ssh/id_ed25519")
    assert p.known_hosts == Path("/var/lib/citadel/lab/known_hosts")
    assert p.secrets_dir == Path("/var/lib/citadel/lab/secrets")
    assert p.base_tree == Path("/var/cache/citadel/lab/base-trixie")
    monkeypatch.setenv("CITADEL_LAB_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("CITADEL_CACHE_DIR", str(tmp_path / "c"))
    p = lab_paths()
    assert p.state_dir == tmp_path / "s"
    assert p.base_tree == tmp_path / "c" / "lab" / "base-trixie"
    assert p.host_dir("data") == tmp_path / "s" / "hosts" / "data"


def test_cluster_is_valid() -> None:
    validate_hosts(LabConfig(), CLUSTER)


def test_many_bench_hosts_are_valid() -> None:
    bench = [LabHost(f"bench-{i:02d}", f"10.210.10.{100 + i}") for i in range(1, 25)]
    validate_hosts(LabConfig(), CLUSTER + bench)


@pytest.mark.parametrize(
    ("hosts", "needle"),
    [
        ([LabHost("a", "192.168.10.28")], "production"),
        ([LabHost("a", "10.210.11.5")], "not a host address"),
        ([LabHost("a", "10.210.10.1")], "gateway"),
        ([LabHost("a", "10.210.10.255")], "not a host address"),
        ([LabHost("a", "nope")], "invalid address"),
        ([LabHost("Bad_Name", "10.210.10.5")], "invalid lab host name"),
        ([LabHost("much-too-long-name", "10.210.10.5")], "at most 12"),
        ([LabHost("a", "10.210.10.5"), LabHost("a", "10.210.10.6")], "duplicate lab host name"),
        ([LabHost("a", "10.210.10.5"), LabHost("b", "10.210.10.5")], "duplicate lab address"),
    ],
)
def test_invalid_hosts(hosts: list[LabHost], needle: str) -> None:
    with pytest.raises(LabError, match=needle):
        validate_hosts(LabConfig(), hosts)


def test_production_network_refused() -> None:
    with pytest.raises(LabError, match="production"):
        LabConfig(gateway="192.168.10.1/24").validate()
    with pytest.raises(LabError, match="production"):
        LabConfig(gateway="192.168.0.1/16").validate()


@pytest.mark.parametrize(
    "kw",
    [
        {"bridge": "a-bridge-name-too-long"},
        {"nft_table": "bad-name"},
        {"gateway": "10.210.10.0/24"},
        {"gateway": "not-an-address"},
    ],
)
def test_invalid_config(kw: dict[str, str]) -> None:
    with pytest.raises(LabError):
        LabConfig(**kw).validate()  # type: ignore[arg-type]


def test_find_host_by_name_or_address() -> None:
    assert find_host(CLUSTER, "data").address == "10.210.10.35"
    assert find_host(CLUSTER, "10.210.10.39").name == "gateway"
    with pytest.raises(LabError, match="unknown lab host"):
        find_host(CLUSTER, "nope")


def test_owner_tag_names_the_state_dir() -> None:
    assert LabConfig(state_dir=Path("/x/y")).owner_tag == "citadel-lab /x/y"


def test_one_setting_each_moves_every_path_of_the_lab(monkeypatch, tmp_path) -> None:
    """CITADEL_LAB_DIR / CITADEL_CACHE_DIR relocate the lab's keys, secrets, JWT key and caches:
    a second, cold lab state can live beside the default one."""
    from citadel.loader import load_cluster

    lab, cache = tmp_path / "lab", tmp_path / "cache"
    monkeypatch.setenv("CITADEL_LAB_DIR", str(lab))
    monkeypatch.setenv("CITADEL_CACHE_DIR", str(cache))
    loaded = load_cluster("inventory/lab.yml")
    cluster = loaded.cluster
    gateway = cluster.with_role("gateway")[0].gateway
    assert gateway is not None
    paths = {
        "ssh.key_file": cluster.ssh.key_file,
        "ssh.known_hosts_file": cluster.ssh.known_hosts_file,
        "secrets_file": cluster.secrets_file,
        "gateway.auth.public_key_file": gateway.auth.public_key_file,
        "artifacts.cache_dir": cluster.artifacts.cache_dir,
    }
    for name, value in paths.items():
        assert str(value).startswith((str(lab), str(cache))), (name, value)
    assert str(cluster.artifacts.cache_dir).startswith(str(cache))
    assert lab_paths().state_dir == lab
    assert lab_paths().base_tree.is_relative_to(cache)


def test_each_suite_has_its_own_base_tree(tmp_path: Path) -> None:
    """Hosts of another distribution boot on their own suite's cached tree, side by side."""
    config = LabConfig(state_dir=tmp_path / "s", cache_dir=tmp_path / "c")
    paths = config.paths()
    assert paths.base_tree_for("bookworm") == tmp_path / "c" / "lab" / "base-bookworm"
    assert config.for_suite("bookworm").paths().base_tree == paths.base_tree_for("bookworm")
    assert LabHost("x", "10.210.10.5").suite == "trixie"
    for suite in ("bookworm", "trixie"):
        paths.base_tree_for(suite).mkdir(parents=True)
    assert paths.base_trees() == [paths.base_tree_for("bookworm"), paths.base_tree_for("trixie")]


def test_the_cli_puts_each_inventory_host_on_its_distributions_suite() -> None:
    from citadel.cli import lab_hosts
    from citadel.loader import load_cluster

    hosts = {h.name: h.suite for h in lab_hosts(load_cluster("inventory/lab.yml").cluster.hosts)}
    assert hosts["llm-chat"] == hosts["llm-instruct"] == "bookworm"
    assert {hosts[n] for n in ("data", "gateway", "monitoring", "llm-embed")} == {"trixie"}


def test_a_running_host_whose_distribution_changed_is_booted_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lab up` after an inventory moves a running host to another distribution restarts it on
    that suite's tree (it once kept the old system: the webui stayed on Debian 13)."""
    from citadel.lab import ops

    paths = LabConfig(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache").paths()
    hd = paths.host_dir("webui")
    hd.mkdir(parents=True)
    (hd / "host.json").write_text('{"name": "webui", "address": "10.210.10.38", "suite": "trixie"}')
    (hd / ".initialized").touch()
    monkeypatch.setattr(ops, "host_running", lambda paths, name: 4242)
    assert ops.needs_boot(paths, LabHost("webui", "10.210.10.38", suite="bookworm"))
    assert not ops.needs_boot(paths, LabHost("webui", "10.210.10.38", suite="trixie"))
    monkeypatch.setattr(ops, "host_running", lambda paths, name: None)
    assert ops.needs_boot(paths, LabHost("webui", "10.210.10.38", suite="trixie"))
