"""Issue #20, upgrades: a pin changed where the inventory declares it, one line in git, rolled
host by host behind a health gate, resumable, pending in `plan`, and put back by `rollback`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from citadel import pinedit, upgrade
from citadel.errors import CitadelError
from citadel.loader import load_cluster
from citadel.releases import source_version

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "services" / "gateway"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The repository's inventories and group data, in a scratch directory."""
    shutil.copytree(ROOT / "inventory", tmp_path / "inventory")
    shutil.copytree(ROOT / "group_data", tmp_path / "group_data")
    return tmp_path


def _diff(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


def test_the_shipped_gateway_pin_is_this_checkouts_gateway() -> None:
    data = yaml.safe_load((ROOT / "group_data" / "gateway.yml").read_text())
    assert str(data["gateway"]["version"]) == source_version(GATEWAY)


def test_an_override_pin_is_edited_on_its_own_line(repo: Path) -> None:
    lab = repo / "inventory" / "lab.yml"
    before = lab.read_text()
    entry = upgrade.set_pin(lab, upgrade.PINS["vllm"], "0.33.0", rollback=False)
    assert _diff(before, lab.read_text()) == [
        (
            "      group_data.model.model.vllm.version: 0.32.0",
            "      group_data.model.model.vllm.version: 0.33.0",
        )
    ]
    assert (entry["from"], entry["to"], entry["state"]) == ("0.32.0", "0.33.0", "pinned")
    assert set(upgrade.versions(load_cluster(lab), upgrade.PINS["vllm"]).values()) == {"0.33.0"}
    assert upgrade.previous_pin(lab, "vllm") == "0.32.0"


def test_a_group_data_pin_is_edited_there_keeping_its_comments(repo: Path) -> None:
    prod = repo / "inventory" / "production.yml"
    group = repo / "group_data" / "model.yml"
    before = group.read_text()
    upgrade.set_pin(prod, upgrade.PINS["vllm"], "0.11.1", rollback=False)
    assert _diff(before, group.read_text()) == [("    version: 0.11.0", "    version: 0.11.1")]


def test_the_gateway_pin_needs_a_build_this_controller_has(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = repo / "inventory" / "lab.yml"
    before = (repo / "group_data" / "gateway.yml").read_text()
    monkeypatch.setattr(upgrade, "cached_release", lambda project, version: None)
    with pytest.raises(CitadelError, match=r"citadel-gateway 9\.9\.9: .* holds no 9\.9\.9"):
        upgrade.set_pin(lab, upgrade.PINS["gateway"], "9.9.9", rollback=False)
    assert (repo / "group_data" / "gateway.yml").read_text() == before  # nothing written
    assert not upgrade.history_path(lab).exists()


def test_a_pin_that_does_not_validate_is_put_back(repo: Path) -> None:
    lab = repo / "inventory" / "lab.yml"
    before = lab.read_text()
    with pytest.raises(CitadelError):
        upgrade.set_pin(lab, upgrade.PINS["vllm"], "not a version!", rollback=False)
    assert lab.read_text() == before


def test_the_same_pin_again_is_refused(repo: Path) -> None:
    with pytest.raises(CitadelError, match=r"pinned to 0\.32\.0 already"):
        upgrade.set_pin(
            repo / "inventory" / "lab.yml", upgrade.PINS["vllm"], "0.32.0", rollback=False
        )


def test_a_skipped_component_has_nothing_to_upgrade(repo: Path) -> None:
    with pytest.raises(CitadelError, match=r"no host of .* runs it"):
        upgrade.set_pin(
            repo / "inventory" / "lab.yml", upgrade.PINS["qdrant"], "1.18.3", rollback=False
        )


class Gateway:
    """/health's services as the roll sees them, host by host."""

    def __init__(self, broken_by: str | None = None) -> None:
        self.broken_by = broken_by
        self.converged: list[str] = []

    def converge(self, hosts: list[str]) -> bool:
        self.converged += hosts
        return True

    def fetch(self, url: str) -> dict[str, str]:
        return {"llama_chat": "healthy", "embeddings": "healthy"}

    def wait(self, url: str, services: set[str]) -> dict[str, str]:
        if self.broken_by in self.converged:
            return {"llama_chat": "unhealthy"}
        return {}


def test_the_roll_goes_host_by_host_and_resumes_after_a_failed_gate(repo: Path) -> None:
    lab = repo / "inventory" / "lab.yml"
    entry = upgrade.set_pin(lab, upgrade.PINS["vllm"], "0.33.0", rollback=False)
    assert [e["pin"] for e in upgrade.pending(lab)] == ["vllm"]  # `plan` shows it
    assert "upgrade pending: vllm 0.32.0 -> 0.33.0" in upgrade.describe(entry)
    gw = Gateway(broken_by="llm-chat")
    loaded = load_cluster(lab)
    with pytest.raises(CitadelError, match="stopped at llm-chat: the gateway no longer serves"):
        upgrade.roll(lab, loaded, entry, gw.converge, print, wait=gw.wait, fetch=gw.fetch)
    assert gw.converged == ["llm-chat"]  # llm-instruct still runs 0.32.0
    assert upgrade.pending(lab)[0]["state"] == "failed"

    gw = Gateway()
    resumed: dict[str, Any] = upgrade.pending(lab)[0]
    upgrade.roll(lab, loaded, resumed, gw.converge, print, wait=gw.wait, fetch=gw.fetch)
    assert gw.converged == ["llm-chat", "llm-instruct"]  # the failed one again, then the next
    assert upgrade.pending(lab) == []


def test_rollback_puts_the_previous_pin_back_byte_for_byte(repo: Path) -> None:
    lab = repo / "inventory" / "lab.yml"
    original = lab.read_text()
    upgrade.set_pin(lab, upgrade.PINS["vllm"], "0.33.0", rollback=False)
    back = upgrade.set_pin(
        lab, upgrade.PINS["vllm"], upgrade.previous_pin(lab, "vllm"), rollback=True
    )
    assert back["rollback"] is True and back["to"] == "0.32.0"
    assert lab.read_text() == original
    assert "rollback pending" in upgrade.describe(back)
    back["state"] = "rolled"
    upgrade._update(lab, back)
    assert upgrade.previous_pin(lab, "vllm") == "0.32.0"  # a second rollback stays back
    with pytest.raises(CitadelError, match="already"):
        upgrade.set_pin(lab, upgrade.PINS["vllm"], "0.32.0", rollback=True)


def test_rollback_without_history_names_the_way_out(repo: Path) -> None:
    with pytest.raises(CitadelError, match=r"citadel rollback gateway --to VERSION"):
        upgrade.previous_pin(repo / "inventory" / "lab.yml", "gateway")


def test_an_unknown_pin_is_named() -> None:
    with pytest.raises(CitadelError, match="not a pinned component"):
        upgrade.pin_for("postgres-minor")


@pytest.mark.parametrize(
    ("text", "path", "value", "line"),
    [
        ("a:\n  b: 1.1  # why\n", ("a", "b"), "1.10", '  b: "1.10"  # why'),
        ("a:\n  c: x\n", ("a", "b"), "2", '  b: "2"'),
        ("a:\n  b:\n    c: 1\n  c: 2\n", ("a", "c"), "3", '  c: "3"'),
    ],
)
def test_the_pin_editor_changes_one_scalar_only(
    text: str, path: tuple[str, ...], value: str, line: str
) -> None:
    out = pinedit.set_scalar(text, path, value)
    assert line in out.splitlines()
    node: Any = yaml.safe_load(out)
    for key in path:
        node = node[key]
    assert node == value


def test_the_pin_editor_refuses_what_is_not_a_plain_scalar() -> None:
    with pytest.raises(CitadelError, match="not a plain scalar"):
        pinedit.set_scalar("a:\n  b: [1, 2]\n", ("a", "b"), "3")
