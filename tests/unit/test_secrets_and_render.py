"""Secrets come from the environment or an untracked file; previews never show them."""

from __future__ import annotations

from pathlib import Path

import pytest

from citadel.cli import main
from citadel.loader import load_cluster
from citadel.pyinfra_inventory import pyinfra_inventory
from citadel.render import render_host
from citadel.secrets import MASK, generate_secrets_file, load_secrets

HOSTS = [
    "llm-chat",
    "llm-instruct",
    "vector-db",
    "llm-embed",
    "data",
    "monitoring",
    "webui",
    "gateway",
]
# production with its Clerk instance filled in (operator-supplied: test_operator_values.py)
FILLED = "tests/unit/inventories/production_clerk_filled.yml"


@pytest.mark.parametrize("inventory", ["inventory/production.yml", "inventory/lab.yml"])
@pytest.mark.parametrize("host", HOSTS)
def test_render_writes_every_file_of_every_host(
    inventory: str, host: str, tmp_path: Path, capsys
) -> None:
    assert main(["render", host, "-i", inventory, "-o", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert written, "every host gets at least its node exporter config"
    assert all(Path(p).is_file() for p in written)


def test_render_accepts_an_address(tmp_path: Path) -> None:
    assert main(["render", "192.168.10.35", "-o", str(tmp_path)]) == 0


def test_render_unknown_host_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["render", "nope", "-o", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("citadel: no host 'nope' in the inventory")


def test_render_masks_secrets_even_when_they_are_set(tmp_path: Path, monkeypatch) -> None:
    value = "s3cr3t-value-never-shown"
    monkeypatch.setenv("CITADEL_SECRET_REDIS_PASSWORD", value)
    monkeypatch.setenv("CITADEL_SECRET_QDRANT_API_KEY", value)
    for host in HOSTS:
        assert main(["render", host, "-o", str(tmp_path / host)]) == 0
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert value not in f.read_text(errors="replace"), f


def test_secret_files_are_marked_and_masked_in_previews() -> None:
    cluster = load_cluster("inventory/production.yml").cluster
    for host in cluster.hosts:
        for f in render_host(cluster, host):
            if f.spec.secret:
                assert f.spec.mode in ("0600", "0640", "0400", "0440"), f.spec.dest
                assert MASK in f.content or "{{" not in f.content


def test_validate_needs_no_secrets_but_require_secrets_names_the_missing(capsys) -> None:
    assert main(["validate", "-i", FILLED]) == 0
    assert main(["validate", "-i", FILLED, "--require-secrets"]) == 2
    err = capsys.readouterr().err
    assert "secrets: redis_password: secret is missing (used by redis on data" in err
    assert "CITADEL_SECRET_REDIS_PASSWORD" in err


def test_secrets_from_environment_and_file(tmp_path: Path, monkeypatch, capsys) -> None:
    cluster = load_cluster("inventory/production.yml").cluster
    file = tmp_path / "secrets.yml"
    names = set()
    for h in cluster.hosts:
        names |= set(cluster.required_secrets(h))
    generate_secrets_file(file, names - {"redis_password"})
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    monkeypatch.setenv("CITADEL_SECRETS_FILE", str(file))
    monkeypatch.setenv("CITADEL_SECRET_REDIS_PASSWORD", "from-env")
    store, problems = load_secrets()
    assert not problems
    assert store["redis_password"] == "from-env"
    assert "from-env" not in repr(store)
    assert main(["validate", "-i", FILLED, "--require-secrets"]) == 0
    out, err = capsys.readouterr()
    assert "from-env" not in out + err


def test_generating_secrets_keeps_existing_values(tmp_path: Path) -> None:
    file = tmp_path / "s.yml"
    assert generate_secrets_file(file, ["a"]) == ["a"]
    first = file.read_text()
    assert generate_secrets_file(file, ["a", "b"]) == ["b"]
    assert first.splitlines()[1] in file.read_text()


def test_bad_secrets_file_is_a_problem(tmp_path: Path, monkeypatch, capsys) -> None:
    file = tmp_path / "secrets.yml"
    file.write_text("redis_password: [not, a, string]\n")
    monkeypatch.setenv("CITADEL_SECRETS_FILE", str(file))
    assert main(["validate", "-i", "inventory/production.yml"]) == 2
    assert capsys.readouterr().err.strip().endswith("redis_password: a secret must be a string")


def test_pyinfra_inventory_stops_before_connecting_when_secrets_are_missing(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        pyinfra_inventory("inventory/production.yml")
    assert exc.value.code == 2
    assert "nothing was changed on any host" in capsys.readouterr().err
