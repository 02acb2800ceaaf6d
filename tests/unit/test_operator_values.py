"""The Clerk instance is operator-supplied: the shipped production inventory carries a sentinel
that `citadel validate` (and plan/apply/verify, and pyinfra's inventory) refuse with one line
naming file, key and what to put there; filled in, production validates; the lab is untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.cli import main
from citadel.components.gateway import Auth
from citadel.errors import InventoryError
from citadel.loader import load_cluster

FILLED = "tests/unit/inventories/production_clerk_filled.yml"


def test_production_validate_refuses_the_unfilled_clerk_instance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "-i", "inventory/production.yml"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    jwks, issuers = lines
    assert jwks.startswith("group_data/gateway.yml: gateway.auth.jwks_url: operator-supplied")
    assert "REPLACE-ME" in jwks and "/.well-known/jwks.json" in jwks
    assert issuers.startswith("group_data/gateway.yml: gateway.auth.issuers: operator-supplied")
    assert "Frontend API URL" in issuers


def test_converging_loads_refuse_it_too() -> None:
    with pytest.raises(InventoryError) as exc:
        load_cluster("inventory/production.yml", require_filled=True)
    assert {p.path for p in exc.value.problems} == {"gateway.auth.jwks_url", "gateway.auth.issuers"}


def test_previews_and_tests_still_load_it_with_the_sentinel_visible() -> None:
    loaded = load_cluster("inventory/production.yml")
    auth = loaded.cluster.host("gateway").gateway.auth  # type: ignore[union-attr]
    assert auth.jwks_url == "https://REPLACE-ME.invalid/.well-known/jwks.json"
    assert [p.path for p in loaded.unfilled] == ["gateway.auth.jwks_url", "gateway.auth.issuers"]


def test_filled_in_by_an_extending_inventory_production_validates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "-i", FILLED]) == 0
    auth = load_cluster(FILLED, require_filled=True).cluster.host("gateway").gateway.auth  # type: ignore[union-attr]
    assert auth.issuers == ["https://clerk.example.com"]


def test_the_lab_has_nothing_to_fill_in() -> None:
    assert load_cluster("inventory/lab.yml", require_filled=True).unfilled == []


def test_a_sentinel_on_a_host_is_named_at_the_inventory(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text(
        Path("tests/unit/inventories/good.yml")
        .read_text()
        .replace(
            "group_data_dir: group_data",
            f"group_data_dir: {Path.cwd()}/tests/unit/inventories/group_data",
        )
        .replace(
            "roles: [gateway]}",
            "roles: [gateway], gateway: {auth: {issuers: [https://REPLACE-ME.invalid]}}}",
        )
    )
    with pytest.raises(InventoryError) as exc:
        load_cluster(inv, require_filled=True)
    [problem] = exc.value.problems
    assert problem.path == "hosts[0].gateway.auth.issuers" and "Frontend API URL" in problem.message


def test_the_model_has_no_default_clerk_instance() -> None:
    assert Auth.model_fields["jwks_url"].is_required()
    assert Auth.model_fields["issuers"].is_required()
